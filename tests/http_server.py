"""A real HTTP file server on 127.0.0.1 for the download tests, with scripted misbehaviour."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FileServer(ThreadingHTTPServer):
    """Serves ``files`` over HTTP, honouring ``Range: bytes=N-``, with scripted misbehaviour.

    - ``cut_after``: the first response for a path announces its full Content-Length but the
      connection is closed after that many body bytes;
    - ``fail_times``: that many HTTP 503 answers come first;
    - ``ignore_range``: a full 200 answer even when a Range is asked for;
    - ``stall_after``: the first response for a path sends that many body bytes, then hangs
      (until ``release`` is set, at teardown) so that the client's read times out.

    ``requests`` records ``(path, Range header or None)`` for every request.
    """

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.cut_after: int | None = None
        self.fail_times = 0
        self.ignore_range = False
        self.stall_after: int | None = None
        self.release = threading.Event()
        self.requests: list[tuple[str, str | None]] = []
        self._cut_done: set[str] = set()
        self._stall_done: set[str] = set()
        self.lock = threading.Lock()

    def url(self, path: str) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}{path}"


class _Handler(BaseHTTPRequestHandler):
    server: FileServer

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the test output clean

    def do_GET(self) -> None:
        srv = self.server
        range_header = self.headers.get("Range")
        with srv.lock:
            srv.requests.append((self.path, range_header))
            fail = srv.fail_times > 0
            if fail:
                srv.fail_times -= 1
            cut = srv.cut_after is not None and self.path not in srv._cut_done
            if cut:
                srv._cut_done.add(self.path)
            stall = srv.stall_after is not None and self.path not in srv._stall_done
            if stall:
                srv._stall_done.add(self.path)
        if fail:
            self.send_error(503)
            return
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
        if match and not srv.ignore_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = data[start:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cut:
            self.wfile.write(body[: srv.cut_after])
            self.close_connection = True
            return
        if stall:
            self.wfile.write(body[: srv.stall_after])
            srv.release.wait(timeout=5)
            self.close_connection = True
            return
        self.wfile.write(body)


@contextmanager
def serve(files: Mapping[str, bytes]) -> Iterator[FileServer]:
    """Serve ``files`` ({url path: bytes}) until the block ends."""
    srv = FileServer()
    srv.files.update(files)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)
