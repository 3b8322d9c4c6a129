"""``assay knowledge …``: keys, domain roles, proposing, reviewing, publishing and retracting patches, offline
verification, history and the change feed, ``serve``; and the expert network: profiles, reputation, routing and
peer-prediction rewards (those commands are defined in :mod:`assay.experts.cli`, which adds them here).

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


if __name__ == "__main__":  # python -m assay.knowledge.cli … (the expert network's commands come with `assay knowledge`)
    app()
