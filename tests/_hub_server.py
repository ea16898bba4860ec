"""A small Hugging Face Hub on 127.0.0.1 that the real ``huggingface_hub`` and ``datasets`` clients talk to.

It implements the routes those clients call while pushing (``DatasetDict.push_to_hub``) and loading
(``datasets.load_dataset(repo_id)``), with git-like semantics: every commit gets a sha1 id and a full
file map, branches point at commits, regular files are git blobs and large files are LFS objects kept
in a content-addressed store. LFS bytes are served from a second origin (``cdn``), like the real Hub
redirects to its CDN, so the client's cross-host redirect handling is exercised too.

Tests steer it with:

* ``add_user(name, token)``: who may call; ``whoami`` answers with that user and writes are only
  allowed inside the user's namespace (anything else is a 403);
* ``fail(route, status=..., times=..., skip=..., hang=...)``: the next ``times`` requests to a named
  route (after ``skip`` of them went through) get ``status`` or hang for ``hang`` seconds;
* ``stop()``: closes the socket, so clients see "connection refused";
* ``requests`` / ``unknown_routes``: what was called. Unknown routes get a 404 and are logged loudly.

Route names: whoami, create_repo, repo_info, preupload, validate_yaml, lfs_batch, lfs_upload,
lfs_verify, lfs_download, commit, tree, paths_info, commits, resolve, agent_harnesses.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

log = logging.getLogger("hub_server")

# Paths the Hub stores with LFS by default (a subset of the .gitattributes it writes on repo creation).
LFS_SUFFIXES = (".parquet", ".arrow", ".png", ".jpg", ".jpeg", ".bin", ".safetensors", ".zip", ".gz")
LFS_THRESHOLD = 10 * 1024 * 1024  # larger files go to LFS whatever their name
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES).encode()
REPO_TYPES = {"datasets": "dataset", "models": "model", "spaces": "space"}


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One file in one commit: a git blob (``sha256`` None) or an LFS pointer to ``sha256``."""

    oid: str  # git blob id (of the content, or of the LFS pointer)
    size: int
    sha256: str | None = None

    @property
    def is_lfs(self) -> bool:
        return self.sha256 is not None


@dataclasses.dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    description: str
    date: str
    files: dict[str, Entry]
    touched: frozenset[str]  # paths added, changed or deleted by this commit


