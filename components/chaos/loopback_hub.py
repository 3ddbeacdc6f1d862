"""A loopback Hugging Face Hub: stdlib ``http.server`` in a thread on 127.0.0.1, the real client on the other side.

Fault-harness equipment, not product path: the scenario demo (``python -m components.chaos``), the app's Scenarios
tab and the tests serve a model from it and inject faults for real, so recovery meets genuine 503s, dropped
connections and gated repositories. It serves the three endpoints ``huggingface_hub`` needs to download a repository
(repo info with siblings, the recursive tree, and ``HEAD``/``GET`` on ``/{repo}/resolve/{rev}/{file}`` with Range
support) and can misbehave on request: drop the connection after N bytes, answer 5xx or 429 (with ``Retry-After``),
stall, throttle, flip a byte of the body, answer 401/403 for a gated repo and 404 for an unknown repo, revision or
file. Every request is logged so a caller can tell exactly which files were fetched and with which ``Range``.

Usage::

    with HubServer() as hub:
        commit = hub.add_revision("org/tiny", folder)            # becomes `main`
        hub.inject(Fault(kind="drop", path="model.safetensors", after_bytes=4096))
        point the client at hub.url (HF_ENDPOINT, or ``endpoint=`` of the model store)
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from components.store.cache import LFS_SUFFIXES
from components.system.files import git_blob_id

__all__ = ["Fault", "HubServer", "LoggedRequest"]

FaultKind = Literal["drop", "status", "stall", "throttle", "flip"]


@dataclass
class Fault:
    """One misbehaviour, applied to the next ``times`` matching requests (``times=None``: every one).

    ``path`` matches the end of the URL path (a file name such as ``"model.safetensors"`` or an API path part);
    ``kind`` is ``drop`` (close the socket after ``after_bytes`` of body), ``status`` (answer ``status`` with
    ``error_code`` as ``X-Error-Code`` and optional ``retry_after``), ``stall`` (sleep ``seconds`` after
    ``after_bytes``), ``throttle`` (send at ``bytes_per_s``) or ``flip`` (invert one body byte at offset
    ``after_bytes`` of the file).
    """

    kind: FaultKind
    path: str = ""
    method: str = "GET"
    times: int | None = 1
    after_bytes: int = 0
    status: int = 503
    error_code: str = "Injected"
    retry_after: int | None = None
    seconds: float = 0.0
    bytes_per_s: int = 0

    def matches(self, method: str, path: str) -> bool:
        return method == self.method and path.endswith(self.path) and (self.times is None or self.times > 0)


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the server saw it (``status`` 0 while it is still being answered)."""

    method: str
    path: str
    range: str | None
    status: int
    body_bytes: int

    @property
    def filename(self) -> str | None:
        """The repo file a ``resolve`` request asked for, else None."""
        match = re.search(r"/resolve/[^/]+/(.+)$", self.path)
        return match.group(1) if match else None


@dataclass
class _File:
    path: str
    data: bytes
    lfs: bool
    sha256: str = field(init=False)
    blob_id: str = field(init=False)

    def __post_init__(self) -> None:
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self.blob_id = git_blob_id(self.data)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.blob_id


