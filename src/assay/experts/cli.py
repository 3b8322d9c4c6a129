"""The expert network's commands. They live under ``assay knowledge`` (:func:`register` puts them there), as they
always have:

    assay knowledge expert set ana --domain medicine=5 --capacity 4
    assay knowledge reputation medicine
    assay knowledge route-patch PATCH_ID --record
    assay knowledge rewards pay med-2026w47 --project med-pairs --until 2026-11-23 --scale 0.1
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Optional

import typer

from assay.knowledge.cli import DB_OPTION, _echo_json, _fail, _run, _time, _version

expert_app = typer.Typer(help="Expert profiles: declared domains with a level 1..5, capacity, availability.",
                         no_args_is_help=True)
task_app = typer.Typer(help="Work routed to experts: list and close open tasks.", no_args_is_help=True)
rewards_app = typer.Typer(help="Peer-prediction pay for annotation work, and the append-only ledger.",
                          no_args_is_help=True)

JSON_OPTION = typer.Option(False, "--json", help="Print JSON (for scripts) instead of a table.")


def _database(db: str | None):  # noqa: ANN202
    """The annotation database, upgraded to the current schema (the network tables are revision 0004)."""
    from assay.platform.db import Database

    d = Database(db)
    d.migrate()
    return d


def _table(title: str, columns: list[str], rows: list[list[Any]], empty: str = "") -> None:
    """A Rich table on standard output; cells of None print as '-'. No rows: the ``empty`` line instead. Piped into
    a file or another program the table is as wide as it needs to be (Rich would otherwise squeeze it into 80
    columns and cut names and numbers short)."""
    from rich.console import Console
    from rich.table import Table

    if not rows and empty:
        typer.echo(empty)
        return
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*("-" if cell is None else str(cell) for cell in row))
    console = Console()
    if not console.is_terminal:
        needed = Console(width=10_000).measure(table).maximum
        console = Console(width=max(console.width, needed))
    console.print(table)


def _num(x: float | None, digits: int = 3) -> str | None:
    return None if x is None else f"{x:.{digits}f}"


def _levels(values: list[str]) -> dict[str, int]:
    """``--domain medicine=5`` (repeatable) → {"medicine": 5}."""
    out: dict[str, int] = {}
    for value in values:
        name, sep, level = value.partition("=")
        if not sep or not name.strip() or not level.strip().lstrip("-").isdigit():
            raise typer.BadParameter(f"{value!r}: expected DOMAIN=LEVEL with a level 1..5, e.g. medicine=5",
                                     param_hint="--domain")
        out[name.strip()] = int(level)
    return out


def _user_ids(database, usernames: list[str]) -> dict[str, int]:  # noqa: ANN001
    """username → id for every name given (deactivated users included: their history stays readable); an unknown
    name is a user mistake, reported with exit code 2."""
    from sqlalchemy import select

    from assay.platform.models import User

    with database.read() as s:
        found = dict(s.execute(select(User.username, User.id).where(User.username.in_(usernames))).all())
    missing = [u for u in usernames if u not in found]
    if missing:
        _fail(f"no user {missing[0]!r} (create one with `assay annotate create-user`)")
    return found


def _usernames(database) -> dict[int, str]:  # noqa: ANN001
    from sqlalchemy import select

    from assay.platform.models import User

    with database.read() as s:
        return dict(s.execute(select(User.id, User.username)).all())


def _known_domain(database, domain: str) -> str:  # noqa: ANN001
    """The normalised domain, when anything in the database names it: an expert's declaration, a knowledge role or
    quorum, an annotation project's ``config["domains"]`` or a patch. Otherwise it is most likely a typo, and a
    command that would silently answer "nobody" fails with exit code 2 instead."""
    from sqlalchemy import select

    from assay.annotate.models import Project
    from assay.knowledge.models import KnowledgeDomain, KnowledgeRole, PatchVersion
    from assay.experts.models import ExpertDomain
    from assay.knowledge.review import check_domain

    d = _run(lambda: check_domain(domain))
    with database.read() as s:
        if (s.scalar(select(ExpertDomain.domain).where(ExpertDomain.domain == d).limit(1)) is not None
                or s.scalar(select(KnowledgeRole.domain).where(KnowledgeRole.domain == d).limit(1)) is not None
                or s.get(KnowledgeDomain, d) is not None):
            return d
        for config in s.scalars(select(Project.config)):
            tagged = config.get("domains") if isinstance(config, dict) else None
            if isinstance(tagged, list) and d in {str(t).strip().lower() for t in tagged}:
                return d
        for doc in s.scalars(select(PatchVersion.document)):
            if d in (doc.get("domains") or []):
                return d
    _fail(f"unknown domain {d!r}: no expert declares it and no project, patch or role names it")
    return d


def _unix_time(value: str | None, name: str) -> float | None:
    """Unix seconds, or an ISO 8601 time (without a zone: UTC)."""
    from datetime import timezone

    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    t = _time(value, name)
    assert t is not None
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()


def _print_expert(e: dict[str, Any]) -> None:
    domains = ", ".join(f"{d}={lvl}" for d, lvl in e["domains"].items()) or "-"
    typer.echo(f"{e['username']}: {domains}; capacity {e['capacity']}; "
               f"{'available' if e['available'] else 'unavailable'}")


@expert_app.command("set")
def expert_set(user: str,
               domain: list[str] = typer.Option([], "--domain", "-d", help="DOMAIN=LEVEL, level 1 (informed "
                                                                           "amateur) .. 5 (leading specialist); "
                                                                           "repeat."),
               capacity: Optional[int] = typer.Option(None, help="Routed tasks open at once (new profiles: 5)."),
               available: Optional[bool] = typer.Option(None, "--available/--unavailable",
                                                        help="Whether routing may send work now."),
               note: Optional[str] = typer.Option(None, help="Free text kept with the profile."),
               replace_domains: bool = typer.Option(False, help="Replace the declared domains instead of merging."),
               as_json: bool = JSON_OPTION,
               db: Optional[str] = DB_OPTION) -> None:
    """Create or update a user's expert profile (domains are merged unless --replace-domains)."""
    from assay.experts.reputation import set_expert

    levels = _levels(domain)
    database = _database(db)
    e = _run(lambda: set_expert(database, user, domains=levels, capacity=capacity, available=available, note=note,
                                replace_domains=replace_domains))
    if as_json:
        _echo_json(e)
    else:
        _print_expert(e)


