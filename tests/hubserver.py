"""A local Hugging Face Hub-compatible HTTP server for tests, with fault injection.

It speaks the subset of the Hub API that huggingface_hub 2.x uses to create repos, push one
commit (preupload, LFS batch + PUT, NDJSON commit, branches, PR refs), download snapshots
(model info, tree, resolve with ETag / X-Repo-Commit / ranges) and keep collections (create,
get, add / update / delete item). Repos keep git-like history: commits with 40-hex ids and a
parent, branches, `refs/pr/N`, regular and LFS files.

Only 127.0.0.1 is bound, request bodies are capped, and every object lives under one temp dir.
The Xet protocol is not served: run the client with HF_HUB_DISABLE_XET=1.

Usage in tests: the `hub_server` fixture yields a started `HubServer` (`.endpoint`, `.token`,
inspection helpers such as `.head(repo_id)` and fault knobs such as `.fail_next_commit = 500`).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import fnmatch
import hashlib
import json
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

DEFAULT_TOKEN = "hf_test_write_token_0123456789"
DEFAULT_USER = "tester"
LFS_POINTER_SPEC = "version https://git-lfs.github.com/spec/v1"
#: The patterns a new repo's .gitattributes tracks with LFS (a subset of what the Hub writes).
GITATTRIBUTES_LFS = [
    "*.bin",
    "*.safetensors",
    "*.gguf",
    "*.pt",
    "*.pth",
    "*.ckpt",
    "*.h5",
    "*.msgpack",
    "*.onnx",
    "*.model",
    "*.npy",
    "*.npz",
    "*.pkl",
    "*.zip",
    "*.tar.gz",
    "*tfevents*",
]
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in GITATTRIBUTES_LFS).encode()


def git_blob_sha1(data: bytes) -> str:
    """`git hash-object` of some bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"{LFS_POINTER_SPEC}\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class FileEntry:
    """One file in a commit's tree; `oid` is the git blob id (of the pointer for LFS files)."""

    sha256: str
    size: int
    lfs: bool
    oid: str


@dataclass(frozen=True)
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    author: str
    date: str
    tree: dict[str, FileEntry]


@dataclass
class Repo:
    repo_id: str
    private: bool
    refs: dict[str, str] = field(default_factory=dict)  # "main", "my-branch", "refs/pr/1" -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)
    lfs_oids: set[str] = field(default_factory=set)
    next_pr: int = 1
    created_at: str = ""


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it (no headers: the token must never be recorded)."""

    method: str
    path: str
    route: str
    status: int


@dataclass(frozen=True)
class CommitRequest:
    """What one commit POST asked for (paths only, never contents or headers)."""

    repo_id: str
    revision: str
    create_pr: bool
    parent_commit: str | None
    added: tuple[str, ...]
    deleted: tuple[str, ...]


class Reply(Exception):
    """An HTTP error reply, raised inside a route."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}
        self.extra = extra or {}


