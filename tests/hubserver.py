"""A local stand-in for the Hugging Face hub's file endpoints, for download tests.

Serves ``HEAD``/``GET /{repo_id}/resolve/{revision}/{filename}`` with the headers huggingface_hub
reads (``X-Repo-Commit``, ``ETag`` / ``X-Linked-Etag`` = sha256 for LFS files, ``X-Linked-Size``,
``Content-Length``) and ``Range`` requests. Point huggingface_hub at it with ``HF_ENDPOINT``.
Faults for tests: ``gated`` repos answer 401 with the hub's ``GatedRepo`` error code,
``truncate`` sends fewer bytes than announced, ``lie_sha`` announces a wrong sha256.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"
PATH_RE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


@dataclass
class HubState:
    files: dict[tuple[str, str], bytes] = field(default_factory=dict)
    gated: set[str] = field(default_factory=set)
    truncate: set[str] = field(default_factory=set)
    lie_sha: set[str] = field(default_factory=set)
    tokens_seen: list[str] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)


def _handler(state: HubState):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def _lookup(self):
            state.requests.append((self.command, self.path))
            auth = self.headers.get("Authorization")
            if auth:
                state.tokens_seen.append(auth)
            match = PATH_RE.match(self.path.split("?")[0])
            if not match:
                self._error(404, "EntryNotFound")
                return None
            repo, filename = match["repo"], match["file"]
            if repo in state.gated and not (auth or "").startswith("Bearer "):
                self._error(401, "GatedRepo", "Access to this repo is restricted.")
                return None
            data = state.files.get((repo, filename))
            if data is None:
                self._error(404, "EntryNotFound")
                return None
            return repo, filename, data

        def _error(self, status, code, message="not found"):
            body = message.encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _headers(self, filename, data, status=200, length=None, extra=()):
            sha = hashlib.sha256(data).hexdigest()
            if filename in state.lie_sha:
                sha = "f" * 64
            self.send_response(status)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{sha}"')
            self.send_header("X-Linked-Etag", f'"{sha}"')
            self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(data) if length is None else length))
            for key, value in extra:
                self.send_header(key, value)
            self.end_headers()

        def do_HEAD(self):
            found = self._lookup()
            if found:
                self._headers(found[1], found[2])

        def do_GET(self):
            found = self._lookup()
            if not found:
                return
            _, filename, data = found
            start = 0
            rng = self.headers.get("Range")
            if rng and (m := re.match(r"bytes=(\d+)-", rng)):
                start = int(m.group(1))
            body = data[start:]
            if start:
                self._headers(filename, data, 206, len(body), [("Content-Range", f"bytes {start}-{len(data)-1}/{len(data)}")])
            else:
                self._headers(filename, data)
            if filename in state.truncate:
                body = body[: len(body) // 2]
            self.wfile.write(body)
            if filename in state.truncate:
                self.close_connection = True

    return Handler


class HubServer:
    """``with HubServer() as hub: hub.add("org/repo", "file.onnx", b"...")``; ``hub.endpoint``."""

    def __init__(self):
        self.state = HubState()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, repo_id: str, filename: str, data: bytes) -> None:
        self.state.files[(repo_id, filename)] = data

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
