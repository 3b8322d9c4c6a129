"""A local stand-in for the Hugging Face Hub's HTTP API (test support, not part of Assay).

It answers the requests ``huggingface_hub`` and ``datasets`` make to publish and read back a dataset repo, so
``assay push`` and ``datasets.load_dataset(repo_id)`` are exercised with the real client libraries and
``HF_ENDPOINT`` pointing here:

* ``GET  /api/whoami-v2``                                      the token's user (``Authorization: Bearer``)
* ``POST /api/repos/create``                                   a new repo (409 when it exists)
* ``POST /api/validate-yaml``                                  the README front matter must be a YAML mapping
* ``POST /api/{type}s/{ns}/{name}/preupload/{rev}``            every file is uploaded as a regular git blob
* ``POST /api/{type}s/{ns}/{name}/commit/{rev}``               the ndjson commit (header, file, deletedFile…)
* ``GET  /api/{type}s/{ns}/{name}[/revision/{rev}]``           repo info with its siblings
* ``GET  /api/{type}s/{ns}/{name}/tree/{rev}[/{path}]``        the tree (``recursive``)
* ``POST /api/{type}s/{ns}/{name}/paths-info/{rev}``           info on given paths
* ``GET|HEAD /{type}s/{ns}/{name}/resolve/{rev}/{path}``       a file's bytes (``Range`` honoured)

Files are stored on disk under ``root``: ``blobs/<git sha1>`` and one ``repo.json`` per repo with its commits
(each commit maps paths to blob ids). What it leaves out: LFS/Xet storage (the preupload answer makes every file
a regular upload, which the client then sends base64 in the commit), pull requests, branches other than ``main``.

Run on its own: ``python tests/hub_standin.py --root /tmp/hub --port 8999`` (token ``hf_standin``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

REPO_TYPES = ("model", "dataset", "space")
DEFAULT_TOKENS = {"hf_standin": "tester"}


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    # the Hub's errors carry X-Error-Message, which huggingface_hub puts into its exception
    return JSONResponse({"error": message}, status_code=status, headers={"X-Error-Message": message, **headers})


class HubStore:
    """Repos and blobs on disk."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()

    def _repo_file(self, repo_type: str, repo_id: str) -> Path:
        return self.root / "repos" / f"{repo_type}s" / repo_id / "repo.json"

    def repo(self, repo_type: str, repo_id: str) -> dict[str, Any] | None:
        path = self._repo_file(repo_type, repo_id)
        return json.loads(path.read_text()) if path.exists() else None

    def save(self, repo_type: str, repo_id: str, repo: dict[str, Any]) -> None:
        path = self._repo_file(repo_type, repo_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(repo, indent=1))
        tmp.replace(path)

    def put_blob(self, data: bytes) -> str:
        oid = git_blob_id(data)
        path = self.root / "blobs" / oid
        if not path.exists():
            path.write_bytes(data)
        return oid

    def blob(self, oid: str) -> bytes:
        return (self.root / "blobs" / oid).read_bytes()

    def blob_size(self, oid: str) -> int:
        return (self.root / "blobs" / oid).stat().st_size


def _commit(repo: dict[str, Any], revision: str) -> dict[str, Any] | None:
    revision = unquote(revision)
    if revision == "main":
        return repo["commits"][-1]
    return next((c for c in repo["commits"] if c["oid"] == revision), None)


def _tree_entries(store: HubStore, files: dict[str, str], folder: str, recursive: bool) -> list[dict[str, Any]]:
    prefix = folder.strip("/") + "/" if folder.strip("/") else ""
    entries: dict[str, dict[str, Any]] = {}
    for path, oid in sorted(files.items()):
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix):]
        parts = rest.split("/")
        # the folders on the way (all of them when recursive, the first level otherwise)
        for depth in range(1, len(parts) if recursive else min(2, len(parts))):
            sub = prefix + "/".join(parts[:depth])
            entries.setdefault(sub, {"type": "directory", "oid": hashlib.sha1(sub.encode()).hexdigest(),
                                     "size": 0, "path": sub})
        if recursive or len(parts) == 1:
            entries[path] = _file_entry(store, path, oid)
    return list(entries.values())