class HubServer:
    """Hub-compatible server state, routes and fault knobs.

    Fault knobs (all consumed by the next matching request):
        fail_next: route name -> HTTP status to answer once, e.g. {"commit": 500, "preupload": 503}.
            Routes: whoami, create_repo, validate_yaml, info, tree, refs, commits, preupload, commit,
            branch, paths_info, lfs_batch, lfs_verify, lfs_put, resolve, collection_create,
            collection_get, collection_item_add, collection_item_update, collection_item_delete.
        fail_next_commit: shorthand for fail_next["commit"].
        lfs_put_faults: one entry per LFS PUT attempt: "drop" (read the body, close the connection
            without an answer: the client sees a protocol error), or an HTTP status such as 503
            (sent with Retry-After: 0, so the client waits only 1 s before its next try).
        drop_lfs_uploads: shorthand that sets lfs_put_faults to n drops.
        tamper_next_commit: path -> bytes stored instead of what the next commit sent (a broken
            mirror), for testing verification after a push.
        race_next_commit: path -> bytes that another client commits to the target branch just before
            the next commit request is processed (a concurrent publish): a commit whose
            `parentCommit` was the old head then gets the Hub's HTTP 412.

    Counters: commits_made, lfs_uploads, requests (list of RequestRecord), commit_requests (one
    CommitRequest per commit POST that reached the route: target, parentCommit, added and deleted paths).
    """

    def __init__(
        self,
        root: Path | None = None,
        *,
        token: str = DEFAULT_TOKEN,
        user: str = DEFAULT_USER,
        lfs_threshold: int = 10 * 1024 * 1024,
        max_body: int = 512 * 1024 * 1024,
    ):
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="hubserver-")) if root is None else Path(root)
        (self.root / "objects").mkdir(parents=True, exist_ok=True)
        self.token, self.user = token, user
        self.tokens: dict[str, tuple[str, bool]] = {token: (user, True)}  # token -> (user, can_write)
        self.lfs_threshold, self.max_body = lfs_threshold, max_body
        self.repos: dict[str, Repo] = {}
        self.collections: dict[str, dict[str, Any]] = {}  # slug -> the collection as the Hub returns it
        self.lock = threading.RLock()
        self.fail_next: dict[str, int] = {}
        self.lfs_put_faults: collections.deque[str | int] = collections.deque()
        self.tamper_next_commit: dict[str, bytes] = {}
        self.race_next_commit: dict[str, bytes] = {}
        self.commits_made = 0
        self.lfs_uploads = 0
        self.requests: list[RequestRecord] = []
        self.commit_requests: list[CommitRequest] = []
        self._seq = 0
        self._upload_sig = secrets.token_hex(16)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.endpoint = ""

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> HubServer:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="hubserver", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- knobs and helpers for tests ------------------------------------------------------
    @property
    def fail_next_commit(self) -> int | None:
        return self.fail_next.get("commit")

    @fail_next_commit.setter
    def fail_next_commit(self, status: int | None) -> None:
        if status is None:
            self.fail_next.pop("commit", None)
        else:
            self.fail_next["commit"] = status

    @property
    def drop_lfs_uploads(self) -> int:
        return sum(1 for f in self.lfs_put_faults if f == "drop")

    @drop_lfs_uploads.setter
    def drop_lfs_uploads(self, n: int) -> None:
        self.lfs_put_faults = collections.deque(["drop"] * n)

    def break_lfs_uploads(self, retries: int = 5) -> None:
        """Make the next LFS upload fail on every try, quickly, ending in a protocol error.

        huggingface_hub retries an LFS PUT `retries` times with 1-8 s back-off (23 s in all).
        The first and last tries drop the connection; the ones between answer 503 with
        Retry-After: 0, which the client honours with a 1 s wait: about 5 s in all.
        """
        self.lfs_put_faults = collections.deque(["drop", *([503] * (retries - 1)), "drop"])

    def add_token(self, token: str, user: str, *, write: bool = True) -> None:
        self.tokens[token] = (user, write)

    def create_repo(self, repo_id: str, *, private: bool = False) -> Repo:
        """Create a repo server-side, with the Hub's initial .gitattributes commit."""
        with self.lock:
            repo = Repo(repo_id=repo_id, private=private, created_at=_now())
            blob = self._store(GITATTRIBUTES)
            tree = {".gitattributes": FileEntry(blob, len(GITATTRIBUTES), False, git_blob_sha1(GITATTRIBUTES))}
            repo.refs["main"] = self._new_commit(repo, None, tree, "initial commit", "", self.user).oid
            self.repos[repo_id] = repo
            return repo

    def commit(self, repo_id: str, files: dict[str, bytes], *, revision: str = "main", title: str = "other") -> str:
        """Commit regular files server-side, as another client would; returns the new head."""
        with self.lock:
            repo = self.repos[repo_id]
            base = self._resolve(repo, revision)
            tree = dict(base.tree)
            for path, data in files.items():
                tree[path] = FileEntry(self._store(data), len(data), False, git_blob_sha1(data))
            commit = self._new_commit(repo, base.oid, tree, title, "", self.user)
            repo.refs[unquote(revision)] = commit.oid
            return commit.oid

    def head(self, repo_id: str, revision: str = "main") -> str | None:
        with self.lock:
            repo = self.repos.get(repo_id)
            return None if repo is None else repo.refs.get(revision)

    def refs(self, repo_id: str) -> dict[str, str]:
        with self.lock:
            return dict(self.repos[repo_id].refs)

    def history(self, repo_id: str, revision: str = "main") -> list[Commit]:
        """Commits reachable from `revision`, newest first."""
        with self.lock:
            repo = self.repos[repo_id]
            oid, out = self._resolve(repo, revision).oid, []
            while oid is not None:
                out.append(repo.commits[oid])
                oid = repo.commits[oid].parent
            return out

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        with self.lock:
            commit = self._resolve(self.repos[repo_id], revision)
            return {p: self._read(e.sha256) for p, e in commit.tree.items()}

    def requests_to(self, route: str) -> list[RequestRecord]:
        return [r for r in self.requests if r.route == route]

    def collection_items(self, title: str, namespace: str | None = None) -> list[tuple[str, str | None]]:
        """(repo id, note text) of every item of the collection titled `title`, for test assertions."""
        with self.lock:
            for collection in self.collections.values():
                if collection["title"] == title and namespace in (None, collection["owner"]["name"]):
                    return [(i["id"], (i.get("note") or {}).get("text")) for i in collection["items"]]
        raise KeyError(title)

    # ---- storage ---------------------------------------------------------------------------
    def _store(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.root / "objects" / sha
        if not path.exists():
            tmp = path.with_suffix(f".tmp{threading.get_ident()}")
            tmp.write_bytes(data)
            tmp.replace(path)
        return sha

    def _read(self, sha256: str) -> bytes:
        return (self.root / "objects" / sha256).read_bytes()

    def _new_commit(
        self, repo: Repo, parent: str | None, tree: dict[str, FileEntry], title: str, message: str, author: str
    ) -> Commit:
        self._seq += 1
        listing = "".join(f"{p}\0{e.oid}\n" for p, e in sorted(tree.items()))
        body = (
            f"tree {hashlib.sha1(listing.encode()).hexdigest()}\nparent {parent}\nseq {self._seq}\n"
            f"author {author}\n\n{title}\n\n{message}"
        )
        oid = hashlib.sha1(f"commit {len(body)}\0{body}".encode()).hexdigest()
        commit = Commit(oid, parent, title, message, author, _now(), dict(tree))
        repo.commits[oid] = commit
        return commit

    def _resolve(self, repo: Repo, revision: str) -> Commit:
        revision = unquote(revision)
        if revision in repo.refs:
            return repo.commits[repo.refs[revision]]
        if len(revision) >= 7 and all(c in "0123456789abcdef" for c in revision):
            found = [c for oid, c in repo.commits.items() if oid.startswith(revision)]
            if len(found) == 1:
                return found[0]
        raise Reply(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    # ---- auth --------------------------------------------------------------------------------
    def _user(self, headers: Any, *, write: bool) -> str | None:
        auth = headers.get("Authorization")
        if auth is None:
            if write:
                raise Reply(401, "You must be authenticated to access this resource")
            return None
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or token not in self.tokens:
            raise Reply(401, "Invalid credentials in Authorization header")
        user, can_write = self.tokens[token]
        if write and not can_write:
            raise Reply(403, "You don't have the rights to write to this repository")
        return user

    def _repo(self, repo_id: str, user: str | None) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and user is None):
            raise Reply(404, "Repository not found", "RepoNotFound")
        return repo

    def _upload_mode(self, commit: Commit, path: str, size: int, sample: bytes) -> str:
        if size == 0:
            return "regular"
        patterns = GITATTRIBUTES_LFS
        if ".gitattributes" in commit.tree:
            text = self._read(commit.tree[".gitattributes"].sha256).decode(errors="replace")
            patterns = [ln.split()[0] for ln in text.splitlines() if "filter=lfs" in ln and ln.strip()]
        name = path.rsplit("/", 1)[-1]
        if any(fnmatch.fnmatch(path if "/" in p else name, p) for p in patterns):
            return "lfs"
        return "lfs" if size > self.lfs_threshold or b"\0" in sample else "regular"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _file_json(path: str, entry: FileEntry, *, tree: bool) -> dict[str, Any]:
    """A file as /tree (tree=True) or as a sibling of /api/models (tree=False) describes it."""
    pointer_size = len(lfs_pointer(entry.sha256, entry.size))
    if tree:
        out: dict[str, Any] = {"type": "file", "oid": entry.oid, "size": entry.size, "path": path}
        if entry.lfs:
            out["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": pointer_size}
        return out
    out = {"rfilename": path, "size": entry.size, "blobId": entry.oid}
    if entry.lfs:
        out["lfs"] = {"sha256": entry.sha256, "size": entry.size, "pointerSize": pointer_size}
    return out


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to a HubServer (set as the class attribute `hub`)."""

    hub: HubServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: avoid 40 ms delayed-ACK stalls
    server_version = "hubserver/1"

    def log_message(self, format: str, *args: Any) -> None:  # the request log is HubServer.requests
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    # ---- plumbing ------------------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self.query = {k: v for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        segs = [unquote(s) for s in split.path.split("/")[1:]]
        route, status = "unknown", 500
        try:
            body = self._read_body()
            route, handler, args = self._route(method, segs)
            fault = self.hub.fail_next.pop(route, None)
            if fault is not None:
                raise Reply(fault, f"injected failure on {route}", headers={"Retry-After": "0"})
            status = handler(body, *args) or 200
        except Reply as reply:
            status = reply.status
            headers = {**reply.headers}
            if reply.code:
                headers["X-Error-Code"] = reply.code
            headers["X-Error-Message"] = reply.message
            self._send_json(reply.status, {"error": reply.message, **reply.extra}, headers)
        except _Drop:
            status = 0
            self.close_connection = True
        finally:
            self.hub.requests.append(RequestRecord(method, split.path, route, status))

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks, total = [], 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > self.hub.max_body:
                    self.close_connection = True
                    raise Reply(413, "Payload too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.hub.max_body:
            self.close_connection = True
            raise Reply(413, "Payload too large")
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, data: bytes, headers: dict[str, str], content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers or {}, "application/json")

    def _route(self, method: str, segs: list[str]) -> tuple[str, Any, tuple]:
        if segs[:2] == ["api", "whoami-v2"] and method == "GET":
            return "whoami", self._whoami, ()
        if segs[:3] == ["api", "repos", "create"] and method == "POST":
            return "create_repo", self._create_repo, ()
        if segs[:2] == ["api", "validate-yaml"] and method == "POST":
            return "validate_yaml", self._validate_yaml, ()
        if len(segs) >= 4 and segs[:2] == ["api", "models"]:
            repo_id, rest = f"{segs[2]}/{segs[3]}", segs[4:]
            if not rest and method == "GET":
                return "info", self._info, (repo_id, "main")
            op = rest[0]
            if op == "revision" and len(rest) == 2 and method == "GET":
                return "info", self._info, (repo_id, rest[1])
            if op == "tree" and len(rest) >= 2 and method == "GET":
                return "tree", self._tree, (repo_id, rest[1], "/".join(rest[2:]))
            if op == "refs" and method == "GET":
                return "refs", self._refs, (repo_id,)
            if op == "commits" and len(rest) == 2 and method == "GET":
                return "commits", self._commits, (repo_id, rest[1])
            if op == "preupload" and len(rest) == 2 and method == "POST":
                return "preupload", self._preupload, (repo_id, rest[1])
            if op == "commit" and len(rest) == 2 and method == "POST":
                return "commit", self._commit, (repo_id, rest[1])
            if op == "branch" and len(rest) == 2 and method in ("POST", "DELETE"):
                return "branch", self._branch, (repo_id, rest[1], method)
            if op == "paths-info" and len(rest) == 2 and method == "POST":
                return "paths_info", self._paths_info, (repo_id, rest[1])
        if segs[:2] == ["api", "collections"]:
            if len(segs) == 2 and method == "POST":
                return "collection_create", self._collection_create, ()
            slug = "/".join(segs[2:4])
            if len(segs) == 4 and method == "GET":
                return "collection_get", self._collection_get, (slug,)
            if len(segs) == 5 and segs[4] == "items" and method == "POST":
                return "collection_item_add", self._collection_item_add, (slug,)
            if len(segs) == 6 and segs[4] == "items" and method in ("PATCH", "DELETE"):
                route = "collection_item_update" if method == "PATCH" else "collection_item_delete"
                return route, self._collection_item_change, (slug, segs[5], method)
        if segs[:1] == ["_lfs"] and len(segs) == 4 and method == "PUT":
            return "lfs_put", self._lfs_put, (f"{segs[1]}/{segs[2]}", segs[3])
        if len(segs) == 6 and segs[1].endswith(".git") and segs[2:5] == ["info", "lfs", "objects"]:
            repo_id = f"{segs[0]}/{segs[1][: -len('.git')]}"
            if segs[5] == "batch" and method == "POST":
                return "lfs_batch", self._lfs_batch, (repo_id,)
            if segs[5] == "verify" and method == "POST":
                return "lfs_verify", self._lfs_verify, (repo_id,)
        if len(segs) >= 5 and segs[2] == "resolve" and method in ("GET", "HEAD"):
            return "resolve", self._resolve_file, (f"{segs[0]}/{segs[1]}", segs[3], "/".join(segs[4:]))
        raise Reply(404, f"no route for {method} /{'/'.join(segs)}")

    def _json(self, body: bytes) -> Any:
        try:
            return json.loads(body or b"{}")
        except ValueError as exc:
            raise Reply(400, "body is not JSON") from exc

    # ---- routes --------------------------------------------------------------------------------
    def _whoami(self, body: bytes) -> None:
        user = self.hub._user(self.headers, write=False)
        if user is None:
            raise Reply(401, "You must be authenticated to access this resource")
        role = "write" if self.hub.tokens[self.headers["Authorization"].split(" ", 1)[1]][1] else "read"
        self._send_json(
            200,
            {
                "type": "user",
                "name": user,
                "fullname": user,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": role}},
            },
        )

    def _validate_yaml(self, body: bytes) -> None:
        self._send_json(200, {"errors": [], "warnings": []})

    def _create_repo(self, body: bytes) -> None:
        hub = self.hub
        user = hub._user(self.headers, write=True)
        payload = self._json(body)
        if payload.get("type") not in (None, "model"):
            raise Reply(400, "this test server only hosts model repos")
        repo_id = f"{payload.get('organization') or user}/{payload['name']}"
        private = payload.get("visibility", "private" if payload.get("private") else "public") == "private"
        with hub.lock:
            if repo_id in hub.repos:
                # create_repo(exist_ok=True) reads the url from the 409 body
                raise Reply(409, "You already created this model repo", extra={"url": f"{hub.endpoint}/{repo_id}"})
            hub.create_repo(repo_id, private=private)
        self._send_json(200, {"url": f"{hub.endpoint}/{repo_id}", "name": repo_id, "id": repo_id})

    def _info(self, body: bytes, repo_id: str, revision: str) -> None:
        hub = self.hub
        with hub.lock:
            repo = hub._repo(repo_id, hub._user(self.headers, write=False))
            commit = hub._resolve(repo, revision)
            blobs = self.query.get("blobs", ["false"])[0].lower() == "true"
            siblings = [
                _file_json(p, e, tree=False) if blobs else {"rfilename": p} for p, e in sorted(commit.tree.items())
            ]
            self._send_json(
                200,
                {
                    "_id": repo_id,
                    "id": repo_id,
                    "modelId": repo_id,
                    "author": repo_id.split("/")[0],
                    "sha": commit.oid,
                    "private": repo.private,
                    "gated": False,
                    "disabled": False,
                    "lastModified": commit.date,
                    "createdAt": repo.created_at,
                    "downloads": 0,
                    "likes": 0,
                    "tags": [],
                    "siblings": siblings,
                },
            )

    def _tree(self, body: bytes, repo_id: str, revision: str, path: str) -> None:
        hub = self.hub
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("true", "1")
        with hub.lock:
            commit = hub._resolve(hub._repo(repo_id, hub._user(self.headers, write=False)), revision)
            prefix = f"{path.strip('/')}/" if path.strip("/") else ""
            files = {p: e for p, e in commit.tree.items() if p.startswith(prefix)}
            if prefix and not files:
                raise Reply(404, f"{path} does not exist on {revision}", "EntryNotFound")
            out, folders = [], set()
            for p, e in sorted(files.items()):
                parts = p[len(prefix) :].split("/")
                for depth in range(1, len(parts)):
                    if depth == 1 or recursive:
                        folders.add(prefix + "/".join(parts[:depth]))
                if len(parts) == 1 or recursive:
                    out.append(_file_json(p, e, tree=True))
            for folder in sorted(folders):
                inner = "".join(f"{p}{e.oid}" for p, e in sorted(files.items()) if p.startswith(folder + "/"))
                out.append({"type": "directory", "oid": hashlib.sha1(inner.encode()).hexdigest(), "path": folder})
        self._send_json(200, out)

    def _paths_info(self, body: bytes, repo_id: str, revision: str) -> None:
        hub = self.hub
        ctype = self.headers.get("Content-Type", "")
        form = self._json(body) if "json" in ctype else parse_qs(body.decode())
        with hub.lock:
            commit = hub._resolve(hub._repo(repo_id, hub._user(self.headers, write=False)), revision)
            out = [_file_json(p, commit.tree[p], tree=True) for p in form.get("paths", []) if p in commit.tree]
        self._send_json(200, out)

    def _refs(self, body: bytes, repo_id: str) -> None:
        hub = self.hub
        with hub.lock:
            repo = hub._repo(repo_id, hub._user(self.headers, write=False))
            branches = [
                {"name": n, "ref": f"refs/heads/{n}", "targetCommit": c}
                for n, c in repo.refs.items()
                if not n.startswith("refs/")
            ]
            prs = [{"name": n, "ref": n, "targetCommit": c} for n, c in repo.refs.items() if n.startswith("refs/pr/")]
        self._send_json(200, {"branches": branches, "converts": [], "tags": [], "pullRequests": prs})

    def _commits(self, body: bytes, repo_id: str, revision: str) -> None:
        hub = self.hub
        with hub.lock:
            hub._repo(repo_id, hub._user(self.headers, write=False))
            history = hub.history(repo_id, revision)
        self._send_json(
            200,
            [
                {"id": c.oid, "title": c.title, "message": c.message, "date": c.date, "authors": [{"user": c.author}]}
                for c in history
            ],
        )

    def _branch(self, body: bytes, repo_id: str, branch: str, method: str) -> None:
        hub = self.hub
        with hub.lock:
            repo = hub._repo(repo_id, hub._user(self.headers, write=True))
            if method == "DELETE":
                if branch not in repo.refs or branch == "main":
                    raise Reply(404, f"Invalid rev id: {branch}", "RevisionNotFound")
                del repo.refs[branch]
            else:
                if branch in repo.refs:
                    raise Reply(409, f"Reference already exists: refs/heads/{branch}")
                start = self._json(body).get("startingPoint") or "main"
                repo.refs[branch] = hub._resolve(repo, start).oid
        self._send_json(200, {})

    def _preupload(self, body: bytes, repo_id: str, revision: str) -> None:
        hub = self.hub
        with hub.lock:
            commit = hub._resolve(hub._repo(repo_id, hub._user(self.headers, write=True)), revision)
            files = []
            for f in self._json(body).get("files", []):
                sample = base64.b64decode(f.get("sample", ""))
                remote = commit.tree.get(f["path"])
                oid = None if remote is None else (remote.sha256 if remote.lfs else remote.oid)
                files.append(
                    {
                        "path": f["path"],
                        "uploadMode": hub._upload_mode(commit, f["path"], f["size"], sample),
                        "shouldIgnore": False,
                        "oid": oid,
                    }
                )
        self._send_json(200, {"files": files, "commitOid": commit.oid})

    def _lfs_batch(self, body: bytes, repo_id: str) -> None:
        hub = self.hub
        payload = self._json(body)
        with hub.lock:
            repo = hub._repo(repo_id, hub._user(self.headers, write=payload.get("operation") == "upload"))
            objects = []
            for obj in payload.get("objects", []):
                entry: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
                if obj["oid"] not in repo.lfs_oids:
                    href = f"{hub.endpoint}/_lfs/{repo_id}/{obj['oid']}?sig={hub._upload_sig}"
                    verify = f"{hub.endpoint}/{repo_id}.git/info/lfs/objects/verify"
                    entry["actions"] = {"upload": {"href": href, "header": {}}, "verify": {"href": verify}}
                objects.append(entry)
        self._send(
            200, json.dumps({"transfer": "basic", "objects": objects}).encode(), {}, "application/vnd.git-lfs+json"
        )

    def _lfs_put(self, body: bytes, repo_id: str, oid: str) -> None:
        hub = self.hub
        if self.query.get("sig", [""])[0] != hub._upload_sig:
            raise Reply(403, "bad upload signature")
        with hub.lock:
            fault = hub.lfs_put_faults.popleft() if hub.lfs_put_faults else None
        if fault == "drop":
            raise _Drop()
        if fault is not None:
            raise Reply(int(fault), "injected LFS upload failure", headers={"Retry-After": "0"})
        if hashlib.sha256(body).hexdigest() != oid:
            raise Reply(400, "sha256 of the uploaded content does not match the oid")
        with hub.lock:
            hub._store(body)
            hub._repo(repo_id, hub.user).lfs_oids.add(oid)
            hub.lfs_uploads += 1
        self._send(200, b"", {"ETag": f'"{oid}"'}, "text/plain")

    def _lfs_verify(self, body: bytes, repo_id: str) -> None:
        hub = self.hub
        payload = self._json(body)
        with hub.lock:
            repo = hub._repo(repo_id, hub._user(self.headers, write=True))
            if payload.get("oid") not in repo.lfs_oids:
                raise Reply(404, "object not uploaded")
        self._send_json(200, {})

    def _commit(self, body: bytes, repo_id: str, revision: str) -> None:
        hub = self.hub
        create_pr = self.query.get("create_pr", ["0"])[0] in ("1", "true", "True")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise Reply(400, "first NDJSON line must be the header")
        header = lines[0]["value"]
        hub.commit_requests.append(
            CommitRequest(
                repo_id=repo_id,
                revision=unquote(revision),
                create_pr=create_pr,
                parent_commit=header.get("parentCommit"),
                added=tuple(ln["value"]["path"] for ln in lines[1:] if ln.get("key") in ("file", "lfsFile")),
                deleted=tuple(ln["value"]["path"] for ln in lines[1:] if str(ln.get("key")).startswith("deleted")),
            )
        )
        with hub.lock:
            user = hub._user(self.headers, write=True)
            repo = hub._repo(repo_id, user)
            branch = unquote(revision)
            if branch not in repo.refs:
                raise Reply(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            if hub.race_next_commit:
                hub.commit(repo_id, hub.race_next_commit, revision=branch, title="a concurrent commit")
                hub.race_next_commit = {}
            parent = header.get("parentCommit")
            if parent is not None and not create_pr and not repo.refs[branch].startswith(parent):
                # the Hub's own answer when the branch moved since the client read it
                raise Reply(412, "A commit has happened since. Please refresh and try again.")
            base = hub._resolve(repo, parent) if parent is not None else repo.commits[repo.refs[branch]]
            tree = dict(base.tree)
            for line in lines[1:]:
                key, value = line.get("key"), line.get("value", {})
                path = value.get("path", "")
                if key == "file":
                    data = base64.b64decode(value["content"])
                    tree[path] = FileEntry(hub._store(data), len(data), False, git_blob_sha1(data))
                elif key == "lfsFile":
                    sha = value["oid"]
                    if sha not in repo.lfs_oids:
                        raise Reply(422, f"LFS object {sha} for {path} was never uploaded")
                    size = (hub.root / "objects" / sha).stat().st_size
                    tree[path] = FileEntry(sha, size, True, git_blob_sha1(lfs_pointer(sha, size)))
                elif key == "deletedFile":
                    if tree.pop(path, None) is None:
                        raise Reply(404, "A file with this name doesn't exist", "EntryNotFound")
                elif key == "deletedFolder":
                    tree = {p: e for p, e in tree.items() if not p.startswith(path.rstrip("/") + "/")}
                else:
                    raise Reply(400, f"unknown NDJSON key {key!r}")
            for path, data in hub.tamper_next_commit.items():
                tree[path] = FileEntry(hub._store(data), len(data), False, git_blob_sha1(data))
            hub.tamper_next_commit = {}
            commit = hub._new_commit(
                repo, base.oid, tree, header.get("summary", ""), header.get("description", ""), user or hub.user
            )
            pr_url = None
            if create_pr:
                number, repo.next_pr = repo.next_pr, repo.next_pr + 1
                repo.refs[f"refs/pr/{number}"] = commit.oid
                pr_url = f"{hub.endpoint}/{repo_id}/discussions/{number}"
            else:
                repo.refs[branch] = commit.oid
            hub.commits_made += 1
        self._send_json(
            200,
            {
                "success": True,
                "commitOid": commit.oid,
                "pullRequestUrl": pr_url,
                "commitUrl": f"{hub.endpoint}/{repo_id}/commit/{commit.oid}",
                "hookOutput": "",
            },
        )

    # ---- collections ----------------------------------------------------------------------------
    def _collection(self, slug: str) -> dict[str, Any]:
        collection = self.hub.collections.get(slug)
        if collection is None:
            raise Reply(404, "Collection not found", "CollectionNotFound")
        return collection

    def _collection_create(self, body: bytes) -> None:
        hub = self.hub
        user = hub._user(self.headers, write=True)
        payload = self._json(body)
        namespace, title = payload.get("namespace") or user, payload.get("title") or ""
        if not title:
            raise Reply(400, "title is required")
        with hub.lock:
            for slug, existing in hub.collections.items():
                if existing["owner"]["name"] == namespace and existing["title"] == title:
                    # the Hub answers 409 with the existing slug; create_collection(exists_ok=True) reads it
                    raise Reply(409, "Collection already exists", extra={"slug": slug})
            words = "-".join("".join(c if c.isalnum() else " " for c in title.lower()).split())
            slug = f"{namespace}/{words}-{secrets.token_hex(12)}"
            hub.collections[slug] = {
                "slug": slug,
                "title": title,
                "description": payload.get("description"),
                "owner": {"name": namespace, "type": "user"},
                "items": [],
                "lastUpdated": _now(),
                "position": 0,
                "private": bool(payload.get("private")),
                "theme": "indigo",
                "upvotes": 0,
            }
            collection = json.loads(json.dumps(hub.collections[slug]))
        self._send_json(200, collection)

    def _collection_get(self, body: bytes, slug: str) -> None:
        with self.hub.lock:
            collection = json.loads(json.dumps(self._collection(slug)))
        self._send_json(200, collection)

    def _collection_item_add(self, body: bytes, slug: str) -> None:
        hub = self.hub
        hub._user(self.headers, write=True)
        payload = self._json(body)
        item, note = payload.get("item") or {}, payload.get("note")
        with hub.lock:
            collection = self._collection(slug)
            if item.get("type") != "model" or item.get("id") not in hub.repos:
                raise Reply(404, f"Model {item.get('id')} not found", "RepoNotFound")
            if any(i["id"] == item["id"] and i["type"] == "model" for i in collection["items"]):
                raise Reply(409, "Item already in the collection")
            collection["items"].append(
                {
                    "_id": secrets.token_hex(12),
                    "id": item["id"],
                    "type": "model",
                    "position": len(collection["items"]),
                    **({"note": {"text": note, "html": note}} if note is not None else {}),
                }
            )
            collection["lastUpdated"] = _now()
            out = json.loads(json.dumps(collection))
        self._send_json(200, out)

    def _collection_item_change(self, body: bytes, slug: str, item_object_id: str, method: str) -> None:
        hub = self.hub
        hub._user(self.headers, write=True)
        payload = self._json(body) if method == "PATCH" else {}
        with hub.lock:
            collection = self._collection(slug)
            found = [i for i in collection["items"] if i["_id"] == item_object_id]
            if not found:
                raise Reply(404, "Item not found in the collection")
            if method == "DELETE":
                collection["items"].remove(found[0])
            elif "note" in payload:
                found[0]["note"] = {"text": payload["note"], "html": payload["note"]}
            collection["lastUpdated"] = _now()
        self._send_json(200, {"success": True})

    def _resolve_file(self, body: bytes, repo_id: str, revision: str, path: str) -> None:
        hub = self.hub
        with hub.lock:
            commit = hub._resolve(hub._repo(repo_id, hub._user(self.headers, write=False)), revision)
            entry = commit.tree.get(path)
            if entry is None:
                raise Reply(
                    404, f"{path} does not exist on {revision}", "EntryNotFound", headers={"X-Repo-Commit": commit.oid}
                )
            data = hub._read(entry.sha256)
        headers = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes"}
        if entry.lfs:
            headers.update(
                {"ETag": f'"{entry.sha256}"', "X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)}
            )
        else:
            headers["ETag"] = f'"{entry.oid}"'
        status, rng = 200, self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            first, _, last = rng[len("bytes=") :].split(",")[0].partition("-")
            start = int(first) if first else max(len(data) - int(last), 0)
            end = int(last) if first and last else len(data) - 1
            if start >= len(data) and len(data) > 0:
                raise Reply(416, "range not satisfiable", headers={"Content-Range": f"bytes */{len(data)}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start : end + 1], 206
        self._send(status, data, headers, "application/octet-stream")


class _Drop(Exception):
    """Close the connection without sending any response."""


@contextlib.contextmanager
def running_hub_server(root: Path | None = None, **kwargs: Any) -> Iterator[HubServer]:
    """A started HubServer, shut down (and its objects removed if root is None) on exit."""
    server = HubServer(root, **kwargs).start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def hub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    """A fresh local Hub on 127.0.0.1 for one test: `.endpoint`, `.token`, knobs and helpers."""
    with running_hub_server(tmp_path_factory.mktemp("hubserver")) as server:
        yield server