@dataclass
class _Repo:
    repo_id: str
    gated_status: int | None = None
    commits: dict[str, dict[str, _File]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> str | None:
        return self.refs.get(revision) or (revision if revision in self.commits else None)


class HubServer:
    """A hub-compatible HTTP server on 127.0.0.1 with fault injection and a request log."""

    def __init__(self) -> None:
        self.repos: dict[str, _Repo] = {}
        self.faults: list[Fault] = []
        self.log: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self._httpd = _QuietServer(("127.0.0.1", 0), _make_handler(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="hub-server", daemon=True)

    # -- lifecycle -------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- content ---------------------------------------------------------------------------------------------
    def add_revision(self, repo_id: str, folder: Path | dict[str, bytes], *, ref: str | None = "main") -> str:
        """Serve ``folder`` (a directory or {path: bytes}) as a new commit of ``repo_id``; returns its sha."""
        if isinstance(folder, Path):
            contents = {
                p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            }
        else:
            contents = dict(folder)
        files = {path: _File(path, data, path.endswith(LFS_SUFFIXES)) for path, data in contents.items()}
        repo = self.repos.setdefault(repo_id, _Repo(repo_id))
        listing = "".join(f"{f.path}\0{f.etag}\n" for f in files.values())
        commit = hashlib.sha1(f"{repo_id}\0{len(repo.commits)}\0{listing}".encode()).hexdigest()
        repo.commits[commit] = files
        if ref is not None:
            repo.refs[ref] = commit
        return commit

    def set_gated(self, repo_id: str, status: int | None = 401) -> None:
        """Make a repo answer ``status`` (401 or 403, as the hub does for a gated repo); None ungates it."""
        self.repos[repo_id].gated_status = status

    def file_bytes(self, repo_id: str, path: str, revision: str = "main") -> bytes:
        repo = self.repos[repo_id]
        return repo.commits[repo.resolve(revision) or ""][path].data

    # -- faults and log --------------------------------------------------------------------------------------
    def inject(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    def clear(self) -> None:
        """Forget faults and the request log."""
        with self._lock:
            self.faults.clear()
            self.log.clear()

    def fetched(self, method: str = "GET") -> list[LoggedRequest]:
        """Requests for file content (``resolve``) with the given method."""
        return [r for r in self.log if r.method == method and r.filename is not None]

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def _record(self, slot: int | None, entry: LoggedRequest) -> int:
        """Log in order of arrival: a slot is taken when a request starts and filled when it ends."""
        with self._lock:
            if slot is None or slot >= len(self.log):
                self.log.append(entry)
                return len(self.log) - 1
            self.log[slot] = entry
            return slot


class _QuietServer(ThreadingHTTPServer):
    """Daemon threads, and no traceback when a client hangs up (the client side of a test decides)."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


def _make_handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._route("HEAD")

        def do_GET(self) -> None:
            self._route("GET")

        # -- routing -----------------------------------------------------------------------------------------
        def _route(self, method: str) -> None:
            url = urlsplit(self.path)
            path = unquote(url.path)
            self._sent = 0
            self._status = 0
            fault = hub._take_fault(method, path)
            slot = hub._record(None, LoggedRequest(method, path, self.headers.get("Range"), 0, 0))
            try:
                if fault is not None and fault.kind == "status":
                    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                    self._error(fault.status, fault.error_code, f"injected {fault.status}", headers)
                elif path.startswith("/api/models/"):
                    self._api(path[len("/api/models/") :], parse_qs(url.query))
                else:
                    self._resolve(method, path, fault)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                hub._record(slot, LoggedRequest(method, path, self.headers.get("Range"), self._status, self._sent))

        def _find_repo(self, rest: str) -> tuple[_Repo | None, str]:
            for repo_id in sorted(hub.repos, key=len, reverse=True):
                if rest == repo_id or rest.startswith(repo_id + "/"):
                    return hub.repos[repo_id], rest[len(repo_id) :].lstrip("/")
            return None, rest

        def _repo_or_error(self, rest: str) -> tuple[_Repo, str] | None:
            repo, tail = self._find_repo(rest)
            if repo is None:
                self._error(401, "RepoNotFound", "Repository not found")
                return None
            if repo.gated_status is not None:
                self._error(repo.gated_status, "GatedRepo", "Access to this model is restricted.")
                return None
            return repo, tail

        def _api(self, rest: str, query: dict[str, list[str]]) -> None:
            found = self._repo_or_error(rest)
            if found is None:
                return
            repo, tail = found
            kind, _, revision_and_path = tail.partition("/")
            revision, _, _sub = revision_and_path.partition("/")
            commit = repo.resolve(revision or "main")
            if commit is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                return
            files = repo.commits[commit]
            if kind in ("", "revision"):
                siblings = [_sibling(f) for f in files.values()]
                self._json(
                    {
                        "id": repo.repo_id,
                        "modelId": repo.repo_id,
                        "sha": commit,
                        "siblings": siblings,
                        "private": False,
                        "gated": repo.gated_status is not None,
                    }
                )
            elif kind == "tree":
                self._json(list(_tree(files)))
            else:
                self._error(404, "EntryNotFound", f"unknown API path {kind}")

        def _resolve(self, method: str, path: str, fault: Fault | None) -> None:
            match = re.fullmatch(r"/(.+?)/resolve/([^/]+)/(.+)", path)
            if match is None:
                self._error(404, "EntryNotFound", "not a resolve URL")
                return
            found = self._repo_or_error(match.group(1))
            if found is None:
                return
            repo = found[0]
            commit = repo.resolve(match.group(2))
            if commit is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {match.group(2)}")
                return
            entry = repo.commits[commit].get(match.group(3))
            if entry is None:
                self._error(404, "EntryNotFound", f"{match.group(3)} does not exist at {commit}")
                return
            start = _range_start(self.headers.get("Range"))
            if start >= len(entry.data) > 0:
                self._error(416, "RangeNotSatisfiable", "range not satisfiable")
                return
            headers = {
                "X-Repo-Commit": commit,
                "ETag": f'"{entry.etag}"',
                "Accept-Ranges": "bytes",
                "Content-Length": str(len(entry.data) - start),
                "Content-Type": "application/octet-stream",
            }
            if entry.lfs:
                headers |= {"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(len(entry.data))}
            if start:
                headers["Content-Range"] = f"bytes {start}-{len(entry.data) - 1}/{len(entry.data)}"
            self._head(206 if start else 200, headers)
            if method == "GET":
                self._body(entry.data, start, fault)

        # -- writing -----------------------------------------------------------------------------------------
        def _head(self, status: int, headers: dict[str, str]) -> None:
            self._status = status
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()

        def _json(self, payload: object) -> None:
            body = json.dumps(payload).encode()
            self._head(200, {"Content-Type": "application/json", "Content-Length": str(len(body))})
            self.wfile.write(body)

        def _error(self, status: int, code: str, message: str, extra: dict[str, str] | None = None) -> None:
            body = json.dumps({"error": message}).encode()
            headers = {
                "X-Error-Code": code,
                "X-Error-Message": message,
                "Content-Type": "application/json",
                "Content-Length": str(len(body)),
            } | (extra or {})
            self._head(status, headers)
            if self.command != "HEAD":
                self.wfile.write(body)

        def _body(self, data: bytes, start: int, fault: Fault | None) -> None:
            stalled = False
            for offset, chunk in _chunks(data, start, fault):
                if fault is not None and fault.kind == "drop" and offset >= fault.after_bytes:
                    self.close_connection = True
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                if fault is not None and fault.kind == "stall" and offset >= fault.after_bytes and not stalled:
                    self.wfile.flush()
                    time.sleep(fault.seconds)
                    stalled = True
                if fault is not None and fault.kind == "throttle":
                    time.sleep(len(chunk) / fault.bytes_per_s)
                self.wfile.write(chunk)
                self._sent += len(chunk)

    return Handler


def _chunks(data: bytes, start: int, fault: Fault | None) -> Iterator[tuple[int, bytes]]:
    """Yield (file offset, chunk) from ``start``; chunks split at a fault's offset so a drop happens exactly there."""
    size = max(1024, fault.bytes_per_s // 20) if fault is not None and fault.kind == "throttle" else 16 * 1024
    body = bytearray(data)
    if fault is not None and fault.kind == "flip" and start <= fault.after_bytes < len(data):
        body[fault.after_bytes] ^= 0xFF
    cut = fault.after_bytes if fault is not None and fault.kind in ("drop", "stall") else -1
    offset = start
    while offset < len(data):
        end = min(len(data), offset + size)
        if offset < cut < end:
            end = cut
        yield offset, bytes(body[offset:end])
        offset = end


def _range_start(header: str | None) -> int:
    match = re.fullmatch(r"bytes=(\d+)-", header or "")
    return int(match.group(1)) if match else 0


def _sibling(f: _File) -> dict[str, object]:
    entry: dict[str, object] = {"rfilename": f.path, "size": len(f.data), "blobId": f.blob_id}
    if f.lfs:
        entry["lfs"] = {"sha256": f.sha256, "size": len(f.data), "pointerSize": 134}
    return entry


def _tree(files: dict[str, _File]) -> Iterator[dict[str, object]]:
    folders = sorted({"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)})
    for folder in folders:
        yield {"type": "directory", "path": folder, "oid": hashlib.sha1(folder.encode()).hexdigest()}
    for f in files.values():
        entry: dict[str, object] = {"type": "file", "path": f.path, "size": len(f.data), "oid": f.blob_id}
        if f.lfs:
            entry["lfs"] = {"oid": f.sha256, "size": len(f.data), "pointerSize": 134}
        yield entry