@expert_app.command("list")
def expert_list(domain: Optional[str] = typer.Option(None, help="Only experts declaring this domain."),
                as_json: bool = JSON_OPTION,
                db: Optional[str] = DB_OPTION) -> None:
    """Expert profiles with their declared levels and last computed reputation."""
    from assay.experts.reputation import list_experts
    from assay.experts.routing import open_tasks

    database = _database(db)
    d = _known_domain(database, domain) if domain is not None else None
    experts = _run(lambda: list_experts(database, d))
    for e in experts:
        e["open_tasks"] = len(open_tasks(database, e["username"]))
    if as_json:
        _echo_json(experts)
        return
    _table(f"experts{f' in {d}' if d else ''}", ["user", "domains (level)", "reputation", "open / capacity",
                                                  "available"],
           [[e["username"], ", ".join(f"{k}={v}" for k, v in e["domains"].items()),
             ", ".join(f"{k}={_num(v) or '-'}" for k, v in e["reputation"].items()),
             f"{e['open_tasks']} / {e['capacity']}", "yes" if e["available"] else "no"] for e in experts],
           empty="no expert profiles" + (f" in {d}" if d else ""))


def reputation(domain: str,
               project: list[str] = typer.Option([], "--project", "-p", help="Annotation project (name or id) "
                                                                            "holding evidence; repeat. Default: "
                                                                            "the projects whose config lists the "
                                                                            "domain."),
               store: bool = typer.Option(True, "--store/--no-store", help="Save the result for routing."),
               as_json: bool = JSON_OPTION,
               db: Optional[str] = DB_OPTION) -> None:
    """Compute (and store) every expert's reputation in a domain from gold items, peer agreement and reviews."""
    from assay.experts.reputation import compute_reputation

    database = _database(db)
    d = _known_domain(database, domain) if not project else domain
    rows = _run(lambda: compute_reputation(database, d, projects=project or None, store=store))
    if as_json:
        _echo_json(rows)
        return
    _table(f"reputation in {rows[0]['domain'] if rows else d}" + ("" if store else " (not stored)"),
           ["user", "score", "confidence", "gold n", "gold skill", "peer n", "peer skill", "review n",
            "review skill"],
           [[r["username"], _num(r["score"]), _num(r["confidence"]), f"{r['gold_n']:g}", _num(r["gold_skill"]),
             r["peer_n"], _num(r["peer_skill"]), r["review_n"], _num(r["review_skill"])] for r in rows],
           empty=f"nobody has evidence in {d} yet")


def _print_route(decision: dict[str, Any], recorded: bool) -> None:
    chosen = decision["chosen"]
    _table(f"route {decision['task']} ({', '.join(decision['domains'])})",
           ["", "user", "score", "match", "reputation", "load", "recent", "open / capacity"],
           [["*" if c["username"] in chosen else "", c["username"], _num(c["score"]), _num(c["match"]),
             _num(c["reputation"]), _num(c["load"]), _num(c["recent"]), f"{c['open']} / {c['capacity']}"]
            for c in decision["candidates"]])
    if decision["excluded"]:
        typer.echo("excluded: " + ", ".join(f"{e['username']} ({e['reason']})" for e in decision["excluded"]))
    if chosen:
        typer.echo(f"chosen: {', '.join(chosen)}" + (" (recorded as open tasks)" if recorded else ""))
    else:
        typer.echo("no eligible expert")


