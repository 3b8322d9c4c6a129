"""``assay knowledge …``: keys, domain roles, proposing, reviewing, publishing and retracting patches, offline
verification, history and the change feed, ``serve``; and the expert network: profiles, reputation, routing and
peer-prediction rewards.

    assay knowledge keygen --purpose root                      # $ASSAY_HOME/keys/root.key (default ~/.assay)
    assay knowledge keygen --user rita --purpose reviewer      # $ASSAY_HOME/keys/rita.key, registered
    assay knowledge trust init --root-key root.key             # certify the registered keys, seal the log
    assay knowledge grant rita medicine reviewer
    PID=$(assay knowledge propose --author alice --title "…" --content @fact.md --domain medicine --source https://…)
    assay knowledge review $PID --reviewer rita --key rita.key --verdict accept --comment "…"
    assay knowledge publish $PID --publisher paul --key paul.key
    assay knowledge show $PID -o patch.json
    assay knowledge trust export -o trust.json
    assay knowledge verify patch.json --root root.key.pub --trust trust.json
    assay knowledge serve --transport http --root root.key.pub
    assay knowledge expert set ana --domain medicine=5 --capacity 4
    assay knowledge reputation medicine
    assay knowledge route-patch PATCH_ID --record
    assay knowledge rewards pay med-2026w47 --project med-pairs --until 2026-11-23 --scale 0.1

Users are the annotation server's (``assay annotate create-user``); ``--db`` is its database (SQLite file, default
``$ASSAY_ANNOTATE_DB`` or ``assay-annotate.db``, or ``postgresql://…``), upgraded to the current schema on first use.
The shell is trusted like the annotate CLI: ``--reviewer``/``--publisher`` name the acting user, and the private
key, which must be registered to that user for that purpose, is what proves the act.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional

import typer

app = typer.Typer(help="Signed, versioned knowledge patches: keys, roles, review, publication, verification, "
                       "serving.", no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)

DB_OPTION = typer.Option(None, "--db", help="SQLite file or postgresql://… URL (default: $ASSAY_ANNOTATE_DB or "
                                            "assay-annotate.db).")
PASSPHRASE_OPTION = typer.Option(None, "--passphrase-env", help="Environment variable holding the private key's "
                                                                "passphrase.")


def _fail(msg: str, code: int = 2) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _run(fn: Callable[[], Any]) -> Any:
    from assay.knowledge.keys import KeyFileError
    from assay.platform.errors import RequestError

    try:
        return fn()
    except (RequestError, KeyFileError, FileNotFoundError, FileExistsError) as e:
        _fail(str(e))


def _store(db: str | None):  # noqa: ANN202
    from assay.platform.db import Database
    from assay.knowledge.store import KnowledgeStore

    d = Database(db)
    d.migrate()  # a no-op when the schema is current
    return KnowledgeStore(d)


def _passphrase(env: str | None) -> bytes | None:
    if not env:
        return None
    value = os.environ.get(env)
    if value is None:
        _fail(f"environment variable {env} is not set")
    return value.encode("utf-8")


def _load_key(path: Path, passphrase_env: str | None):  # noqa: ANN202
    from assay.knowledge import keys

    return _run(lambda: keys.load_private(keys.resolve_key_path(path), passphrase=_passphrase(passphrase_env)))


def _echo_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=1, ensure_ascii=False))


def _text(value: str) -> str:
    """``@FILE`` reads the file; ``-`` reads standard input; anything else is the text itself."""
    if value == "-":
        return sys.stdin.read()
    if value.startswith("@"):
        return Path(value[1:]).expanduser().read_text(encoding="utf-8")
    return value


def _time(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        _fail(f"{name}: not an ISO 8601 time: {value!r}")
        return None


def _version(store, patch_id: str, version: int | None, *, accepted: bool = False) -> int:  # noqa: ANN001
    if version is not None:
        return version
    if accepted:
        p = store.get(patch_id)
        if p is None:
            _fail(f"no patch {patch_id}")
        return p.version
    versions = _run(lambda: store.history(patch_id))["versions"]
    return versions[-1]["version"]


# -- keys and roles ------------------------------------------------------------------------------------------------
@app.command()
def keygen(out: Optional[Path] = typer.Option(None, "--out", "-o", help="Private key file to write (PEM, mode "
                                                                      "0600); the public key goes to OUT.pub. "
                                                                      "Default: $ASSAY_HOME/keys/USER.key (root.key "
                                                                      "for a root key); a bare file name goes "
                                                                      "there too."),
           user: Optional[str] = typer.Option(None, help="Register the public key to this user."),
           purpose: str = typer.Option("reviewer", help="reviewer (signs reviews), publisher (signs patches) or "
                                                        "root (certifies keys; never registered)."),
           passphrase_env: Optional[str] = PASSPHRASE_OPTION,
           overwrite: bool = typer.Option(False, help="Replace existing key files."),
           db: Optional[str] = DB_OPTION) -> None:
    """Generate an Ed25519 key pair, save it, and (with --user) register the public key."""
    from assay.knowledge import keys

    if purpose not in keys.ALL_PURPOSES:
        _fail(f"purpose must be one of {', '.join(keys.ALL_PURPOSES)}")
    if purpose == "root" and user:
        _fail("a root key belongs to the deployment, not to a user: leave out --user")
    if out is None:
        if not user and purpose != "root":
            _fail("give --out FILE (or --user, to write $ASSAY_HOME/keys/USER.key)")
        out = keys.key_dir() / f"{user or 'root'}.key"
    elif out.parent == Path("."):
        out = keys.key_dir() / out
    key = keys.generate()
    store = _store(db) if user else None
    priv, pub = _run(lambda: keys.save(key, out, passphrase=_passphrase(passphrase_env), overwrite=overwrite))
    if store is not None:
        try:
            _run(lambda: store.register_key(user, keys.raw_public(key), purpose))
        except typer.Exit:
            priv.unlink(missing_ok=True)  # an unregistered key would only confuse later
            pub.unlink(missing_ok=True)
            raise
    typer.echo(f"key {keys.key_id(key)} ({purpose}) -> {priv} (private, 0600), {pub} (public)"
               + (f"; registered to {user}" if user else ""))


@app.command("register-key")
def register_key(user: str, public_key: Path = typer.Argument(..., help="Public key file (PEM, hex or base64)."),
                 purpose: str = typer.Option("reviewer", help="reviewer or publisher."),
                 db: Optional[str] = DB_OPTION) -> None:
    """Register an existing public key to a user."""
    from assay.knowledge import keys

    raw = _run(lambda: keys.load_public(keys.resolve_key_path(public_key)))
    kid = _run(lambda: _store(db).register_key(user, raw, purpose))
    typer.echo(f"key {kid} ({purpose}) registered to {user}")


@app.command("keys")
def list_keys(db: Optional[str] = DB_OPTION) -> None:
    """List registered keys."""
    _echo_json(_store(db).list_keys())


@app.command()
def grant(user: str, domain: str, role: str = typer.Argument(..., help="reviewer, publisher or admin."),
          revoke: bool = typer.Option(False, "--revoke", help="Take the role away instead."),
          db: Optional[str] = DB_OPTION) -> None:
    """Give a user a role in a domain (`*` = every domain)."""
    store = _store(db)
    if revoke:
        removed = _run(lambda: store.revoke(user, domain, role))
        typer.echo(f"{user} is no longer {role} of {domain}" if removed else f"{user} was not {role} of {domain}")
        return
    _run(lambda: store.grant(user, domain, role))
    typer.echo(f"{user} is {role} of {domain}")


@app.command()
def roles(user: Optional[str] = typer.Argument(None), db: Optional[str] = DB_OPTION) -> None:
    """List domain roles (of one user, or everybody's)."""
    _echo_json(_store(db).roles(user))


@app.command("set-quorum")
def set_quorum(domain: str, quorum: int = typer.Argument(..., help="Accepting reviews a patch needs."),
               db: Optional[str] = DB_OPTION) -> None:
    """Set how many accepting reviews patches of a domain need (default 2)."""
    _run(lambda: _store(db).set_quorum(domain, quorum))
    typer.echo(f"{domain}: {quorum} accepting review(s)")


# -- the patch lifecycle -------------------------------------------------------------------------------------------
@app.command()
def propose(author: str = typer.Option(..., help="The proposing user (an author)."),
            title: str = typer.Option(..., help="Short title."),
            content: str = typer.Option(..., help="The statement: text, @FILE, or - for standard input."),
            domain: list[str] = typer.Option(..., "--domain", "-d", help="Domain tag (repeat for several)."),
            source: list[str] = typer.Option([], "--source", "-s", help="Evidence: a URL, or an Assay record id "
                                                                       "(repeat)."),
            coauthor: list[str] = typer.Option([], "--coauthor", help="Another author (a user; repeat)."),
            valid_from: Optional[str] = typer.Option(None, help="ISO time the statement becomes true."),
            valid_to: Optional[str] = typer.Option(None, help="ISO time it stops being true."),
            supersedes: Optional[str] = typer.Option(None, help="Propose a new version of this patch id."),
            db: Optional[str] = DB_OPTION) -> None:
    """Propose a patch (or a new version of one). Prints the patch id alone on standard output (so that
    `PID=$(assay knowledge propose …)` works); the details go to standard error."""
    sources = [{"url": s} if "://" in s else {"record_id": s} for s in source]
    store = _store(db)
    p = _run(lambda: store.propose(author, title=title, content=_text(content), domains=domain, sources=sources,
                                   coauthors=coauthor, valid_from=_time(valid_from, "--valid-from"),
                                   valid_to=_time(valid_to, "--valid-to"), supersedes=supersedes))
    typer.echo(f"{p.patch_id} version {p.version} proposed (content hash {p.content_hash[:16]}…)", err=True)
    typer.echo(p.patch_id)


@app.command()
def review(patch_id: str,
           reviewer: str = typer.Option(..., help="The reviewing user."),
           key: Path = typer.Option(..., help="The reviewer's private key (a registered reviewer key)."),
           verdict: str = typer.Option(..., help="accept or reject."),
           comment: str = typer.Option("", help="Why (text, @FILE or -)."),
           version: Optional[int] = typer.Option(None, help="Version (default: the newest)."),
           adjudicate: bool = typer.Option(False, help="Rule on a conflict as a domain admin."),
           passphrase_env: Optional[str] = PASSPHRASE_OPTION,
           db: Optional[str] = DB_OPTION) -> None:
    """Sign and submit a review (or an adjudication)."""
    store = _store(db)
    v = _version(store, patch_id, version)
    private = _load_key(key, passphrase_env)
    p = _run(lambda: store.review(patch_id, v, reviewer, verdict, private, _text(comment) if comment else "",
                                  adjudicate=adjudicate))
    typer.echo(f"{p.patch_id}@{p.version}: {p.status}")


@app.command()
def publish(patch_id: str,
            publisher: str = typer.Option(..., help="The publishing user (a publisher of the domain)."),
            key: Path = typer.Option(..., help="The publisher's private key (a registered publisher key)."),
            version: Optional[int] = typer.Option(None, help="Version (default: the newest)."),
            passphrase_env: Optional[str] = PASSPHRASE_OPTION,
            db: Optional[str] = DB_OPTION) -> None:
    """Sign an approved patch with the publisher key: it becomes accepted."""
    store = _store(db)
    v = _version(store, patch_id, version)
    private = _load_key(key, passphrase_env)
    p = _run(lambda: store.publish(patch_id, v, publisher, private))
    typer.echo(f"{p.patch_id}@{p.version}: {p.status}, signed by key {p.key_id}")


@app.command()
def retract(patch_id: str, by: str = typer.Option(..., help="A publisher or admin of the domain."),
            reason: str = typer.Option(..., help="Why it is withdrawn."),
            key: Path = typer.Option(..., help="Their registered publisher key: it signs the retraction."),
            version: Optional[int] = typer.Option(None, help="Version (default: the accepted one)."),
            passphrase_env: Optional[str] = PASSPHRASE_OPTION,
            db: Optional[str] = DB_OPTION) -> None:
    """Withdraw an accepted patch version (a signed event in the log)."""
    store = _store(db)
    v = _version(store, patch_id, version, accepted=True)
    private = _load_key(key, passphrase_env)
    p = _run(lambda: store.retract(patch_id, v, by, reason, private))
    typer.echo(f"{p.patch_id}@{p.version}: {p.status}")


# -- reading -------------------------------------------------------------------------------------------------------
@app.command()
def show(patch_id: str, version: Optional[int] = typer.Option(None, help="Version (default: the accepted one, "
                                                                         "else the newest)."),
         output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the JSON here."),
         db: Optional[str] = DB_OPTION) -> None:
    """Print a patch as JSON (signed when published): what `verify` checks."""
    p = _store(db).get(patch_id, version)
    if p is None:
        _fail(f"no patch {patch_id}" + (f" version {version}" if version else ""))
    text = json.dumps(p.model_dump(mode="json"), indent=1, ensure_ascii=False)
    if output:
        output.write_text(text + "\n", encoding="utf-8")
        typer.echo(f"{p.ref()} ({p.status}) -> {output}")
    else:
        typer.echo(text)


def _pinned(paths: list[Path]) -> dict[str, bytes]:
    """Public keys from files (bare names are looked up in $ASSAY_HOME/keys too), by key id."""
    from assay.knowledge import keys

    out = {}
    for path in paths:
        raw = _run(lambda: keys.load_public(keys.resolve_key_path(path)))
        out[keys.key_id(raw)] = raw
    return out


def _trust_file(path: Optional[Path]) -> dict[str, list]:
    if path is None:
        return {"certificates": [], "revocations": [], "checkpoints": []}
    try:
        docs = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        _fail(f"{path}: cannot read the trust bundle ({e})")
    if not isinstance(docs, dict):
        _fail(f"{path}: not a trust bundle (written by `assay knowledge trust export`)")
    return {k: list(docs.get(k) or []) for k in ("certificates", "revocations", "checkpoints")}


ROOT_OPTION = typer.Option([], "--root", help="A pinned root public key file (repeat): keys count only when a "
                                             "certificate signed by one of these binds them to a user.")


@app.command()
def verify(patch_file: Path = typer.Argument(..., help="Patch JSON (from `show` or the API)."),
           root: list[Path] = ROOT_OPTION,
           trust: Optional[Path] = typer.Option(None, "--trust", help="Certificates and revocations (from `trust "
                                                                      "export`), checked against --root."),
           key: list[Path] = typer.Option([], "--key", "-k", help="A pinned public key file (repeat), bound to no "
                                                                  "user. Without --publisher-key these are trusted "
                                                                  "for both roles."),
           publisher_key: list[Path] = typer.Option([], "--publisher-key", help="Only these may have signed the "
                                                                                "patch (repeat).")) -> None:
    """Verify a patch offline: content hash, publisher signature, reviews (one per key, a quorum of distinct keys).
    Exit 0 when valid, 1 when not. Whether it is still current (not retracted) is in the event log: see
    `verify-log`, or ask a server."""
    from assay.knowledge.patch import verify as verify_patch
    from assay.knowledge.trust import TrustedKey, TrustRing

    if not (root or key or publisher_key):
        _fail("pin the trusted keys: --root ROOT.pub (with --trust from `trust export`), or --key / "
              "--publisher-key")
    try:
        data = patch_file.read_bytes()
    except OSError as e:
        _fail(str(e))
        return
    docs = _trust_file(trust)
    ring = _run(lambda: TrustRing.from_roots(_pinned(root), docs["certificates"], docs["revocations"]))
    pinned = TrustRing.pinned(_pinned(key), _pinned(publisher_key) if publisher_key else None)
    for kid, k in pinned.keys.items():
        ring.keys.setdefault(kid, TrustedKey(k.raw, None, set())).purposes.update(k.purposes)
    result = verify_patch(data, trust=ring).as_dict()
    if ring.problems:
        result["trust_problems"] = ring.problems
    _echo_json(result)
    raise typer.Exit(0 if result["valid"] else 1)


@app.command("verify-log")
def verify_log(root: list[Path] = ROOT_OPTION,
               key: list[Path] = typer.Option([], "--key", "-k", help="A pinned public key file (repeat), trusted "
                                                                      "for both roles, bound to no user."),
               db: Optional[str] = DB_OPTION) -> None:
    """Verify the whole event log against pinned keys: the hash chain, every signature, every status step.
    Prints the head (seq and hash: keep it to notice a log cut short later) and exits 1 when it does not verify."""
    from assay.knowledge.eventlog import verify_events
    from assay.knowledge.trust import TrustedKey, TrustRing

    if not (root or key):
        _fail("pin the trusted keys with --root (or --key)")
    store = _store(db)
    docs = store.trust_documents()
    ring = _run(lambda: TrustRing.from_roots(_pinned(root), docs["certificates"], docs["revocations"]))
    for kid, raw in _pinned(key).items():
        ring.keys.setdefault(kid, TrustedKey(raw, None, {"reviewer", "publisher"}))
    state = verify_events(store.log_entries(), ring, docs["checkpoints"])
    counts: dict[str, int] = {}
    for st in state.statuses.values():
        counts[st] = counts.get(st, 0) + 1
    _echo_json({"valid": state.intact, "seq": state.seq, "head": state.head, "statuses": counts,
                "errors": state.errors, "trust_problems": ring.problems})
    raise typer.Exit(0 if state.intact else 1)


@app.command()
def history(patch_id: str, db: Optional[str] = DB_OPTION) -> None:
    """Every version and event of a patch, as JSON."""
    _echo_json(_run(lambda: _store(db).history(patch_id)))


@app.command()
def changes(since: int = typer.Option(0, help="Cursor: the last seq you have."),
            limit: int = typer.Option(100, help="At most this many events."),
            db: Optional[str] = DB_OPTION) -> None:
    """The change feed after a cursor, as JSON (pass the returned cursor back to continue)."""
    _echo_json(_store(db).changes(since, limit))


@app.command()
def serve(db: Optional[str] = DB_OPTION,
          host: str = typer.Option("127.0.0.1", help="Address to listen on."),
          port: int = typer.Option(8090, help="Port."),
          transport: str = typer.Option("http", help="http (REST /v1 + MCP /mcp), rest, mcp-stdio; mcp-http is "
                                                     "an alias of http."),
          public_read: bool = typer.Option(False, help="Serve reads without a login."),
          index: Optional[Path] = typer.Option(None, help="Search index folder (default: next to a SQLite "
                                                          "database, in memory for PostgreSQL)."),
          embedder: str = typer.Option("auto", help="auto, minilm, hashed or none (BM25 only)."),
          root: list[Path] = ROOT_OPTION,
          keys_dir: Optional[Path] = typer.Option(None, help="Folder of public keys pinned one by one (*.pub), "
                                                             "trusted for both roles, bound to no user."),
          trust_registered_keys: bool = typer.Option(False, help="Also trust the keys registered in the database "
                                                                 "(development only: whoever can write the "
                                                                 "database can then forge)."),
          max_body: int = typer.Option(2 << 20, help="Largest request body in bytes (413 above)."),
          rate: float = typer.Option(20.0, help="Requests per second per client, sustained (429 above; 0: no "
                                                "limit)."),
          burst: int = typer.Option(60, help="Requests a client may send at once before the rate applies."),
          log_level: str = typer.Option("info", help="Server log level.")) -> None:
    """Serve the knowledge base over REST and MCP (streamable HTTP), or MCP over stdio."""
    from assay.knowledge.keys import KeyFileError
    from assay.knowledge.server import serve as run_server

    transport = {"mcp-http": "http"}.get(transport, transport)
    try:
        run_server(db=db, host=host, port=port, transport=transport, public_read=public_read, index_path=index,
                   embedder=embedder, keys_dir=keys_dir, log_level=log_level, roots=root,
                   trust_registered=trust_registered_keys, max_body=max_body, rate=rate, burst=burst)
    except (ValueError, FileNotFoundError, KeyFileError) as e:
        _fail(str(e))


# -- trust: certificates, revocations, checkpoints ----------------------------------------------------------------
trust_app = typer.Typer(help="The root key's work: certify registered keys, revoke keys, seal the event log, "
                             "export what verifiers need.", no_args_is_help=True)
app.add_typer(trust_app, name="trust")
ROOT_KEY_OPTION = typer.Option(..., "--root-key", help="The root private key (bare names: $ASSAY_HOME/keys).")


@trust_app.command("init")
def trust_init(root_key: Path = ROOT_KEY_OPTION, passphrase_env: Optional[str] = PASSPHRASE_OPTION,
               db: Optional[str] = DB_OPTION) -> None:
    """Certify every registered key not yet certified by this root, and seal the event log so far with a
    checkpoint (run once after upgrading to revision 0006; again after registering keys)."""
    private = _load_key(root_key, passphrase_env)
    store = _store(db)
    certs = _run(lambda: store.certify(private))
    cp = _run(lambda: store.checkpoint(private))
    typer.echo(f"{len(certs)} key(s) certified; " + (f"log sealed at seq {cp.seq}" if cp else "the log is empty"))


@trust_app.command("certify")
def trust_certify(key_id: Optional[str] = typer.Argument(None, help="A registered key id (default: every key not "
                                                                    "yet certified by this root)."),
                  root_key: Path = ROOT_KEY_OPTION, passphrase_env: Optional[str] = PASSPHRASE_OPTION,
                  db: Optional[str] = DB_OPTION) -> None:
    """Sign certificates binding registered keys to their users and purposes."""
    private = _load_key(root_key, passphrase_env)
    for c in _run(lambda: _store(db).certify(private, key_id)):
        typer.echo(f"certified {c.key_id}: {c.purpose} key of {c.user}")


@trust_app.command("revoke")
def trust_revoke(key_id: str, root_key: Path = ROOT_KEY_OPTION,
                 reason: str = typer.Option(..., help="compromised (every signature of the key becomes invalid) or "
                                                      "rotated (signatures from now on are refused)."),
                 passphrase_env: Optional[str] = PASSPHRASE_OPTION, db: Optional[str] = DB_OPTION) -> None:
    """Revoke a key (then register and certify the user's new key: rotation)."""
    private = _load_key(root_key, passphrase_env)
    r = _run(lambda: _store(db).revoke_key(private, key_id, reason))
    typer.echo(f"key {r.key_id} revoked ({r.reason}) at {r.revoked_at.isoformat()}")


@trust_app.command("seal")
def trust_seal(root_key: Path = ROOT_KEY_OPTION, passphrase_env: Optional[str] = PASSPHRASE_OPTION,
               db: Optional[str] = DB_OPTION) -> None:
    """Sign a checkpoint of the event log's head (verifiers then notice the log cut short below it)."""
    private = _load_key(root_key, passphrase_env)
    cp = _run(lambda: _store(db).checkpoint(private))
    typer.echo(f"log sealed at seq {cp.seq} ({cp.head_hash[:16]}…)" if cp else "the log is empty")


@trust_app.command("export")
def trust_export(output: Path = typer.Option(..., "--output", "-o", help="JSON file to write."),
                 db: Optional[str] = DB_OPTION) -> None:
    """Write every certificate, revocation and checkpoint to a file, for offline `verify --trust`."""
    docs = _store(db).trust_documents()
    output.write_text(json.dumps(docs, indent=1) + "\n", encoding="utf-8")
    typer.echo(f"{len(docs['certificates'])} certificate(s), {len(docs['revocations'])} revocation(s), "
               f"{len(docs['checkpoints'])} checkpoint(s) -> {output}")


# -- the expert network: profiles, reputation, routing, rewards ---------------------------------------------------
expert_app = typer.Typer(help="Expert profiles: declared domains with a level 1..5, capacity, availability.",
                         no_args_is_help=True)
task_app = typer.Typer(help="Work routed to experts: list and close open tasks.", no_args_is_help=True)
rewards_app = typer.Typer(help="Peer-prediction pay for annotation work, and the append-only ledger.",
                          no_args_is_help=True)
app.add_typer(expert_app, name="expert")
app.add_typer(task_app, name="task")
app.add_typer(rewards_app, name="rewards")

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
    from assay.knowledge.network_models import ExpertDomain
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
    from assay.knowledge.experts import set_expert

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
    from assay.knowledge.experts import list_experts
    from assay.knowledge.routing import open_tasks

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


@app.command()
def reputation(domain: str,
               project: list[str] = typer.Option([], "--project", "-p", help="Annotation project (name or id) "
                                                                            "holding evidence; repeat. Default: "
                                                                            "the projects whose config lists the "
                                                                            "domain."),
               store: bool = typer.Option(True, "--store/--no-store", help="Save the result for routing."),
               as_json: bool = JSON_OPTION,
               db: Optional[str] = DB_OPTION) -> None:
    """Compute (and store) every expert's reputation in a domain from gold items, peer agreement and reviews."""
    from assay.knowledge.experts import compute_reputation

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
    from assay.knowledge.routing import route

    if exclude:
        _user_ids(database, exclude)
    decision = _run(lambda: route(database, work, k, record=record, exclude=exclude))
    if as_json:
        _echo_json({**decision, "recorded": record})
    else:
        _print_route(decision, record)


@app.command("route")
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


@app.command("route-patch")
def route_patch(patch_id: str,
                version: Optional[int] = typer.Argument(None, help="Version (default: the newest)."),
                k: int = typer.Option(2, "-k", help="How many reviewers to choose."),
                exclude: list[str] = typer.Option([], "--exclude", help="A user not to choose (repeat)."),
                record: bool = typer.Option(False, "--record", help="Write the choice as open tasks."),
                as_json: bool = JSON_OPTION,
                db: Optional[str] = DB_OPTION) -> None:
    """Pick reviewers for a patch version: its domains, its authors excluded (task name patch:ID@VERSION)."""
    from assay.knowledge.routing import patch_work
    from assay.knowledge.store import KnowledgeStore

    database = _database(db)
    v = _version(KnowledgeStore(database), patch_id, version)
    work = _run(lambda: patch_work(database, patch_id, v))
    _route_and_print(database, work, k, record, exclude, as_json)


@task_app.command("list")
def task_list(user: str, as_json: bool = JSON_OPTION, db: Optional[str] = DB_OPTION) -> None:
    """A user's open routed tasks, oldest first."""
    from assay.knowledge.routing import open_tasks

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
    from assay.knowledge.network_models import TASK_DECLINED, TASK_DONE
    from assay.knowledge.routing import close_task

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
    from assay.knowledge.rewards import RULES, annotation_reports, pay_batch

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
    from assay.knowledge.rewards import balances

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
    from assay.knowledge.network_models import RewardBatch
    from assay.knowledge.rewards import ledger_entries

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


if __name__ == "__main__":  # python -m assay.knowledge.cli …
    app()
