"""A Hugging Face Hub on 127.0.0.1 that serves what ``hf_hub_download`` asks for, with faults on demand.

huggingface_hub (2.x) resolves a file with ``HEAD {endpoint}/{repo}/resolve/{revision}/{filename}`` and reads:
``X-Repo-Commit`` (required: the commit the file belongs to), ``ETag`` or ``X-Linked-Etag`` (required: the blob's
name in the cache), ``Content-Length`` or ``X-Linked-Size`` (the size it checks the download against), and for
LFS files a redirect to a CDN on another host, which it does not follow on HEAD (the metadata is on the redirect
itself) and GETs directly. Errors are told apart by ``X-Error-Code``: ``RepoNotFound`` (with 401, as the Hub
answers for missing and private repos alike), ``RevisionNotFound``, ``EntryNotFound`` (404, with
``X-Repo-Commit``, so the absence is recorded in the cache and holds offline).

Here small files are served like git files (ETag = git blob sha1) and weights like LFS files (X-Linked-Etag =
sha256, 302 to ``http://localhost:{port}/cdn/{sha256}`` — another host name for this server — which honours
``Range`` for resumed downloads). Faults,
per (repo, filename): ``short`` (a complete response with fewer bytes than announced), ``drop`` (Content-Length
promises the whole file, the connection closes halfway — on every attempt, or on the first only with
``drop_once``), ``corrupt`` (right size, wrong bytes), ``error`` (HTTP 500 on everything), ``cdn_error`` (the
metadata is fine, the download answers 503). ``log`` records every
request as (method, path).
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlencode

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".model")


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.commits: dict[str, str] = {}
        self.faults: dict[tuple[str, str], str] = {}
        self.log: list[tuple[str, str]] = []
        self.dropped: dict[str, int] = {}
        self._connections: set[socket.socket] = set()
        # The CDN is another host, as on the Hub ("localhost" reaches this server when it resolves to 127.0.0.1)
        first = socket.getaddrinfo("localhost", None, type=socket.SOCK_STREAM)[0][4][0]
        self.cdn_host = "localhost" if first == "127.0.0.1" else "127.0.0.1"
        self._blobs: dict[str, bytes] = {}
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- content ------------------------------------------------------------------------------------------
    def add_repo(self, repo: str, source: Path | dict[str, bytes]) -> None:
        """Serve ``source`` (a directory, or {filename: bytes}) as ``repo`` at one commit."""
        files = ({p.relative_to(source).as_posix(): p.read_bytes() for p in sorted(source.rglob("*")) if p.is_file()}
                 if isinstance(source, Path) else dict(source))
        self.repos[repo] = files
        digest = hashlib.sha1(repo.encode())
        for name, data in sorted(files.items()):
            digest.update(name.encode() + hashlib.sha1(data).digest())
            if self._is_lfs(name):
                self._blobs[hashlib.sha256(data).hexdigest()] = data
        self.commits[repo] = digest.hexdigest()

    def fresh(self) -> FakeHub:
        """A new, stopped hub serving the same repos (hashed once), with no faults and an empty log."""
        other = FakeHub()
        other.repos, other.commits, other._blobs = self.repos, self.commits, self._blobs
        return other

    @staticmethod
    def _is_lfs(name: str) -> bool:
        return name.endswith(LFS_SUFFIXES)

    def requested(self, filename: str, method: str | None = None) -> list[tuple[str, str]]:
        return [(m, p) for m, p in self.log if p.endswith("/" + filename) and (method is None or m == method)]

    # -- server -------------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut the open keep-alive connections too: a client must find the Hub gone."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for conn in list(self._connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._connections.clear()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: FakeHub

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        self.hub._connections.add(self.connection)

    def finish(self) -> None:
        self.hub._connections.discard(self.connection)
        super().finish()

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    # -- routing ------------------------------------------------------------------------------------------
    def _serve(self, head: bool) -> None:
        path = unquote(self.path.split("?", 1)[0])
        self.hub.log.append(("HEAD" if head else "GET", path))
        if path.startswith("/cdn/"):
            return self._cdn(path.removeprefix("/cdn/"), head)
        parts = path.strip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self._send(404, head, headers={"X-Error-Code": "EntryNotFound"})
        repo, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        files = self.hub.repos.get(repo)
        if files is None:
            return self._send(401, head, headers={"X-Error-Code": "RepoNotFound",
                                                  "X-Error-Message": "Repository not found"})
        commit = self.hub.commits[repo]
        if revision not in ("main", commit):
            return self._send(404, head, headers={"X-Error-Code": "RevisionNotFound"})
        if self.hub.faults.get((repo, filename)) == "error":
            return self._send(500, head, body=b"internal error")
        data = files.get(filename)
        if data is None:
            return self._send(404, head, headers={"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit})
        if not self.hub._is_lfs(filename):
            git_sha1 = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            return self._send(200, head, body=data, headers={"X-Repo-Commit": commit, "ETag": f'"{git_sha1}"'})
        sha256 = hashlib.sha256(data).hexdigest()
        query = urlencode({"commit": commit, "fault": self.hub.faults.get((repo, filename), "")})
        return self._send(302, head, headers={
            "X-Repo-Commit": commit, "X-Linked-Etag": f'"{sha256}"', "X-Linked-Size": str(len(data)),
            "ETag": f'"{hashlib.sha1(data).hexdigest()}"',  # the pointer file's etag, as the Hub sends it
            "Location": f"http://{self.hub.cdn_host}:{self.hub.port}/cdn/{sha256}?{query}"})

    def _cdn(self, sha256: str, head: bool) -> None:
        data = self.hub._blobs.get(sha256)
        if data is None:
            return self._send(404, head)
        query = parse_qs(self.path.partition("?")[2])
        fault = query.get("fault", [""])[0]
        if fault == "cdn_error":
            return self._send(503, head, body=b"unavailable")
        if fault == "corrupt":
            data = data[:-64] + bytes(b ^ 0xFF for b in data[-64:])  # tensor bytes: the file still parses
        elif fault == "short" and not head:
            data = data[: len(data) // 2]
        elif fault == "drop_once" and not head:
            fault = "drop" if self.hub.dropped.setdefault(sha256, 0) == 0 else ""
            self.hub.dropped[sha256] += 1
        start = 0
        range_header = self.headers.get("Range")
        if range_header and range_header.startswith("bytes="):
            start = int(range_header[len("bytes="):].split("-")[0])
        headers = {"ETag": f'"{sha256}"', "Accept-Ranges": "bytes"}
        if self.hub.cdn_host == "127.0.0.1":  # the redirect is followed on HEAD: answer with the Hub's metadata
            headers["X-Repo-Commit"] = query.get("commit", [""])[0]
        status = 206 if start else 200
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        if fault == "drop" and not head:
            # Content-Length promises the rest of the file; the connection closes at half of it, every time
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: max(0, len(data) // 2 - start)])
            self.wfile.flush()
            self.close_connection = True
            return
        self._send(status, head, body=body, headers=headers)

    def _send(self, status: int, head: bool, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)