def _route_and_print(database, work: dict[str, Any], k: int, record: bool, exclude: list[str],  # noqa: ANN001
                     as_json: bool) -> None:
    from assay.experts.routing import route

    if exclude:
        _user_ids(database, exclude)
    decision = _run(lambda: route(database, work, k, record=record, exclude=exclude))
    if as_json:
        _echo_json({**decision, "recorded": record})
    else:
        _print_route(decision, record)


def route_work(task: str = typer.Option(..., help="Name of the work, e.g. patch:ID@1 or item:42."),
               domain: list[str] = typer.Option(..., "--domain", "-d", help="Domain of the work (repeat)."),
               author: list[str] = typer.Option([], "--author", "-a", help="An author (never chosen; repeat)."),
               exclude: list[str] = typer.Option([], "--exclude", help="Another user not to choose (repeat)."),
               k: int = typer.Option(2, "-k", help="How many experts to choose."),
               record: bool = typer.Option(False, "--record", help="Write the choice as open tasks (their load)."),
               as_json: bool = JSON_OPTION,
               db: Optional[str] = DB_OPTION) -> None:
    """Pick the best available experts for a piece of work, with every candidate's score components."""
    database = _database(db)
    domains = [_known_domain(database, d) for d in domain]
    if author:
        _user_ids(database, author)
    _route_and_print(database, {"task": task, "domains": domains, "authors": author}, k, record, exclude, as_json)


def route_patch(patch_id: str,
                version: Optional[int] = typer.Argument(None, help="Version (default: the newest)."),
                k: int = typer.Option(2, "-k", help="How many reviewers to choose."),
                exclude: list[str] = typer.Option([], "--exclude", help="A user not to choose (repeat)."),
                record: bool = typer.Option(False, "--record", help="Write the choice as open tasks."),
                as_json: bool = JSON_OPTION,
                db: Optional[str] = DB_OPTION) -> None:
    """Pick reviewers for a patch version: its domains, its authors excluded (task name patch:ID@VERSION)."""
    from assay.experts.routing import patch_work
    from assay.knowledge.store import KnowledgeStore

    database = _database(db)
    v = _version(KnowledgeStore(database), patch_id, version)
    work = _run(lambda: patch_work(database, patch_id, v))
    _route_and_print(database, work, k, record, exclude, as_json)


@task_app.command("list")
def task_list(user: str, as_json: bool = JSON_OPTION, db: Optional[str] = DB_OPTION) -> None:
    """A user's open routed tasks, oldest first."""
    from assay.experts.routing import open_tasks

    database = _database(db)
    _user_ids(database, [user])
    tasks = open_tasks(database, user)
    if as_json:
        _echo_json(tasks)
        return
    _table(f"open tasks of {user}", ["task", "domains", "score", "routed at"],
           [[t["task"], ", ".join(t["domains"]), _num(t["score"]),
             datetime.fromtimestamp(t["routed_at"]).isoformat(timespec="seconds")] for t in tasks],
           empty=f"{user} has no open tasks")


@task_app.command("done")
def task_done(task: str, user: str,
              declined: bool = typer.Option(False, "--declined", help="The expert declined it (not done)."),
              db: Optional[str] = DB_OPTION) -> None:
    """Close a user's open routed task: it stops counting toward their load."""
    from assay.experts.models import TASK_DECLINED, TASK_DONE
    from assay.experts.routing import close_task

    database = _database(db)
    _user_ids(database, [user])
    status = TASK_DECLINED if declined else TASK_DONE
    _run(lambda: close_task(database, task, user, status))
    typer.echo(f"{task} ({user}): {status}")


def _pay_errors(fn: Callable[[], Any]) -> Any:
    """Run a payment step; user mistakes (unknown project, a batch id paid with other inputs, a project without
    categorical answers, bad parameters) become one line and exit code 2."""
    try:
        return _run(fn)
    except ValueError as e:  # BatchConflict is a ValueError too
        _fail(str(e))


