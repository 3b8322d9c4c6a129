"""Project guidelines are written in Markdown: rendered with markdown-it-py (CommonMark plus tables and
strikethrough, raw HTML off) and then sanitised with nh3 (an allow-list of tags and attributes, links get
``rel="noopener noreferrer"``), so nothing a guidelines author types can run in an annotator's browser."""

from __future__ import annotations

import functools

from markupsafe import Markup

ALLOWED_TAGS = {"a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "li", "ol",
                "p", "pre", "s", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul"}
# no style attributes: the app's CSP (style-src 'self') would refuse them anyway
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}


@functools.lru_cache(maxsize=1)
def _renderer():  # noqa: ANN202
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False, "linkify": False}).enable(["table", "strikethrough"])


@functools.lru_cache(maxsize=256)
def render_markdown(text: str) -> Markup:
    """Safe HTML for Markdown ``text`` (cached: a project's guidelines are shown on every page of its queue)."""
    import nh3

    html = _renderer().render(text or "")
    return Markup(nh3.clean(html, tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES,
                            url_schemes={"http", "https", "mailto"}))
