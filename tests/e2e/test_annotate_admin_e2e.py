"""The annotation app's admin and reviewer pages in headless Chromium (issue 15 §4, issue 14 §3): Markdown guidelines
are rendered and nothing in them runs; the review page pages through 60 annotations and filters by status and
annotator; an admin deactivates a logged-in annotator, whose open browser session ends at once."""

from __future__ import annotations


import pytest
from annotate_support import annotate_server, cheap_password_hashing

from e2e.test_annotate_e2e import CHROMIUM, CHROMIUM_ARGS
from assay.platform.users import create_user

PW = "e2e-password"
GUIDELINES = """# Rules

**Be kind.** Prefer the answer that is *correct*.

- one
- two

| score | meaning |
|---|---|
| 1 | bad |

<script>window.__pwned = 1</script>

<img src="x" onerror="window.__pwned = 2">

[harmless](https://example.org/guide) and [evil](javascript:window.__pwned=3)
"""

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from assay.annotate import workflow
    from sqlalchemy import select

    from assay.platform.db import Database
    from assay.platform.models import User
    from assay.core.record import Record

    cheap_password_hashing()
    db_path = tmp_path_factory.mktemp("admin-e2e") / "e2e.db"
    db = Database(str(db_path))
    db.migrate()
    with db.write() as s:
        for name, role in (("lead", "admin"), ("ann", "annotator"), ("bob", "annotator"), ("rita", "reviewer"),
                           ("leaver", "annotator")):
            create_user(s, name, PW, role)
        guide = workflow.create_project(s, "guide", "preference", guidelines=GUIDELINES)
        rev = workflow.create_project(s, "rev", "preference", review=True)
        for user in ("ann", "bob", "leaver"):
            workflow.add_member(s, guide, user)
            workflow.add_member(s, rev, user)
        workflow.add_member(s, rev, "rita", "reviewer")
        workflow.add_items(s, rev, [Record(f"r{i}", {"prompt": f"q{i}", "chosen": "yes", "rejected": "no"},
                                           "preference") for i in range(60)])
        ids = {"guide": guide.id, "rev": rev.id}
    for user, n in (("ann", 35), ("bob", 25)):  # 60 annotations wait for review
        with db.read() as s:
            uid = s.scalar(select(User.id).where(User.username == user))
            rev = workflow.find_project(s, "rev")
        for _ in range(n):
            with db.write() as s:
                claim = workflow.next_assignment(s, rev, uid)
                workflow.submit(s, rev, uid, claim.id, {"choice": "a"})
    db.dispose()
    with annotate_server(db_path) as base:
        yield base, ids


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def _logged_in(browser, base: str, username: str):  # noqa: ANN001, ANN202
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(base + "/login")
    page.fill("#username", username)
    page.fill("#password", PW)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")
    return context, page


def test_guidelines_are_rendered_markdown_and_their_html_never_runs(server, browser):
    base, ids = server
    context, page = _logged_in(browser, base, "ann")
    try:
        page.goto(f"{base}/projects/{ids['guide']}")
        g = page.locator(".guidelines")
        assert g.locator("h1").inner_text() == "Rules"
        assert g.locator("strong").inner_text() == "Be kind." and g.locator("em").inner_text() == "correct"
        assert g.locator("li").count() == 2 and g.locator("table td").first.inner_text() == "1"
        assert g.locator("a[href='https://example.org/guide']").get_attribute("rel") == "noopener noreferrer"
        # the raw HTML is shown as text, never as elements; the javascript: link is not a link
        assert g.locator("script").count() == 0 and page.locator("[onerror]").count() == 0
        assert g.locator("img").count() == 0 and page.locator("a[href^='javascript']").count() == 0
        assert "<script>" in g.inner_text()
        assert page.evaluate("window.__pwned") is None
    finally:
        context.close()


def test_review_page_pages_and_filters_by_status_and_annotator(server, browser):
    base, ids = server
    context, page = _logged_in(browser, base, "rita")
    try:
        page.goto(f"{base}/projects/{ids['rev']}/review")
        assert page.locator("section.review").count() == 50
        assert page.locator(".page-info").first.inner_text().startswith("page 1 of 2 · 60 annotations")
        page.locator("a.next").first.click()
        page.wait_for_url("**page=2**")
        assert page.locator("section.review").count() == 10
        # filter: bob's pending annotations only
        page.select_option("#filter-annotator", "bob")
        page.click("#apply-filters")
        page.wait_for_url("**annotator=bob**")
        names = page.locator("section.review .annotator").all_inner_texts()
        assert len(names) == 25 and set(names) == {"bob"}
        # accepting one keeps the reviewer on the filtered page; it then shows under "accepted"
        first = page.locator("section.review").first
        first_id = first.get_attribute("id")
        first.locator("button[value=accepted]").click()
        page.wait_for_url("**annotator=bob**")
        assert page.locator("section.review").count() == 24 and page.locator(f"#{first_id}").count() == 0
        page.select_option("#filter-status", "accepted")
        page.click("#apply-filters")
        page.wait_for_url("**status=accepted**")
        assert page.locator("section.review").count() == 1 and page.locator(f"#{first_id}").count() == 1
    finally:
        context.close()


def test_admin_deactivates_a_logged_in_annotator_whose_session_ends_at_once(server, browser):
    base, _ids = server
    leaver_ctx, leaver = _logged_in(browser, base, "leaver")
    admin_ctx, admin = _logged_in(browser, base, "lead")
    try:
        admin.goto(base + "/admin")
        assert admin.inner_text("#user-leaver .status") == "active"
        admin.click("#user-leaver button.deactivate")
        admin.wait_for_url("**/admin?ok=deactivate")
        assert admin.inner_text("#user-leaver .status") == "deactivated"
        leaver.goto(base + "/")
        assert "/login" in leaver.url  # the open session is gone
        leaver.fill("#username", "leaver")
        leaver.fill("#password", PW)
        leaver.click("button[type=submit]")
        leaver.wait_for_selector("p.error")
        assert "Wrong username or password" in leaver.inner_text("p.error")
        admin.click("#user-leaver button.reactivate")
        admin.wait_for_url("**/admin?ok=reactivate")
        assert admin.inner_text("#user-leaver .status") == "active"
    finally:
        leaver_ctx.close()
        admin_ctx.close()