@dataclasses.dataclass
class Repo:
    type: str  # "dataset", "model", "space"
    id: str  # "namespace/name"
    private: bool
    created: str
    commits: dict[str, Commit] = dataclasses.field(default_factory=dict)
    refs: dict[str, str] = dataclasses.field(default_factory=dict)  # branch -> commit oid
    lfs_objects: set[str] = dataclasses.field(default_factory=set)  # sha256 of objects uploaded to this repo

    @property
    def namespace(self) -> str:
        return self.id.split("/")[0]

    def resolve(self, revision: str) -> Commit | None:
        if revision in self.refs:
            return self.commits[self.refs[revision]]
        if re.fullmatch(r"[0-9a-f]{7,40}", revision):
            matches = [c for oid, c in self.commits.items() if oid.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        return None


@dataclasses.dataclass
class Fault:
    route: str
    status: int | None
    times: int
    skip: int
    hang: float
    headers: dict[str, str]
    method: str | None
    message: str | None


@dataclasses.dataclass
class Hook:
    route: str
    fn: Callable[[], None]
    times: int
    skip: int


class HubError(Exception):
    """Turned into an HTTP error response shaped like the Hub's (X-Error-Code / X-Error-Message headers)."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class LocalHub:
    """The Hub's state plus two HTTP servers: the API (``url``) and the LFS storage/CDN (``cdn_url``)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self._tmp = None if root else tempfile.TemporaryDirectory(prefix="localhub-")
        self.root = Path(root or self._tmp.name)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        (self.root / "lfs").mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.users: dict[str, str] = {}  # token -> user name
        self.repos: dict[tuple[str, str], Repo] = {}
        self.faults: list[Fault] = []
        self.hooks: list[Hook] = []
        self.requests: list[dict] = []  # {"method", "route", "path", "status"}
        self.unknown_routes: list[str] = []
        self._secret = secrets.token_bytes(16)
        self._released = threading.Event()  # set on stop(): lets hanging handlers go
        self._api = _Server(self, "api")
        self._cdn = _Server(self, "cdn")

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> "LocalHub":
        self._api.start()
        self._cdn.start()
        return self

    def stop(self) -> None:
        self._released.set()
        self._api.stop()
        self._cdn.stop()

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def url(self) -> str:
        return self._api.url

    @property
    def cdn_url(self) -> str:
        return self._cdn.url

    # ---------------------------------------------------------------- test controls

    def add_user(self, name: str, token: str) -> None:
        with self.lock:
            self.users[token] = name

    def fail(
        self,
        route: str,
        status: int | None = 500,
        *,
        times: int = 1,
        skip: int = 0,
        hang: float = 0.0,
        headers: dict[str, str] | None = None,
        method: str | None = None,
        message: str | None = None,
    ) -> None:
        """Make the next ``times`` requests to ``route`` (after ``skip`` good ones) fail or hang.

        ``hang`` > 0 holds the request that long (or until stop()) before answering ``status``
        (or, with ``status=None``, before serving it normally). ``message`` replaces the error text.
        """
        with self.lock:
            self.faults.append(Fault(route, status, times, skip, hang, dict(headers or {}), method, message))

    def before(self, route: str, fn: Callable[[], None], *, times: int = 1, skip: int = 0) -> None:
        """Run ``fn`` before serving the next ``times`` requests to ``route`` (e.g. a concurrent commit)."""
        with self.lock:
            self.hooks.append(Hook(route, fn, times, skip))

    def commit_files(self, repo_id: str, files: dict[str, bytes], title: str = "concurrent change",
                     repo_type: str = "dataset") -> str:
        """Commit small regular files on ``main`` as another client would; returns the commit id."""
        with self.lock:
            repo = self._repo(repo_type, repo_id)
            head = repo.resolve("main")
            tree = dict(head.files)
            for path, data in files.items():
                tree[path] = Entry(self._put_blob(data), len(data))
            return self._commit(repo, head, title, "", tree).oid

    def calls(self, route: str, method: str | None = None) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["route"] == route and (method is None or r["method"] == method)]

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "dataset") -> dict[str, Entry]:
        with self.lock:
            return dict(self._repo(repo_type, repo_id).resolve(revision).files)

    def read(self, repo_id: str, path: str, revision: str = "main", repo_type: str = "dataset") -> bytes:
        with self.lock:
            entry = self.files(repo_id, revision, repo_type)[path]
            return self._content(entry)

    def history(self, repo_id: str, repo_type: str = "dataset") -> list[Commit]:
        """Commits of ``main``, newest first."""
        with self.lock:
            repo = self._repo(repo_type, repo_id)
            out, oid = [], repo.refs.get("main")
            while oid:
                out.append(repo.commits[oid])
                oid = repo.commits[oid].parent
            return out

    def create_repo(self, repo_id: str, repo_type: str = "dataset", private: bool = False) -> Repo:
        """Create a repo directly (e.g. one owned by another user)."""
        with self.lock:
            return self._create_repo(repo_type, repo_id, private)

    # ---------------------------------------------------------------- storage

    def _repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _put_blob(self, data: bytes) -> str:
        oid = git_blob_oid(data)
        path = self.root / "blobs" / oid
        if not path.exists():
            tmp = path.with_suffix(".tmp" + secrets.token_hex(4))
            tmp.write_bytes(data)
            tmp.replace(path)
        return oid

    def _content(self, entry: Entry) -> bytes:
        if entry.is_lfs:
            return (self.root / "lfs" / entry.sha256).read_bytes()
        return (self.root / "blobs" / entry.oid).read_bytes()

    def _lfs_path(self, sha256: str) -> Path:
        return self.root / "lfs" / sha256

    def _create_repo(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        if (repo_type, repo_id) in self.repos:
            raise HubError(409, "You already created this dataset repo", None)
        repo = Repo(type=repo_type, id=repo_id, private=private, created=now_iso())
        self.repos[(repo_type, repo_id)] = repo
        oid = self._put_blob(GITATTRIBUTES)
        self._commit(repo, None, "initial commit", "", {".gitattributes": Entry(oid, len(GITATTRIBUTES))})
        return repo

    def _commit(self, repo: Repo, parent: Commit | None, title: str, description: str, files: dict[str, Entry]) -> Commit:
        before = parent.files if parent else {}
        touched = frozenset(p for p in set(before) | set(files) if before.get(p) != files.get(p))
        date = now_iso()
        tree = "\n".join(f"{p} {e.oid}" for p, e in sorted(files.items()))
        raw = f"tree {hashlib.sha1(tree.encode()).hexdigest()}\nparent {parent.oid if parent else ''}\n"
        raw += f"date {date} {secrets.token_hex(8)}\n\n{title}\n\n{description}"
        commit = Commit(hashlib.sha1(raw.encode()).hexdigest(), parent.oid if parent else None, title, description, date, files, touched)
        repo.commits[commit.oid] = commit
        repo.refs["main" if parent is None else self._branch_of(repo, parent)] = commit.oid
        return commit

    @staticmethod
    def _branch_of(repo: Repo, commit: Commit) -> str:
        for branch, oid in repo.refs.items():
            if oid == commit.oid:
                return branch
        raise HubError(400, "Can only commit on top of a branch head", None)

    def _sign(self, *parts: str) -> str:
        return hmac.new(self._secret, "/".join(parts).encode(), hashlib.sha256).hexdigest()[:32]


class _Server:
    def __init__(self, hub: LocalHub, role: str):
        self.hub, self.role = hub, role
        self.httpd: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        handler = type(f"{self.role.title()}Handler", (_Handler,), {"hub": self.hub, "role": self.role})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=f"localhub-{self.role}", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


class _Handler(BaseHTTPRequestHandler):
    hub: LocalHub
    role: str
    protocol_version = "HTTP/1.1"  # keep-alive, like the Hub: httpx pools connections

    # ---------------------------------------------------------------- plumbing

    def log_message(self, format, *args):  # noqa: A002 - silence the default stderr access log
        log.debug("%s %s", self.role, format % args)

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _body(self) -> bytes:
        if getattr(self, "_cached_body", None) is not None:
            return self._cached_body
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            body = b"".join(chunks)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._cached_body = body
        return body

    def _json_body(self):
        try:
            return json.loads(self._body() or b"null")
        except json.JSONDecodeError as err:
            raise HubError(400, f"invalid JSON body: {err}") from None

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, content_type: str = "application/json"):
        self.send_response(status)
        headers = {"Content-Type": content_type, **(headers or {})}
        headers.setdefault("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._status = status

    def _send_json(self, status: int, payload, headers: dict[str, str] | None = None, content_type: str = "application/json"):
        self._send(status, json.dumps(payload).encode(), headers, content_type)

    def _send_error(self, err: HubError):
        headers = {"X-Error-Message": err.message}
        if err.code:
            headers["X-Error-Code"] = err.code
        self._send_json(err.status, {"error": err.message}, headers)

    def _user(self) -> str | None:
        """The caller, None when anonymous; an unknown token is a 401 like on the Hub."""
        auth = self.headers.get("Authorization", "")
        if not auth:
            return None
        token = auth.removeprefix("Bearer ").strip()
        with self.hub.lock:
            user = self.hub.users.get(token)
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return user

    def _readable_repo(self, repo_type: str, repo_id: str) -> Repo:
        user = self._user()
        repo = self.hub._repo(repo_type, repo_id)
        if repo.private and user != repo.namespace:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _writable_repo(self, repo_type: str, repo_id: str) -> Repo:
        user = self._user()
        if user is None:
            raise HubError(401, "You must be authenticated to write to this repo")
        repo = self._readable_repo(repo_type, repo_id)
        if user != repo.namespace:
            raise HubError(403, f"You don't have the rights to write to {repo_type}s/{repo_id}")
        return repo

    def _revision(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(unquote(revision))
        if commit is None:
            raise HubError(404, f"Invalid rev id: {unquote(revision)}", "RevisionNotFound")
        return commit

    def _run_hooks(self, route: str) -> None:
        with self.hub.lock:
            hook = next((h for h in self.hub.hooks if h.route == route and h.times > 0), None)
            if hook is None:
                return
            if hook.skip > 0:
                hook.skip -= 1
                return
            hook.times -= 1
        hook.fn()

    def _apply_fault(self, route: str, method: str) -> bool:
        """Returns True when a fault answered the request."""
        with self.hub.lock:
            fault = next(
                (f for f in self.hub.faults if f.route == route and f.method in (None, method) and f.times > 0), None
            )
            if fault is None:
                return False
            if fault.skip > 0:
                fault.skip -= 1
                return False
            fault.times -= 1
        if fault.hang:
            self.hub._released.wait(fault.hang)
        if fault.status is None:
            return False
        self._body()  # drain what the client sent so the connection stays usable
        message = fault.message or {401: "Invalid credentials in Authorization header", 429: "Too many requests"}.get(
            fault.status, f"injected {fault.status} on {route}"
        )
        headers = {"X-Error-Message": message, **fault.headers}
        self._send_json(fault.status, {"error": message}, headers)
        return True

    def _dispatch(self, method: str):
        self._cached_body = None
        self._status = 0
        split = urlsplit(self.path)
        segments = split.path.split("/")[1:]  # raw (still %-quoted) segments
        self.query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        route, handler, args = self._route(method, segments)
        try:
            if route is None:
                with self.hub.lock:
                    self.hub.unknown_routes.append(f"{self.role} {method} {self.path}")
                log.warning("LOCAL HUB: unknown route %s %s %s", self.role, method, self.path)
                self._body()
                raise HubError(404, f"local hub: no route for {method} {split.path}")
            self._run_hooks(route)
            if not self._apply_fault(route, method):
                handler(*args)
        except HubError as err:
            self._body()  # drain what the client sent so the connection stays usable
            self._send_error(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as err:  # a bug in the local hub: make it loud, not a hang
            log.exception("LOCAL HUB: handler crashed")
            self._send_json(500, {"error": f"local hub crashed: {err!r}"})
        finally:
            with self.hub.lock:
                self.hub.requests.append({"method": method, "route": route, "path": self.path, "status": self._status})

    def _route(self, method: str, s: list[str]):
        """Maps (method, path segments) to (route name, bound handler, args)."""
        if self.role == "cdn":
            if len(s) == 5 and s[0] == "upload" and method == "PUT":
                return "lfs_upload", self.lfs_upload, (REPO_TYPES.get(s[1], ""), f"{unquote(s[2])}/{unquote(s[3])}", s[4])
            if len(s) == 2 and s[0] == "lfs" and method in ("GET", "HEAD"):
                return "lfs_download", self.lfs_download, (s[1],)
            return None, None, ()
        if s[:2] == ["api", "whoami-v2"] and method == "GET":
            return "whoami", self.whoami, ()
        if s[:3] == ["api", "repos", "create"] and method == "POST":
            return "create_repo", self.create_repo, ()
        if s[:2] == ["api", "validate-yaml"] and method == "POST":
            return "validate_yaml", self.validate_yaml, ()
        if s[:2] == ["api", "agent-harnesses"] and method == "GET":
            return "agent_harnesses", self.agent_harnesses, ()
        if len(s) >= 4 and s[0] == "api" and s[1] in REPO_TYPES:
            repo_type, repo_id, rest = REPO_TYPES[s[1]], f"{unquote(s[2])}/{unquote(s[3])}", s[4:]
            if not rest and method == "GET":
                return "repo_info", self.repo_info, (repo_type, repo_id, "main")
            if len(rest) == 2 and rest[0] == "revision" and method == "GET":
                return "repo_info", self.repo_info, (repo_type, repo_id, rest[1])
            if len(rest) == 2 and rest[0] == "preupload" and method == "POST":
                return "preupload", self.preupload, (repo_type, repo_id, rest[1])
            if len(rest) == 2 and rest[0] == "commit" and method == "POST":
                return "commit", self.commit, (repo_type, repo_id, rest[1])
            if len(rest) >= 2 and rest[0] == "tree" and method == "GET":
                return "tree", self.tree, (repo_type, repo_id, rest[1], unquote("/".join(rest[2:])))
            if len(rest) == 2 and rest[0] == "paths-info" and method == "POST":
                return "paths_info", self.paths_info, (repo_type, repo_id, rest[1])
            if len(rest) == 2 and rest[0] == "commits" and method == "GET":
                return "commits", self.list_commits, (repo_type, repo_id, rest[1])
            return None, None, ()
        # /{datasets/}{ns}/{name}.git/info/lfs/objects/{batch,verify}
        prefix = 1 if s and s[0] in REPO_TYPES else 0
        repo_type = REPO_TYPES[s[0]] if prefix else "model"
        rest = s[prefix:]
        if len(rest) == 6 and rest[1].endswith(".git") and rest[2:5] == ["info", "lfs", "objects"] and method == "POST":
            repo_id = f"{unquote(rest[0])}/{unquote(rest[1][:-4])}"
            if rest[5] == "batch":
                return "lfs_batch", self.lfs_batch, (repo_type, repo_id)
            if rest[5] == "verify":
                return "lfs_verify", self.lfs_verify, (repo_type, repo_id)
        # /{datasets/}{ns}/{name}/resolve/{revision}/{path...}
        if len(rest) >= 5 and rest[2] == "resolve" and method in ("GET", "HEAD"):
            repo_id = f"{unquote(rest[0])}/{unquote(rest[1])}"
            return "resolve", self.resolve, (repo_type, repo_id, rest[3], unquote("/".join(rest[4:])))
        return None, None, ()

    # ---------------------------------------------------------------- API routes

    def whoami(self):
        user = self._user()
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        self._send_json(200, {
            "type": "user", "id": hashlib.sha1(user.encode()).hexdigest()[:24], "name": user, "fullname": user.title(),
            "email": f"{user}@example.invalid", "emailVerified": True, "isPro": False, "orgs": [],
            "auth": {"type": "access_token", "accessToken": {"displayName": "tests", "role": "write"}},
        })

    def agent_harnesses(self):
        # huggingface_hub fetches this registry (once a day) to tag its user agent; an empty one means "no agent".
        self._send_json(200, {"standardEnvVars": ["AI_AGENT", "AGENT"], "harnesses": {}})

    def create_repo(self):
        user = self._user()
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        payload = self._json_body() or {}
        namespace = payload.get("organization") or user
        repo_type = payload.get("type") or "model"
        name = payload.get("name") or ""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}", name) or "--" in name or ".." in name:
            raise HubError(400, f"Invalid repo name: {name!r}")
        if namespace != user:
            raise HubError(403, f'You don\'t have the rights to create a {repo_type} under the namespace "{namespace}"')
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        repo_id = f"{namespace}/{name}"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        with self.hub.lock:
            repo = self.hub._create_repo(repo_type, repo_id, private)
        self._send_json(200, {"url": f"{self.hub.url}/{prefix}{repo.id}", "name": repo.id, "id": repo.id})

    def validate_yaml(self):
        payload = self._json_body() or {}
        content = payload.get("content", "")
        match = re.match(r"^---\n(.*?)\n---", content, re.S)
        try:
            if match:
                yaml.safe_load(match.group(1))
        except yaml.YAMLError as err:
            self._send_json(400, {"errors": [{"message": str(err)}], "warnings": []})
            return
        self._send_json(200, {"errors": [], "warnings": []})

    def repo_info(self, repo_type: str, repo_id: str, revision: str):
        with self.hub.lock:
            repo = self._readable_repo(repo_type, repo_id)
            commit = self._revision(repo, revision)
            card = None
            if "README.md" in commit.files:
                text = self.hub._content(commit.files["README.md"]).decode("utf-8", "replace")
                match = re.match(r"^---\n(.*?)\n---", text, re.S)
                try:
                    card = yaml.safe_load(match.group(1)) if match else None
                except yaml.YAMLError:
                    card = None
            siblings = [
                {"rfilename": p, "size": e.size, "blobId": e.oid,
                 **({"lfs": {"sha256": e.sha256, "size": e.size, "pointerSize": len(lfs_pointer(e.sha256, e.size))}} if e.is_lfs else {})}
                for p, e in sorted(commit.files.items())
            ]
            info = {
                "_id": hashlib.sha1(repo.id.encode()).hexdigest()[:24], "id": repo.id, "author": repo.namespace,
                "sha": commit.oid, "lastModified": commit.date, "createdAt": repo.created, "private": repo.private,
                "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
                "siblings": siblings, "usedStorage": sum(e.size for e in commit.files.values()),
            }
            if isinstance(card, dict):
                info["cardData"] = card
        self._send_json(200, info)

    def preupload(self, repo_type: str, repo_id: str, revision: str):
        payload = self._json_body() or {}
        with self.hub.lock:
            repo = self._writable_repo(repo_type, repo_id)
            commit = self._revision(repo, revision)
            files = []
            for f in payload.get("files", []):
                path, size = f["path"], int(f["size"])
                lfs = size > LFS_THRESHOLD or path.lower().endswith(LFS_SUFFIXES)
                existing = commit.files.get(path)
                oid = None
                if existing is not None:
                    oid = existing.sha256 if existing.is_lfs else existing.oid
                files.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._send_json(200, {"files": files, "commitOid": commit.oid})

    def lfs_batch(self, repo_type: str, repo_id: str):
        payload = self._json_body() or {}
        if payload.get("operation") != "upload":
            raise HubError(400, "only the upload operation is supported by the local hub")
        objects = []
        with self.hub.lock:
            repo = self._writable_repo(repo_type, repo_id)
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            for obj in payload.get("objects", []):
                oid, size = obj["oid"], int(obj["size"])
                if oid in repo.lfs_objects and self.hub._lfs_path(oid).exists():
                    objects.append({"oid": oid, "size": size})  # already there: no actions, the client skips it
                    continue
                sig = self.hub._sign(repo_type, repo_id, oid, str(size))
                upload = f"{self.hub.cdn_url}/upload/{repo_type}s/{quote(repo.namespace)}/{quote(repo_id.split('/')[1])}/{oid}?size={size}&sig={sig}"
                objects.append({
                    "oid": oid, "size": size, "authenticated": True,
                    "actions": {
                        "upload": {"href": upload},
                        "verify": {"href": f"{self.hub.url}/{prefix}{repo_id}.git/info/lfs/objects/verify"},
                    },
                })
        self._send_json(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                        content_type="application/vnd.git-lfs+json")

    def lfs_upload(self, repo_type: str, repo_id: str, oid: str):
        size = int(self.query.get("size", "-1"))
        if not hmac.compare_digest(self.query.get("sig", ""), self.hub._sign(repo_type, repo_id, oid, str(size))):
            raise HubError(403, "bad upload signature")
        data = self._body()
        if len(data) != size or hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, f"uploaded content does not match oid {oid} / size {size}")
        path = self.hub._lfs_path(oid)
        tmp = path.with_name(f".{oid}.{secrets.token_hex(4)}")
        tmp.write_bytes(data)
        tmp.replace(path)
        with self.hub.lock:
            self.hub._repo(repo_type, repo_id).lfs_objects.add(oid)
        self._send(200, b"", {"ETag": f'"{hashlib.md5(data).hexdigest()}"'})

    def lfs_verify(self, repo_type: str, repo_id: str):
        payload = self._json_body() or {}
        with self.hub.lock:
            repo = self._writable_repo(repo_type, repo_id)
            oid = payload.get("oid", "")
            path = self.hub._lfs_path(oid)
            if oid not in repo.lfs_objects or not path.exists() or path.stat().st_size != payload.get("size"):
                raise HubError(404, f"LFS object {oid} not found")
        self._send_json(200, {"success": True})

    def commit(self, repo_type: str, repo_id: str, revision: str):
        if self.query.get("create_pr"):
            raise HubError(400, "pull requests are not supported by the local hub")
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        with self.hub.lock:
            repo = self._writable_repo(repo_type, repo_id)
            head = self._revision(repo, revision)
            branch = unquote(revision)
            if branch not in repo.refs:
                raise HubError(400, f"can only commit to a branch, not {branch}")
            parent = header.get("parentCommit")
            if parent and not head.oid.startswith(parent):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(head.files)
            for op in lines[1:]:
                key, value = op["key"], op["value"]
                path = value["path"]
                if key == "file":
                    data = base64.b64decode(value["content"]) if value.get("encoding") == "base64" else value["content"].encode()
                    files[path] = Entry(self.hub._put_blob(data), len(data))
                elif key == "lfsFile":
                    sha = value["oid"]
                    if sha not in repo.lfs_objects or not self.hub._lfs_path(sha).exists():
                        raise HubError(422, f"Your push was rejected because an LFS pointer pointed to a file that does not exist ({path})")
                    size = self.hub._lfs_path(sha).stat().st_size
                    files[path] = Entry(git_blob_oid(lfs_pointer(sha, size)), size, sha)
                elif key == "deletedFile":
                    if path not in files:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del files[path]
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    for p in [p for p in files if p.startswith(prefix)]:
                        del files[p]
                else:
                    raise HubError(400, f"unsupported commit operation {key!r}")
            commit = self.hub._commit(repo, head, header.get("summary") or "update", header.get("description") or "", files)
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        self._send_json(200, {
            "success": True, "commitOid": commit.oid, "commitMessage": commit.title,
            "commitUrl": f"{self.hub.url}/{prefix}{repo.id}/commit/{commit.oid}", "pullRequestUrl": None,
        })

    def _path_info(self, repo: Repo, commit: Commit, path: str, expand: bool) -> dict | None:
        info: dict
        if path in commit.files:
            e = commit.files[path]
            info = {"type": "file", "oid": e.oid, "size": e.size, "path": path}
            if e.is_lfs:
                info["lfs"] = {"oid": e.sha256, "size": e.size, "pointerSize": len(lfs_pointer(e.sha256, e.size))}
        elif any(p.startswith(path + "/") for p in commit.files) or path == "":
            sub = sorted((p, e.oid) for p, e in commit.files.items() if p.startswith(path + "/"))
            info = {"type": "directory", "oid": hashlib.sha1(repr(sub).encode()).hexdigest(), "size": 0, "path": path}
        else:
            return None
        if expand:
            last = self._last_commit(repo, commit, path)
            info["lastCommit"] = {"id": last.oid, "title": last.title, "date": last.date}
        return info

    @staticmethod
    def _last_commit(repo: Repo, commit: Commit, path: str) -> Commit:
        current = commit
        while current.parent is not None:
            if any(p == path or p.startswith(path + "/") for p in current.touched):
                return current
            current = repo.commits[current.parent]
        return current

    def tree(self, repo_type: str, repo_id: str, revision: str, path: str):
        recursive = self.query.get("recursive", "").lower() in ("1", "true")
        expand = self.query.get("expand", "").lower() in ("1", "true")
        path = path.strip("/")
        with self.hub.lock:
            repo = self._readable_repo(repo_type, repo_id)
            commit = self._revision(repo, revision)
            if path and path in commit.files:
                raise HubError(404, f"{path} is a file, not a folder", "EntryNotFound")
            prefix = path + "/" if path else ""
            names: set[str] = set()
            for p in commit.files:
                if not p.startswith(prefix):
                    continue
                parts = p[len(prefix):].split("/")
                for depth in range(1, len(parts) + 1 if recursive else 2):
                    names.add(prefix + "/".join(parts[:depth]))
            if path and not names:
                raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
            entries = [self._path_info(repo, commit, n, expand) for n in sorted(names)]
        # Hub lists folders first, then files
        entries.sort(key=lambda e: (e["type"] != "directory", e["path"]))
        self._send_json(200, entries)

    def paths_info(self, repo_type: str, repo_id: str, revision: str):
        ctype = self.headers.get("Content-Type", "")
        body = self._body().decode()
        if ctype.startswith("application/json"):
            payload = json.loads(body or "{}")
            paths, expand = payload.get("paths", []), bool(payload.get("expand"))
        else:
            form = parse_qs(body)
            paths, expand = form.get("paths", []), form.get("expand", ["False"])[-1].lower() in ("1", "true")
        if isinstance(paths, str):
            paths = [paths]
        with self.hub.lock:
            repo = self._readable_repo(repo_type, repo_id)
            commit = self._revision(repo, revision)
            infos = [self._path_info(repo, commit, p.strip("/"), expand) for p in paths]
        self._send_json(200, [i for i in infos if i is not None])

    def list_commits(self, repo_type: str, repo_id: str, revision: str):
        with self.hub.lock:
            repo = self._readable_repo(repo_type, repo_id)
            commit = self._revision(repo, revision)
            out = []
            while commit is not None:
                out.append({"id": commit.oid, "title": commit.title, "message": commit.description,
                            "date": commit.date, "authors": [{"user": repo.namespace}]})
                commit = repo.commits[commit.parent] if commit.parent else None
        self._send_json(200, out)

    def resolve(self, repo_type: str, repo_id: str, revision: str, path: str):
        with self.hub.lock:
            repo = self._readable_repo(repo_type, repo_id)
            commit = self._revision(repo, revision)
            entry = commit.files.get(path)
            if entry is None:
                raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
            headers = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes"}
            if entry.is_lfs:
                # Like the Hub: LFS files are a redirect to the storage host; metadata rides on the redirect.
                location = f"{self.hub.cdn_url}/lfs/{entry.sha256}"
                headers.update({"Location": location, "ETag": f'"{entry.oid}"', "X-Linked-Etag": f'"{entry.sha256}"',
                                "X-Linked-Size": str(entry.size)})
                self._send(302, b"", headers, content_type="text/plain")
                return
            data = self.hub._content(entry)
        self._send_range(data, {**headers, "ETag": f'"{entry.oid}"'})

    # ---------------------------------------------------------------- storage routes

    def lfs_download(self, sha256: str):
        if not re.fullmatch(r"[0-9a-f]{64}", sha256) or not self.hub._lfs_path(sha256).exists():
            raise HubError(404, "no such object")
        data = self.hub._lfs_path(sha256).read_bytes()
        self._send_range(data, {"ETag": f'"{sha256}"', "Accept-Ranges": "bytes"})

    def _send_range(self, data: bytes, headers: dict[str, str]):
        rng = self.headers.get("Range")
        ctype = "application/octet-stream"
        if not rng:
            self._send(200, data, headers, content_type=ctype)
            return
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
        if not match or (not match.group(1) and not match.group(2)):
            raise HubError(416, f"bad range {rng}")
        if match.group(1):
            start = int(match.group(1))
            end = min(int(match.group(2)), len(data) - 1) if match.group(2) else len(data) - 1
        else:  # suffix range: the last N bytes
            start, end = max(len(data) - int(match.group(2)), 0), len(data) - 1
        if start >= len(data) or start > end:
            self._send(416, b"", {**headers, "Content-Range": f"bytes */{len(data)}"}, content_type=ctype)
            return
        self._send(206, data[start:end + 1], {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"}, content_type=ctype)