def _file_entry(store: HubStore, path: str, oid: str) -> dict[str, Any]:
    return {"type": "file", "oid": oid, "size": store.blob_size(oid), "path": path}


def make_app(root: Path | str, tokens: dict[str, str] | None = None) -> FastAPI:
    """The stand-in as an ASGI app; ``tokens`` maps accepted tokens to user names."""
    store = HubStore(Path(root))
    tokens = dict(DEFAULT_TOKENS if tokens is None else tokens)
    app = FastAPI()
    app.state.store = store
    app.state.requests = []  # (method, path) of every request: tests check what the client called

    @app.middleware("http")
    async def _record(request: Request, call_next):  # noqa: ANN001, ANN202
        app.state.requests.append((request.method, request.url.path))
        return await call_next(request)

    def user_of(request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        return tokens.get(auth.removeprefix("Bearer ").strip()) if auth.startswith("Bearer ") else None

    def readable(request: Request, repo_type: str, repo_id: str) -> dict[str, Any] | JSONResponse:
        repo = store.repo(repo_type, repo_id) if repo_type in REPO_TYPES else None
        if repo is None or (repo["private"] and user_of(request) != repo["owner"]):
            return _error(404, "Repository not found", **{"X-Error-Code": "RepoNotFound"})
        return repo

    def writable(request: Request, repo_type: str, repo_id: str) -> dict[str, Any] | JSONResponse:
        user = user_of(request)
        if user is None:
            return _error(401, "Invalid credentials in Authorization header")
        repo = store.repo(repo_type, repo_id)
        if repo is None:
            return _error(404, "Repository not found", **{"X-Error-Code": "RepoNotFound"})
        if repo["owner"] != user:
            return _error(403, "You don't have the rights to write to this repo")
        return repo

    @app.get("/api/whoami-v2")
    def whoami(request: Request):  # noqa: ANN202
        user = user_of(request)
        if user is None:
            return _error(401, "Invalid credentials in Authorization header")
        return {"type": "user", "id": hashlib.sha1(user.encode()).hexdigest()[:24], "name": user, "fullname": user,
                "orgs": [], "auth": {"type": "access_token", "accessToken": {"displayName": "standin",
                                                                              "role": "write"}}}

    @app.post("/api/repos/create")
    async def create_repo(request: Request):  # noqa: ANN202
        user = user_of(request)
        if user is None:
            return _error(401, "Invalid credentials in Authorization header")
        body = await request.json()
        repo_type = body.get("type") or "model"
        namespace = body.get("organization") or user
        if namespace != user:
            return _error(403, f"You don't have the rights to create a repo under the namespace {namespace}")
        repo_id = f"{namespace}/{body['name']}"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{str(request.base_url).rstrip('/')}/{prefix}{repo_id}"
        with store.lock:
            if store.repo(repo_type, repo_id) is not None:
                return JSONResponse({"error": "You already created this repo", "url": url}, status_code=409)
            initial = {"oid": hashlib.sha1(f"{repo_id}:initial".encode()).hexdigest(), "parent": None,
                       "title": "initial commit", "date": time.time(), "files": {}}
            gitattributes = store.put_blob(b"*.parquet filter=lfs diff=lfs merge=lfs -text\n")
            initial["files"][".gitattributes"] = gitattributes
            store.save(repo_type, repo_id, {"id": repo_id, "owner": user, "type": repo_type,
                                            "private": body.get("visibility") == "private", "commits": [initial]})
        return {"url": url, "name": repo_id}

    @app.post("/api/validate-yaml")
    async def validate_yaml(request: Request):  # noqa: ANN202
        import yaml

        content = (await request.json()).get("content", "")
        if content.startswith("---"):
            front = content.split("---", 2)[1]
            try:
                meta = yaml.safe_load(front)
            except yaml.YAMLError as e:
                return JSONResponse({"errors": [{"message": f"YAML: {e}"}], "warnings": []}, status_code=400)
            if meta is not None and not isinstance(meta, dict):
                return JSONResponse({"errors": [{"message": "metadata must be a mapping"}], "warnings": []},
                                    status_code=400)
        return {"errors": [], "warnings": []}

    @app.post("/api/{repo_type}s/{ns}/{name}/preupload/{revision}")
    async def preupload(repo_type: str, ns: str, name: str, revision: str, request: Request):  # noqa: ANN202
        repo = writable(request, repo_type, f"{ns}/{name}")
        if isinstance(repo, JSONResponse):
            return repo
        commit = _commit(repo, revision) or {"files": {}}
        body = await request.json()
        return {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                           "oid": commit["files"].get(f["path"])} for f in body["files"]]}

    @app.post("/api/{repo_type}s/{ns}/{name}/commit/{revision}")
    async def commit(repo_type: str, ns: str, name: str, revision: str, request: Request):  # noqa: ANN202
        repo_id = f"{ns}/{name}"
        with store.lock:
            repo = writable(request, repo_type, repo_id)
            if isinstance(repo, JSONResponse):
                return repo
            if unquote(revision) != "main":
                return _error(400, f"only the main branch is supported by the stand-in, not {revision}")
            head = repo["commits"][-1]
            files = dict(head["files"])
            title = ""
            for line in (await request.body()).splitlines():
                if not line.strip():
                    continue
                op = json.loads(line)
                key, value = op["key"], op["value"]
                if key == "header":
                    title = value.get("summary", "")
                    if value.get("parentCommit") not in (None, head["oid"]):
                        return _error(412, "A commit has happened since. Please refresh and try again.")
                elif key == "file":
                    if value.get("encoding") != "base64":
                        return _error(400, f"unsupported encoding {value.get('encoding')}")
                    files[value["path"]] = store.put_blob(base64.b64decode(value["content"]))
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        return _error(404, "A file with this name doesn't exist")
                elif key == "deletedFolder":
                    folder = value["path"].rstrip("/") + "/"
                    files = {p: o for p, o in files.items() if not p.startswith(folder)}
                else:  # lfsFile: the stand-in never asks for LFS uploads
                    return _error(400, f"unsupported commit operation {key}")
            oid = hashlib.sha1(json.dumps([head["oid"], title, sorted(files.items())]).encode()).hexdigest()
            repo["commits"].append({"oid": oid, "parent": head["oid"], "title": title, "date": time.time(),
                                    "files": files})
            store.save(repo_type, repo_id, repo)
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        base = str(request.base_url).rstrip("/")
        return {"success": True, "commitOid": oid, "commitUrl": f"{base}/{prefix}{repo_id}/commit/{oid}",
                "pullRequestUrl": None}

    def info(repo: dict[str, Any], commit: dict[str, Any]) -> dict[str, Any]:
        return {"_id": hashlib.sha1(repo["id"].encode()).hexdigest()[:24], "id": repo["id"],
                "author": repo["owner"], "sha": commit["oid"], "private": repo["private"], "disabled": False,
                "gated": False, "downloads": 0, "likes": 0, "tags": [],
                "lastModified": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(commit["date"])),
                "createdAt": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(repo["commits"][0]["date"])),
                "siblings": [{"rfilename": p} for p in sorted(commit["files"])]}

    @app.get("/api/{repo_type}s/{ns}/{name}")
    def repo_info(repo_type: str, ns: str, name: str, request: Request):  # noqa: ANN202
        return repo_info_at(repo_type, ns, name, "main", request)

    @app.get("/api/{repo_type}s/{ns}/{name}/revision/{revision:path}")
    def repo_info_at(repo_type: str, ns: str, name: str, revision: str, request: Request):  # noqa: ANN202
        repo = readable(request, repo_type, f"{ns}/{name}")
        if isinstance(repo, JSONResponse):
            return repo
        commit = _commit(repo, revision)
        if commit is None:
            return _error(404, f"Invalid rev id: {revision}", **{"X-Error-Code": "RevisionNotFound"})
        return info(repo, commit)

    @app.get("/api/{repo_type}s/{ns}/{name}/tree/{revision}/{path:path}")
    def tree(repo_type: str, ns: str, name: str, revision: str, path: str, request: Request):  # noqa: ANN202
        repo = readable(request, repo_type, f"{ns}/{name}")
        if isinstance(repo, JSONResponse):
            return repo
        commit = _commit(repo, revision)
        if commit is None:
            return _error(404, f"Invalid rev id: {revision}", **{"X-Error-Code": "RevisionNotFound"})
        recursive = request.query_params.get("recursive", "").lower() in ("1", "true")
        entries = _tree_entries(store, commit["files"], path, recursive)
        if path.strip("/") and not entries:
            return _error(404, f"{path} does not exist on {revision}", **{"X-Error-Code": "EntryNotFound"})
        return entries

    @app.get("/api/{repo_type}s/{ns}/{name}/tree/{revision}")
    def tree_root(repo_type: str, ns: str, name: str, revision: str, request: Request):  # noqa: ANN202
        return tree(repo_type, ns, name, revision, "", request)

    @app.post("/api/{repo_type}s/{ns}/{name}/paths-info/{revision}")
    async def paths_info(repo_type: str, ns: str, name: str, revision: str, request: Request):  # noqa: ANN202
        repo = readable(request, repo_type, f"{ns}/{name}")
        if isinstance(repo, JSONResponse):
            return repo
        commit = _commit(repo, revision)
        if commit is None:
            return _error(404, f"Invalid rev id: {revision}", **{"X-Error-Code": "RevisionNotFound"})
        form = parse_qs((await request.body()).decode())
        out = []
        for path in form.get("paths", []):
            path = path.strip("/")
            if path in commit["files"]:
                out.append(_file_entry(store, path, commit["files"][path]))
            elif any(p.startswith(path + "/") for p in commit["files"]):
                out.append({"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0,
                            "path": path})
        return out

    @app.api_route("/{repo_type}s/{ns}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
    def resolve(repo_type: str, ns: str, name: str, revision: str, path: str, request: Request):  # noqa: ANN202
        repo = readable(request, repo_type, f"{ns}/{name}")
        if isinstance(repo, JSONResponse):
            return repo
        commit = _commit(repo, revision)
        if commit is None:
            return _error(404, f"Invalid rev id: {revision}", **{"X-Error-Code": "RevisionNotFound"})
        oid = commit["files"].get(path)
        headers = {"X-Repo-Commit": commit["oid"]}
        if oid is None:
            return _error(404, "Entry not found", **{"X-Error-Code": "EntryNotFound", **headers})
        data = store.blob(oid)
        headers.update({"ETag": f'"{oid}"', "Accept-Ranges": "bytes"})
        status = 200
        ranged = request.headers.get("range", "")
        if ranged.startswith("bytes="):
            start_s, _, end_s = ranged[len("bytes="):].partition("-")
            start = int(start_s) if start_s else max(0, len(data) - int(end_s))
            end = min(int(end_s), len(data) - 1) if start_s and end_s else len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start:end + 1], 206
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(data))
            return Response(status_code=status, headers=headers)
        return Response(content=data, status_code=status, headers=headers, media_type="application/octet-stream")

    return app


if __name__ == "__main__":
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--port", type=int, default=8999)
    args = parser.parse_args()
    uvicorn.run(make_app(args.root), host="127.0.0.1", port=args.port, log_level="warning")
