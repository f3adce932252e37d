"""An in-process fake of the Hugging Face Hub's HTTP API, for tests.

The real ``huggingface_hub`` / ``datasets`` / ``transformers`` client code runs against it: the fake sits behind
huggingface_hub's public ``utils.set_client_factory`` hook as an ``httpx2.MockTransport`` (huggingface_hub 2.x talks
HTTP through ``httpx2``; ``huggingface_hub.utils.httpx`` is the same module). Nothing is mocked above the HTTP layer,
so a test through this fake exercises the clients' real request building, upload protocol (preupload -> LFS batch ->
PUT -> ndjson commit) and download protocol (HEAD/GET on ``resolve`` with ETag / X-Repo-Commit, tree listings).

Served routes (``{t}`` is ``models``/``datasets``/``spaces``, ``{p}`` the URL prefix ``""``/``datasets/``/``spaces/``):

    GET    /api/whoami-v2
    POST   /api/repos/create                 DELETE /api/repos/delete
    GET    /api/{t}/{ns}/{name}[/revision/{rev}]          (repo info, siblings; blobs=True adds sizes and LFS info)
    POST   /api/{t}/{ns}/{name}/preupload/{rev}          ("lfs" for binary, large or .gitattributes-LFS files)
    POST   /{p}{ns}/{name}.git/info/lfs/objects/batch     (git-lfs batch API, "basic" transfer)
    PUT    /__fake_lfs__/{sha256}                         (the upload href handed out by the batch API)
    POST   /api/{t}/{ns}/{name}/commit/{rev}              (ndjson: header, file, lfsFile, deletedFile, deletedFolder)
    GET    /api/{t}/{ns}/{name}/tree/{rev}[/{path}]       (recursive=, expand=)
    POST   /api/{t}/{ns}/{name}/paths-info/{rev}
    GET    /api/{t}/{ns}/{name}/commits/{rev}
    HEAD/GET /{p}{ns}/{name}/resolve/{rev}/{path}     (ETag, X-Repo-Commit, Content-Length, Range -> 206)
    POST   /api/validate-yaml
    GET    datasets-server.{host}/info|parquet|is-valid|splits   (404: the fake has no dataset viewer)

Any other request (another route, another host, a feature such as ``create_pr``) raises :class:`UnservedRequest`
naming the method and URL, and is recorded in ``FakeHub.unserved``; the pytest fixture fails the test at teardown if
anything was recorded, so a route that a client swallowed errors from still shows up. While installed, sockets may
only connect to loopback/unix addresses and host names other than localhost do not resolve, so no code path (fsspec
HTTP, urllib, a child library's own client) reaches the network unnoticed.

State is a dict per repo: branches -> commit oid, commits -> {path: Blob}; LFS content is kept whole, so
`FakeHub.files()` returns real bytes. Revisions are branch names or (full or >= 7-char) commit oids.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import fnmatch
import hashlib
import ipaddress
import json
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, unquote, urlsplit

import httpx2

DEFAULT_ENDPOINT = "http://fake-hub.test"
DEFAULT_TOKEN = "hf_fake_hub_token_0123456789"
DEFAULT_USER = "fake-user"

_TYPE_FROM_API = {"models": "model", "datasets": "dataset", "spaces": "space"}
_TYPE_FROM_PREFIX = {"datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}

# What the Hub writes into a new repo's .gitattributes (abridged): these patterns always go through LFS.
_GITATTRIBUTES_LFS_PATTERNS = [
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*", "*.mlmodel",
    "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb", "*.pickle", "*.pkl", "*.pt",
    "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*", "*.tar", "*.tflite", "*.tgz", "*.wasm",
    "*.xz", "*.zip", "*.zst", "*tfevents*", "*.jpg", "*.jpeg", "*.png", "*.webp", "*.mp3", "*.wav",
]
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in _GITATTRIBUTES_LFS_PATTERNS)
_LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # the Hub sends files over 10 MB to LFS whatever their content


class UnservedRequest(RuntimeError):
    """A request the fake Hub does not serve (unknown route, foreign host, unsupported feature)."""


class _HubError(Exception):
    def __init__(self, status: int, message: str, error_code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.error_code, self.headers = status, message, error_code, headers or {}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Blob:
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.data)}\n".encode()

    @property
    def oid(self) -> str:
        """The git blob id: of the pointer file for an LFS file, of the content otherwise (as on the Hub)."""
        return _git_oid(self.pointer if self.lfs else self.data)

    @property
    def etag(self) -> str:
        """What the Hub serves as the file's ETag: the LFS sha256, or the git blob id of a regular file."""
        return self.sha256 if self.lfs else self.oid

    def entry(self, path: str) -> dict:
        out = {"type": "file", "oid": self.oid, "size": len(self.data), "path": path}
        if self.lfs:
            out["lfs"] = {"oid": self.sha256, "size": len(self.data), "pointerSize": len(self.pointer)}
        return out


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    description: str
    date: str
    tree: dict[str, Blob]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit:
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        if revision in self.commits:
            return self.commits[revision]
        matches = [oid for oid in self.commits if len(revision) >= 7 and oid.startswith(revision)]
        if len(matches) == 1:
            return self.commits[matches[0]]
        raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def history(self, commit: Commit) -> Iterator[Commit]:
        c: Commit | None = commit
        while c is not None:
            yield c
            c = self.commits[c.parent] if c.parent else None


