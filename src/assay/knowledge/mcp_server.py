"""The knowledge layer as an MCP server (the ``mcp`` package, v2 ``MCPServer``), for models that call tools.

Tools (all answers are JSON objects, returned as structured content and as JSON text):

* ``search_knowledge(query, k=5, domains=None, status=None, at=None, mode="hybrid")``: accepted patches by
  default; ``status=["any"]`` searches every status.
* ``get_patch(patch_id, version=None)``: the full signed patch, to keep and verify later.
* ``verify_patch(patch=None, patch_id=None, version=None)``: checks content hash, publisher signature and review
  signatures; give ``patch`` (a copy the model holds) to verify it offline, or ``patch_id`` for the stored one.
* ``changes_since(cursor=0, limit=100)``: the change feed, to sync only what changed.

Resource template ``patch://{id}``: the latest version of a patch as JSON; ``patch://{id}@{version}`` (the same
template, id ``abc@2``) a given version.

Transports: ``stdio`` (``python -m assay.knowledge.mcp_server --db ...`` or ``assay knowledge serve --transport
mcp-stdio``; trusted local process, no login, the local reader's rights) and streamable HTTP (mounted at ``/mcp``
by :func:`assay.knowledge.server.serve`, behind the same bearer-token check, size and rate limits as the REST API;
each call is served with the rights of the login in its ``Authorization`` header, see
:mod:`assay.knowledge.access`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError

from assay.knowledge.access import ANONYMOUS, LOCAL, Reader
from assay.knowledge.api import DEFAULT_STATUS, MAX_CHANGES, MAX_K
from assay.knowledge.service import TooLarge

SERVER_NAME = "assay-knowledge"
INSTRUCTIONS = (
    "Expert-vetted, signed knowledge patches. Use search_knowledge to find facts, get_patch to fetch one in full "
    "(keep it with its signature), verify_patch to check that a patch is authentic and unmodified before relying on "
    "it, and changes_since to sync what changed since your last cursor.")


def build_mcp_server(service: Any, users: Any = None) -> MCPServer:
    """An ``MCPServer`` with the four knowledge tools and the ``patch://{id}`` resource over ``service``.
    ``users``: the database of logins (default ``service.db``), for calls over HTTP."""
    mcp = MCPServer(SERVER_NAME, instructions=INSTRUCTIONS, version=_version())
    logins = users if users is not None else service.db

    def reader_of(ctx: Context | None) -> Reader:
        """Over stdio (no headers): the local reader. Over HTTP: the login of the request (the gate in front
        already refused bad tokens unless reads are public), anonymous without one."""
        headers = ctx.headers if ctx is not None else None
        if headers is None:
            return LOCAL
        from assay.platform import auth

        header = headers.get("authorization", "")
        if header[:7].lower() != "bearer ":
            return ANONYMOUS
        with logins.read() as s:
            caller = auth.resolve(s, header[7:].strip(), via_cookie=False)
        return Reader.for_caller(service.store, caller)

    @mcp.tool(description="Search knowledge patches (BM25 + embeddings, fused). Returns the best k with scores.")
    def search_knowledge(query: str, k: int = 5, domains: list[str] | None = None, status: list[str] | None = None,
                         at: str | None = None, mode: str = "hybrid", ctx: Context | None = None) -> dict[str, Any]:
        if not query.strip():
            raise ToolError("query is empty")
        if not 1 <= k <= MAX_K:
            raise ToolError(f"k must be between 1 and {MAX_K}")
        if mode not in ("hybrid", "bm25", "dense"):
            raise ToolError("mode must be hybrid, bm25 or dense")
        statuses: list[str] | None = list(status) if status else list(DEFAULT_STATUS)
        if "any" in statuses:
            statuses = None
        when = _parse_time(at)
        try:
            results = service.search(query, k, domains=domains or None, status=statuses, at=when, mode=mode,
                                     reader=reader_of(ctx))
        except TooLarge as e:
            raise ToolError(str(e)) from None
        return {"query": query, "results": results}

    @mcp.tool(description="Get a knowledge patch by id (latest version, or the given version), fully signed.")
    def get_patch(patch_id: str, version: int | None = None, ctx: Context | None = None) -> dict[str, Any]:
        patch = service.get_patch(patch_id, version, reader=reader_of(ctx))
        if patch is None:
            raise ToolError(f"no patch {patch_id}" + (f" version {version}" if version else ""))
        return patch

    @mcp.tool(description="Verify a knowledge patch: content hash, publisher signature and review signatures. "
                          "Pass `patch` (a copy you hold) to check it offline, or `patch_id` for the stored one.")
    def verify_patch(patch: dict[str, Any] | None = None, patch_id: str | None = None,
                     version: int | None = None, ctx: Context | None = None) -> dict[str, Any]:
        if (patch is None) == (patch_id is None):
            raise ToolError("give either patch (a patch document) or patch_id")
        reader = reader_of(ctx)
        if patch is not None:
            try:
                return service.verify_patch(patch, reader=reader)
            except TooLarge as e:
                raise ToolError(str(e)) from None
        if service.get_patch(patch_id, version, reader=reader) is None:
            raise ToolError(f"no patch {patch_id}")
        return service.verify_patch(patch_id, version, reader=reader)

    @mcp.tool(description="Changes (published, reviewed, accepted, superseded, retracted) after a cursor; page with "
                          "the returned cursor while `more` is true.")
    def changes_since(cursor: int = 0, limit: int = 100, ctx: Context | None = None) -> dict[str, Any]:
        if cursor < 0 or not 1 <= limit <= MAX_CHANGES:
            raise ToolError(f"cursor must be >= 0 and limit between 1 and {MAX_CHANGES}")
        return service.changes_since(cursor, limit, reader=reader_of(ctx))

    @mcp.resource("patch://{id}", name="patch", mime_type="application/json",
                  description="A knowledge patch as signed JSON: patch://<patch_id> (latest) or "
                              "patch://<patch_id>@<version>.")
    def patch_resource(id: str, ctx: Context | None = None) -> str:  # noqa: A002 (the template's variable name)
        patch_id, version = _split_ref(id)
        patch = service.get_patch(patch_id, version, reader=reader_of(ctx))
        if patch is None:  # absent, or not readable by this caller: the same answer
            raise ResourceNotFoundError(f"no patch {id}")
        return json.dumps(patch, ensure_ascii=False, sort_keys=True)

    return mcp


def _split_ref(ref: str) -> tuple[str, int | None]:
    """``"abc"`` → ("abc", None); ``"abc@2"`` → ("abc", 2)."""
    patch_id, sep, version = ref.rpartition("@")
    if sep and version.isdigit():
        return patch_id, int(version)
    return ref, None


def _parse_time(value: str | None) -> Any:
    if value is None or value == "":
        return None
    from datetime import datetime

    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ToolError(f"at must be an ISO-8601 time, not {value!r}") from exc


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("assay")
    except PackageNotFoundError:
        return "0"


def main(argv: list[str] | None = None) -> None:
    """``python -m assay.knowledge.mcp_server --db PATH [--index DIR]``: serve MCP over stdio."""
    ap = argparse.ArgumentParser(prog="python -m assay.knowledge.mcp_server", description=main.__doc__)
    ap.add_argument("--db", default=None, help="database URL or SQLite path (default: ASSAY_ANNOTATE_DB)")
    ap.add_argument("--index", default=None, help="HybridIndex directory (default: next to the SQLite file)")
    ap.add_argument("--embedder", default="auto")
    ap.add_argument("--keys", default=None, help="folder of public keys pinned one by one (*.pub / *.pem)")
    ap.add_argument("--root", action="append", default=[], help="a pinned root public key file (repeat)")
    args = ap.parse_args(argv)
    from assay.knowledge.server import serve

    serve(args.db, transport="mcp-stdio", index_path=args.index, embedder=args.embedder, keys_dir=args.keys,
          roots=args.root)


if __name__ == "__main__":
    main(sys.argv[1:])