@rewards_app.command("pay")
def rewards_pay(batch_id: str,
                project: str = typer.Option(..., "--project", "-p", help="Annotation project (name or id) whose "
                                                                         "answers are paid."),
                since: Optional[str] = typer.Option(None, help="Only answers submitted at or after this time (ISO "
                                                               "8601 or Unix seconds)."),
                until: Optional[str] = typer.Option(None, help="Only answers submitted before this time. Give it "
                                                               "to make a batch repeatable."),
                rule: str = typer.Option("ca", help="ca (correlated agreement) or pts (peer truth serum)."),
                scale: float = typer.Option(1.0, help="Pay per unit of score."),
                base: float = typer.Option(0.0, help="Fixed pay per scored report."),
                seed: int = typer.Option(0, help="Seed of the peer and task draws."),
                small_batch: str = typer.Option("warn", help="When annotators have fewer scored reports than the "
                                                             "rule needs (100 each): warn (pay, mark the entries "
                                                             "below_guarantee) or refuse."),
                as_json: bool = JSON_OPTION,
                db: Optional[str] = DB_OPTION) -> None:
    """Pay a project's annotations by a peer-prediction rule into the ledger. A batch id pays once: repeating it
    with the same inputs changes nothing, with other inputs it is refused."""
    from assay.experts.rewards import RULES, annotation_reports, pay_batch

    if rule not in RULES:
        raise typer.BadParameter(f"{rule!r}: choose from {', '.join(RULES)}", param_hint="--rule")
    t0, t1 = _unix_time(since, "--since"), _unix_time(until, "--until")
    database = _database(db)
    groups = _pay_errors(lambda: annotation_reports(database, project, since=t0, until=t1))
    if not any(groups.values()):
        # an empty batch would still use up the batch id, and paying it later with the right window would conflict
        _fail(f"project {project!r} has no answers to pay" + (" in that time window" if since or until else ""))
    summary = _pay_errors(lambda: pay_batch(database, batch_id, groups, rule=rule, seed=seed, scale=scale,
                                            base=base, small_batch=small_batch))
    names = _usernames(database)
    summary["per_username"] = {names.get(int(uid), uid): amount for uid, amount in summary["per_user"].items()}
    if as_json:
        _echo_json(summary)
        return
    if summary.get("small_batch"):  # (in --json output it is the summary's small_batch field)
        typer.echo(f"warning: {summary['small_batch']['note']}; the entries say below_guarantee", err=True)
    state = "already paid: nothing written" if summary["already_paid"] else "paid"
    typer.echo(f"batch {summary['batch_id']} ({summary['rule']}): {state}; {summary['n_entries']} entries from "
               f"{summary['n_reports']} reports, total {summary['total']:g}")
    if summary["skipped"]:
        typer.echo("skipped: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["skipped"].items())))
    _table(f"batch {summary['batch_id']}", ["user", "amount"],
           [[u, f"{a:g}"] for u, a in sorted(summary["per_username"].items())])


@rewards_app.command("balance")
def rewards_balance(user: Optional[str] = typer.Argument(None, help="One user (default: everybody paid)."),
                    as_json: bool = JSON_OPTION,
                    db: Optional[str] = DB_OPTION) -> None:
    """Ledger totals per user, over all batches."""
    from assay.experts.rewards import balances

    database = _database(db)
    uid = _user_ids(database, [user])[user] if user else None
    totals = balances(database, uid)
    names = _usernames(database)
    rows = {names.get(u, str(u)): v for u, v in totals.items()}
    if user and user not in rows:
        rows[user] = 0.0
    if as_json:
        _echo_json(rows)
        return
    _table("balances", ["user", "balance"], [[u, f"{v:g}"] for u, v in sorted(rows.items())],
           empty="nobody has been paid yet")


@rewards_app.command("ledger")
def rewards_ledger(batch: Optional[str] = typer.Option(None, "--batch", "-b", help="Only this batch."),
                   user: Optional[str] = typer.Option(None, "--user", "-u", help="Only this user."),
                   as_json: bool = JSON_OPTION,
                   db: Optional[str] = DB_OPTION) -> None:
    """Ledger entries, oldest first (append-only: corrections are new entries)."""
    from assay.experts.models import RewardBatch
    from assay.experts.rewards import ledger_entries

    database = _database(db)
    uid = _user_ids(database, [user])[user] if user else None
    if batch is not None:
        with database.read() as s:
            if s.get(RewardBatch, batch) is None:
                _fail(f"no reward batch {batch!r}")
    entries = ledger_entries(database, batch_id=batch, user_id=uid)
    names = _usernames(database)
    for e in entries:
        e["username"] = names.get(e["user_id"], str(e["user_id"]))
    if as_json:
        _echo_json(entries)
        return
    _table("ledger", ["id", "batch", "user", "task", "amount", "rule", "score"],
           [[e["id"], e["batch_id"], e["username"], e["task"], f"{e['amount']:g}", e["rule"],
             e["details"].get("score")] for e in entries], empty="no ledger entries")



def register(knowledge_app: typer.Typer) -> None:
    """Add the expert network's commands to the ``assay knowledge`` app."""
    knowledge_app.add_typer(expert_app, name="expert")
    knowledge_app.add_typer(task_app, name="task")
    knowledge_app.add_typer(rewards_app, name="rewards")
    knowledge_app.command("reputation")(reputation)
    knowledge_app.command("route")(route_work)
    knowledge_app.command("route-patch")(route_patch)