class FakeHub:
    """In-memory Hub state plus the HTTP handler that serves it. See the module docstring for the routes."""

    UnservedRequest = UnservedRequest  # so tests can write `pytest.raises(fake_hub.UnservedRequest)`

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        token: str = DEFAULT_TOKEN,
        user: str = DEFAULT_USER,
        orgs: tuple[str, ...] = ("org",),
        any_namespace: bool = True,
    ):
        self.endpoint = endpoint.rstrip("/")
        self.host = urlsplit(self.endpoint).netloc
        self.token = token
        self.user = user
        self.orgs = tuple(orgs)
        self.any_namespace = any_namespace  # False: only `user` and `orgs` may be written to (as on the Hub)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> content, uploaded through the LFS PUT
        self.requests: list[str] = []  # "METHOD url" of every request served or refused
        self.unserved: list[str] = []
        self._lock = threading.RLock()
        self._counter = 0

    # ------------------------------------------------------------------ test-facing helpers
    def repo(self, repo_id: str, repo_type: str = "dataset") -> Repo:
        try:
            return self.repos[(repo_type, repo_id)]
        except KeyError:
            known = sorted(f"{t}:{r}" for t, r in self.repos)
            raise KeyError(f"fake Hub has no {repo_type} repo {repo_id!r}; it has {known}") from None

    def files(self, repo_id: str, repo_type: str = "dataset", revision: str = "main") -> dict[str, bytes]:
        """The repo's files at `revision` as {path: bytes} (LFS files hold their real content)."""
        with self._lock:
            commit = self.repo(repo_id, repo_type).resolve(revision)
            return {path: blob.data for path, blob in sorted(commit.tree.items())}

    def lfs_paths(self, repo_id: str, repo_type: str = "dataset", revision: str = "main") -> set[str]:
        """Paths stored through LFS (they went through the batch API and the PUT upload)."""
        with self._lock:
            commit = self.repo(repo_id, repo_type).resolve(revision)
            return {path for path, blob in commit.tree.items() if blob.lfs}

    def commit_titles(self, repo_id: str, repo_type: str = "dataset", revision: str = "main") -> list[str]:
        """Commit titles, newest first."""
        with self._lock:
            repo = self.repo(repo_id, repo_type)
            return [c.title for c in repo.history(repo.resolve(revision))]

    def add_repo(self, repo_id: str, repo_type: str = "dataset", private: bool = False) -> Repo:
        """Create a repo directly (as the Hub does: one initial commit holding .gitattributes)."""
        with self._lock:
            key = (repo_type, repo_id)
            if key in self.repos:
                return self.repos[key]
            repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=_now())
            self.repos[key] = repo
            initial = {".gitattributes": Blob(GITATTRIBUTES.encode(), False)}
            self._new_commit(repo, "main", None, "initial commit", "", initial)
            return repo

    # ------------------------------------------------------------------ client wiring
    def client_factory(self) -> httpx2.Client:
        """What `huggingface_hub.utils.set_client_factory` gets: the library's own client setup, our transport."""
        hooks = {}
        with contextlib.suppress(ImportError):  # keep the library's request hook (offline check, request ids)
            from huggingface_hub.utils._http import hf_request_event_hook

            hooks = {"request": [hf_request_event_hook]}
        return httpx2.Client(
            transport=httpx2.MockTransport(self.handle), event_hooks=hooks, follow_redirects=True, timeout=None
        )

    def async_client_factory(self) -> httpx2.AsyncClient:
        hooks = {}
        with contextlib.suppress(ImportError):
            from huggingface_hub.utils._http import async_hf_request_event_hook, async_hf_response_event_hook

            hooks = {"request": [async_hf_request_event_hook], "response": [async_hf_response_event_hook]}
        return httpx2.AsyncClient(
            transport=httpx2.MockTransport(self.handle), event_hooks=hooks, follow_redirects=True, timeout=None
        )

    # ------------------------------------------------------------------ HTTP
    def handle(self, request: httpx2.Request) -> httpx2.Response:
        line = f"{request.method} {request.url}"
        self.requests.append(line)
        try:
            ours = urlsplit(self.endpoint)
            if request.url.scheme == ours.scheme and request.url.host == f"datasets-server.{ours.hostname}":
                return self._dataset_viewer(request)
            if request.url.host != ours.hostname or request.url.scheme != ours.scheme:
                raise UnservedRequest(f"fake Hub: request to a host other than {self.endpoint}: {line}")
            with self._lock:
                return self._route(request)
        except UnservedRequest as e:
            self.unserved.append(line)
            raise UnservedRequest(str(e) if str(e) else f"fake Hub does not serve: {line}") from None
        except _HubError as e:
            headers = {"X-Error-Message": e.message, **e.headers}
            if e.error_code:
                headers["X-Error-Code"] = e.error_code
            return httpx2.Response(e.status, json={"error": e.message}, headers=headers)

    def _unserved(self, request: httpx2.Request, why: str = "") -> UnservedRequest:
        why = f" ({why})" if why else ""
        return UnservedRequest(f"fake Hub does not serve: {request.method} {request.url}{why}")

    def _route(self, request: httpx2.Request) -> httpx2.Response:
        raw_path = request.url.raw_path.split(b"?", 1)[0].decode("ascii")
        seg = [unquote(s) for s in raw_path.strip("/").split("/")] if raw_path.strip("/") else []
        method = request.method

        if seg[:2] == ["api", "whoami-v2"] and method == "GET":
            return self._whoami(request)
        if seg[:2] == ["api", "validate-yaml"] and method == "POST":
            return self._validate_yaml(request)
        if seg[:3] == ["api", "repos", "create"] and method == "POST":
            return self._create_repo(request)
        if seg[:3] == ["api", "repos", "delete"] and method == "DELETE":
            return self._delete_repo(request)
        if len(seg) == 2 and seg[0] == "__fake_lfs__" and method == "PUT":
            return self._lfs_put(request, seg[1])
        if len(seg) >= 4 and seg[0] == "api" and seg[1] in _TYPE_FROM_API:
            repo_type, repo_id, rest = _TYPE_FROM_API[seg[1]], f"{seg[2]}/{seg[3]}", seg[4:]
            if not rest and method == "GET":
                return self._repo_info(request, repo_type, repo_id, "main")
            if len(rest) == 2 and rest[0] == "revision" and method == "GET":
                return self._repo_info(request, repo_type, repo_id, rest[1])
            if len(rest) == 2 and rest[0] == "preupload" and method == "POST":
                return self._preupload(request, repo_type, repo_id, rest[1])
            if len(rest) == 2 and rest[0] == "commit" and method == "POST":
                return self._commit(request, repo_type, repo_id, rest[1])
            if len(rest) >= 2 and rest[0] == "tree" and method == "GET":
                return self._tree(request, repo_type, repo_id, rest[1], "/".join(rest[2:]))
            if len(rest) == 2 and rest[0] == "paths-info" and method == "POST":
                return self._paths_info(request, repo_type, repo_id, rest[1])
            if len(rest) == 2 and rest[0] == "commits" and method == "GET":
                return self._commits(request, repo_type, repo_id, rest[1])
            raise self._unserved(request)
        # /{p}{ns}/{name}.git/info/lfs/objects/batch and /{p}{ns}/{name}/resolve/{rev}/{path}
        repo_type = "model"
        if seg and seg[0] in _TYPE_FROM_PREFIX:
            repo_type, seg = _TYPE_FROM_PREFIX[seg[0]], seg[1:]
        is_batch = len(seg) == 6 and seg[1].endswith(".git") and seg[2:] == ["info", "lfs", "objects", "batch"]
        if is_batch and method == "POST":
            return self._lfs_batch(request, repo_type, f"{seg[0]}/{seg[1][:-4]}")
        if len(seg) >= 5 and seg[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(request, repo_type, f"{seg[0]}/{seg[1]}", seg[3], "/".join(seg[4:]))
        raise self._unserved(request)

    def _dataset_viewer(self, request: httpx2.Request) -> httpx2.Response:
        """datasets asks the dataset viewer (datasets-server.<hub host>) for a Parquet export and exported infos of
        the repo it loads. The fake has no viewer: it answers as the viewer does for a dataset it has not processed,
        and datasets then reads the repo's own files."""
        if request.method == "GET" and request.url.path in ("/info", "/parquet", "/is-valid", "/splits"):
            msg = "The dataset viewer has not processed this dataset (the fake Hub has no dataset viewer)."
            return httpx2.Response(404, json={"error": msg}, headers={"X-Error-Code": "ResponseNotFound"})
        raise self._unserved(request)

    # ------------------------------------------------------------------ auth
    def _bearer(self, request: httpx2.Request) -> str | None:
        auth = request.headers.get("authorization", "")
        return auth[7:] if auth.lower().startswith("bearer ") else None

    def _require_token(self, request: httpx2.Request) -> None:
        if self._bearer(request) != self.token:
            raise _HubError(401, "Invalid credentials in Authorization header")

    def _require_write(self, request: httpx2.Request, repo_id: str) -> None:
        self._require_token(request)
        namespace = repo_id.split("/")[0]
        if not self.any_namespace and namespace not in (self.user, *self.orgs):
            raise _HubError(403, f"You don't have the rights to create a repo under the namespace {namespace!r}")

    def _get_repo(self, request: httpx2.Request, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and self._bearer(request) != self.token):
            # As on the Hub: 401 when anonymous, 404 when authenticated, RepoNotFound either way.
            status = 401 if self._bearer(request) is None else 404
            raise _HubError(status, "Repository not found", "RepoNotFound")
        return repo

    # ------------------------------------------------------------------ routes
    def _whoami(self, request):
        self._require_token(request)
        return httpx2.Response(200, json={
            "type": "user", "id": "fake-user-id", "name": self.user, "fullname": "Fake User",
            "email": f"{self.user}@fake-hub.test", "emailVerified": True, "canPay": False, "isPro": False,
            "orgs": [{"type": "org", "name": o, "fullname": o, "roleInOrg": "admin"} for o in self.orgs],
            "auth": {
                "type": "access_token",
                "accessToken": {"displayName": "fake", "role": "write", "createdAt": _now()},
            },
        })

    def _validate_yaml(self, request):
        body = json.loads(request.content or b"{}")
        content = body.get("content", "")
        if content.startswith("---"):
            import yaml

            try:
                meta = yaml.safe_load(content.split("---", 2)[1])
            except Exception as e:  # noqa: BLE001 - surface the YAML error as the Hub does (400 + text)
                return httpx2.Response(400, text=f"Invalid YAML in README.md metadata: {e}")
            if meta is not None and not isinstance(meta, dict):
                return httpx2.Response(400, text="README.md metadata must be a YAML mapping")
        return httpx2.Response(200, json={"errors": [], "warnings": []})

    def _create_repo(self, request):
        body = json.loads(request.content or b"{}")
        name, org = body.get("name"), body.get("organization")
        repo_type = body.get("type") or "model"
        if repo_type not in _URL_PREFIX or not name:
            raise _HubError(400, f"Invalid repo type or name: {body}")
        repo_id = f"{org or self.user}/{name}"
        self._require_write(request, repo_id)
        url = f"{self.endpoint}/{_URL_PREFIX[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self.repos:
            return httpx2.Response(409, json={"error": "You already created this repo", "url": url},
                                   headers={"X-Error-Message": "You already created this repo"})
        self.add_repo(repo_id, repo_type, private=bool(body.get("private")))
        return httpx2.Response(200, json={"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo(self, request):
        body = json.loads(request.content or b"{}")
        repo_id = f"{body.get('organization') or self.user}/{body.get('name')}"
        self._require_write(request, repo_id)
        if self.repos.pop((body.get("type") or "model", repo_id), None) is None:
            raise _HubError(404, "Repository not found", "RepoNotFound")
        return httpx2.Response(200, json={})

    def _repo_info(self, request, repo_type, repo_id, revision):
        repo = self._get_repo(request, repo_type, repo_id)
        commit = repo.resolve(revision)
        blobs = request.url.params.get("blobs", "").lower() in ("1", "true")
        siblings = []
        for path, blob in sorted(commit.tree.items()):
            sib = {"rfilename": path}
            if blobs:
                sib.update(size=len(blob.data), blobId=blob.oid)
                if blob.lfs:
                    sib["lfs"] = {"size": len(blob.data), "sha256": blob.sha256, "pointerSize": len(blob.pointer)}
            siblings.append(sib)
        info = {
            "_id": hashlib.sha1(f"{repo_type}/{repo_id}".encode()).hexdigest()[:24], "id": repo_id,
            "author": repo_id.split("/")[0], "sha": commit.oid, "createdAt": repo.created_at,
            "lastModified": commit.date, "private": repo.private, "gated": False, "disabled": False,
            "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
            "usedStorage": sum(len(b.data) for b in commit.tree.values()),
        }
        card = self._card_data(commit)
        if card is not None:
            info["cardData"] = card
        if repo_type == "model":
            info["modelId"] = repo_id
        return httpx2.Response(200, json=info)

    @staticmethod
    def _card_data(commit: Commit) -> dict | None:
        readme = commit.tree.get("README.md")
        if readme is None:
            return None
        text = readme.data.decode("utf-8", "replace")
        if not text.startswith("---"):
            return None
        import yaml

        with contextlib.suppress(Exception):
            meta = yaml.safe_load(text.split("---", 2)[1])
            return meta if isinstance(meta, dict) else None
        return None

    def _is_lfs(self, commit: Commit, path: str, size: int, sample: bytes) -> bool:
        if size > _LFS_SIZE_THRESHOLD or b"\0" in sample:
            return True
        try:
            sample.decode("utf-8")
        except UnicodeDecodeError as e:
            if e.start < len(sample) - 4:  # not only a multi-byte char cut at the end of the 512-byte sample
                return True
        attributes = commit.tree.get(".gitattributes")
        patterns = [
            line.split()[0] for line in (attributes.data.decode("utf-8", "replace") if attributes else "").splitlines()
            if "filter=lfs" in line and line.split()
        ]
        name = path.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(path, p) for p in patterns)

    def _preupload(self, request, repo_type, repo_id, revision):
        if request.url.params.get("create_pr"):
            raise self._unserved(request, "create_pr is not implemented by the fake Hub")
        self._require_write(request, repo_id)
        repo = self._get_repo(request, repo_type, repo_id)
        commit = repo.resolve(revision)
        files = []
        for f in json.loads(request.content)["files"]:
            path, size, sample = f["path"], int(f["size"]), base64.b64decode(f.get("sample", ""))
            lfs = self._is_lfs(commit, path, size, sample)
            existing = commit.tree.get(path)
            oid = None if existing is None else (existing.sha256 if existing.lfs else existing.oid)
            files.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        return httpx2.Response(200, json={"files": files, "commitOid": commit.oid})

    def _lfs_batch(self, request, repo_type, repo_id):
        self._require_write(request, repo_id)
        self._get_repo(request, repo_type, repo_id)
        body = json.loads(request.content)
        if body.get("operation") != "upload":
            raise self._unserved(request, f"LFS batch operation {body.get('operation')!r}")
        objects = []
        for obj in body["objects"]:
            oid, size = obj["oid"], int(obj["size"])
            out = {"oid": oid, "size": size}
            if oid not in self.lfs_objects:  # already stored => no actions, the client skips the upload
                out["actions"] = {"upload": {"href": f"{self.endpoint}/__fake_lfs__/{oid}", "header": {}}}
            objects.append(out)
        return httpx2.Response(200, json={"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                               headers={"Content-Type": "application/vnd.git-lfs+json"})

    def _lfs_put(self, request, oid):
        data = request.read()
        if hashlib.sha256(data).hexdigest() != oid:
            raise _HubError(400, f"LFS upload for {oid}: content sha256 does not match")
        self.lfs_objects[oid] = data
        return httpx2.Response(200, headers={"ETag": f'"{hashlib.md5(data).hexdigest()}"'})

    def _new_commit(
        self, repo: Repo, branch: str, parent: str | None, title: str, description: str, tree: dict
    ) -> Commit:
        self._counter += 1
        seed = json.dumps([repo.repo_id, parent, title, self._counter, sorted((p, b.oid) for p, b in tree.items())])
        commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), parent, title, description, _now(), dict(tree))
        repo.commits[commit.oid] = commit
        repo.branches[branch] = commit.oid
        return commit

    def _commit(self, request, repo_type, repo_id, revision):
        if request.url.params.get("create_pr") or request.url.params.get("hot_reload"):
            raise self._unserved(request, "create_pr / hot_reload are not implemented by the fake Hub")
        self._require_write(request, repo_id)
        repo = self._get_repo(request, repo_type, repo_id)
        if revision not in repo.branches:
            raise _HubError(404, f"Invalid rev id: {revision} (commits go to a branch)", "RevisionNotFound")
        head = repo.resolve(revision)
        lines = [json.loads(line) for line in request.content.decode("utf-8").splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HubError(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        if header.get("parentCommit") and header["parentCommit"] != head.oid:
            raise _HubError(412, f"parentCommit {header['parentCommit']} is not the head of {revision} ({head.oid})")
        tree = dict(head.tree)
        for item in lines[1:]:
            key, value = item.get("key"), item.get("value", {})
            path = value.get("path", "")
            if key == "file":
                if value.get("encoding") != "base64":
                    raise _HubError(400, f"file {path}: unsupported encoding {value.get('encoding')!r}")
                tree[path] = Blob(base64.b64decode(value["content"]), False)
            elif key == "lfsFile":
                data = self.lfs_objects.get(value.get("oid"))
                if data is None:
                    raise _HubError(422, f"lfsFile {path}: LFS object {value.get('oid')} was never uploaded")
                if "size" in value and int(value["size"]) != len(data):
                    raise _HubError(422, f"lfsFile {path}: size {value['size']} != uploaded {len(data)}")
                tree[path] = Blob(data, True)
            elif key == "deletedFile":
                if path not in tree:
                    raise _HubError(404, f"deletedFile {path}: no such file", "EntryNotFound")
                del tree[path]
            elif key == "deletedFolder":
                prefix = path.rstrip("/") + "/"
                gone = [p for p in tree if p.startswith(prefix)]
                if not gone:
                    raise _HubError(404, f"deletedFolder {path}: no such folder", "EntryNotFound")
                for p in gone:
                    del tree[p]
            else:
                raise self._unserved(request, f"commit operation {key!r}")
        commit = self._new_commit(
            repo, revision, head.oid, header.get("summary", ""), header.get("description", ""), tree
        )
        url = f"{self.endpoint}/{_URL_PREFIX[repo_type]}{repo_id}/commit/{commit.oid}"
        body = {"success": True, "commitOid": commit.oid, "commitUrl": url, "pullRequestUrl": None}
        return httpx2.Response(200, json=body)

    def _last_commit(self, repo: Repo, commit: Commit, path: str, is_dir: bool) -> dict:
        """The oldest commit in the run, back from `commit`, where `path` (a file or folder) had its current state."""
        def state(c: Commit):
            if is_dir:
                return sorted((p, b.oid) for p, b in c.tree.items() if p.startswith(path + "/"))
            blob = c.tree.get(path)
            return blob.oid if blob else None

        current, last = state(commit), commit
        for c in repo.history(commit):
            if state(c) != current:
                break
            last = c
        return {"id": last.oid, "title": last.title, "date": last.date}

    def _dir_entry(self, commit: Commit, path: str) -> dict:
        listing = sorted((p, b.oid) for p, b in commit.tree.items() if p.startswith(path + "/"))
        oid = hashlib.sha1(json.dumps(listing).encode()).hexdigest()
        return {"type": "directory", "oid": oid, "size": 0, "path": path}

    def _entries(self, repo: Repo, commit: Commit, paths: list[str], expand: bool) -> list[dict]:
        out = []
        for path in paths:
            if path in commit.tree:
                entry = commit.tree[path].entry(path)
                if expand:
                    entry["lastCommit"] = self._last_commit(repo, commit, path, False)
            else:
                entry = self._dir_entry(commit, path)
                if expand:
                    entry["lastCommit"] = self._last_commit(repo, commit, path, True)
            out.append(entry)
        return out

    @staticmethod
    def _dirs(commit: Commit) -> set[str]:
        return {"/".join(p.split("/")[:i]) for p in commit.tree for i in range(1, p.count("/") + 1)}

    def _tree(self, request, repo_type, repo_id, revision, path):
        repo = self._get_repo(request, repo_type, repo_id)
        commit = repo.resolve(revision)
        recursive = request.url.params.get("recursive", "").lower() in ("1", "true")
        expand = request.url.params.get("expand", "").lower() in ("1", "true")
        path = path.strip("/")
        dirs = self._dirs(commit)
        if path and path not in dirs:
            if path in commit.tree:
                raise _HubError(404, f"{path} is a file, not a folder", "EntryNotFound")
            raise _HubError(404, f"Path {path} not found in {revision}", "EntryNotFound")
        prefix = path + "/" if path else ""
        names = [p for p in [*commit.tree, *dirs] if p.startswith(prefix) and p != path]
        if not recursive:
            names = [p for p in names if "/" not in p[len(prefix):]]
        names.sort(key=lambda p: (p not in dirs, p))  # folders first, as on the Hub
        return httpx2.Response(200, json=self._entries(repo, commit, names, expand))

    def _paths_info(self, request, repo_type, repo_id, revision):
        repo = self._get_repo(request, repo_type, repo_id)
        commit = repo.resolve(revision)
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("application/json"):
            body = json.loads(request.content)
            paths, expand = body.get("paths", []), bool(body.get("expand"))
        else:
            form = parse_qs(request.content.decode("utf-8"))
            paths, expand = form.get("paths", []), form.get("expand", ["False"])[0].lower() in ("1", "true")
        dirs = self._dirs(commit)
        paths = [p.strip("/") for p in paths]
        found = [p for p in paths if p in commit.tree or p in dirs or p == ""]
        found = [p for p in found if p != ""]
        return httpx2.Response(200, json=self._entries(repo, commit, found, expand))

    def _commits(self, request, repo_type, repo_id, revision):
        repo = self._get_repo(request, repo_type, repo_id)
        commits = [
            {"id": c.oid, "title": c.title, "message": c.description, "date": c.date,
             "authors": [{"user": self.user}]}
            for c in repo.history(repo.resolve(revision))
        ]
        return httpx2.Response(200, json=commits)

    def _resolve(self, request, repo_type, repo_id, revision, path):
        repo = self._get_repo(request, repo_type, repo_id)
        commit = repo.resolve(revision)
        blob = commit.tree.get(path)
        headers = {"X-Repo-Commit": commit.oid}
        if blob is None:
            raise _HubError(404, f"Entry not found: {path}", "EntryNotFound", headers=headers)
        data, status = blob.data, 200
        headers.update({"ETag": f'"{blob.etag}"', "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"})
        if blob.lfs:
            headers.update({"X-Linked-Etag": f'"{blob.etag}"', "X-Linked-Size": str(len(data))})
        rng = request.headers.get("range")
        if rng:
            start, end = self._parse_range(rng, len(data))
            if start >= len(data):
                headers["Content-Range"] = f"bytes */{len(data)}"
                raise _HubError(416, f"Range {rng} not satisfiable for {len(data)} bytes", headers=headers)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start : end + 1], 206
        headers["Content-Length"] = str(len(data))
        if request.method == "HEAD":
            return httpx2.Response(status, headers=headers)
        return httpx2.Response(status, headers=headers, content=data)

    @staticmethod
    def _parse_range(value: str, total: int) -> tuple[int, int]:
        unit, _, spec = value.partition("=")
        if unit.strip() != "bytes" or "," in spec:
            raise _HubError(400, f"Unsupported Range header {value!r}")
        first, _, last = spec.strip().partition("-")
        if first == "":  # suffix range: the last N bytes
            n = int(last)
            return max(total - n, 0), total - 1
        start = int(first)
        end = min(int(last), total - 1) if last else total - 1
        return start, end


# ---------------------------------------------------------------------- wiring into the installed libraries
def _cache_paths(root: Path) -> dict[str, Path]:
    home = root / "hf_home"
    return {
        "HF_HOME": home,
        "HF_HUB_CACHE": home / "hub",
        "HF_ASSETS_CACHE": home / "assets",
        "HF_XET_CACHE": home / "xet",
        "HF_DATASETS_CACHE": home / "datasets",
        "HF_MODULES_CACHE": home / "modules",
        "HF_TOKEN_PATH": home / "token",
    }


def _guard_sockets(monkeypatch) -> None:
    """Refuse any socket connection except loopback / unix ones: the Mock transport is the only way out."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def _allowed(sock, address) -> bool:
        if sock.family == getattr(socket, "AF_UNIX", None):
            return True
        host = address[0] if isinstance(address, tuple) else address
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return host == "localhost"

    def connect(sock, address):
        if not _allowed(sock, address):
            raise UnservedRequest(f"fake Hub: a test tried to open a network connection to {address!r}")
        return real_connect(sock, address)

    def connect_ex(sock, address):
        if not _allowed(sock, address):
            raise UnservedRequest(f"fake Hub: a test tried to open a network connection to {address!r}")
        return real_connect_ex(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        h = host.decode() if isinstance(host, bytes) else host
        if h not in (None, "localhost", "127.0.0.1", "::1", ""):
            try:
                ipaddress.ip_address(h)
            except ValueError:
                raise UnservedRequest(f"fake Hub: a test tried to resolve the host name {h!r}") from None
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@contextlib.contextmanager
def installed_fake_hub(monkeypatch, tmp_path: Path, **kwargs) -> Iterator[FakeHub]:
    """Point huggingface_hub, datasets and transformers at a fresh FakeHub, with caches under `tmp_path`.

    huggingface_hub and datasets read HF_ENDPOINT, HF_HOME, ... once, at import, into module constants: the
    environment is set too (for anything read later or in a child process), but the constants are what count.
    """
    hub = FakeHub(**kwargs)
    paths = _cache_paths(tmp_path)
    for p in paths.values():
        if p.name != "token":
            p.mkdir(parents=True, exist_ok=True)

    env = {
        "HF_ENDPOINT": hub.endpoint, "HF_TOKEN": hub.token, "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0",
        "HF_DATASETS_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_UPDATE_DOWNLOAD_COUNTS": "0", "HF_HUB_DISABLE_UPDATE_CHECK": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        **{k: str(v) for k, v in paths.items()},
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HUGGINGFACE_CO_STAGING", raising=False)

    from huggingface_hub import HfFileSystem, constants
    from huggingface_hub.utils import _http, set_async_client_factory, set_client_factory

    host = urlsplit(hub.endpoint).hostname
    for name, value in {
        "ENDPOINT": hub.endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": frozenset(set(getattr(constants, "HF_URL_HOSTS", frozenset())) | {host}),
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_UPDATE_CHECK": True,
        "HF_HUB_DISABLE_PROGRESS_BARS": True,
        "HF_HOME": str(paths["HF_HOME"]),
        "HF_HUB_CACHE": str(paths["HF_HUB_CACHE"]),
        "HUGGINGFACE_HUB_CACHE": str(paths["HF_HUB_CACHE"]),
        "HF_ASSETS_CACHE": str(paths["HF_ASSETS_CACHE"]),
        "HUGGINGFACE_ASSETS_CACHE": str(paths["HF_ASSETS_CACHE"]),
        "HF_XET_CACHE": str(paths["HF_XET_CACHE"]),
        "HF_TOKEN_PATH": str(paths["HF_TOKEN_PATH"]),
        "HF_STORED_TOKENS_PATH": str(paths["HF_HOME"] / "stored_tokens"),
    }.items():
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, value)

    with contextlib.suppress(ImportError):  # datasets is optional for a models-only test
        import datasets.config as dconfig

        dcache = paths["HF_DATASETS_CACHE"]
        for name, value in {
            "HF_ENDPOINT": hub.endpoint,
            "HUB_DATASETS_URL": hub.endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}",
            "HF_CACHE_HOME": str(paths["HF_HOME"]),
            "HF_DATASETS_CACHE": dcache,
            "HF_MODULES_CACHE": paths["HF_MODULES_CACHE"],
            "DOWNLOADED_DATASETS_PATH": dcache / "downloads",
            "EXTRACTED_DATASETS_PATH": dcache / "downloads" / "extracted",
            "HF_HUB_OFFLINE": False,
            "HF_DATASETS_OFFLINE": False,
            "HF_UPDATE_DOWNLOAD_COUNTS": False,
        }.items():
            if hasattr(dconfig, name):
                monkeypatch.setattr(dconfig, name, value)

    with contextlib.suppress(ImportError):  # transformers keeps one HfApi, its endpoint read when first made
        import transformers.utils.hub as transformers_hub

        monkeypatch.setattr(transformers_hub, "_hf_api", None, raising=False)

    _guard_sockets(monkeypatch)
    HfFileSystem.clear_instance_cache()  # an fsspec-cached instance would keep another fake Hub's listings
    # No public getter for the current factories: restore the library defaults afterwards.
    set_client_factory(hub.client_factory)  # also closes the shared client, so the next call builds ours
    set_async_client_factory(hub.async_client_factory)
    try:
        yield hub
    finally:
        set_client_factory(_http.default_client_factory)
        set_async_client_factory(_http.default_async_client_factory)
        HfFileSystem.clear_instance_cache()
