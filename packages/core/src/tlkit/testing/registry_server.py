"""A local HTTP file server on 127.0.0.1 for registry tests (no test ever downloads from the internet).

    with RegistryServer(root) as srv:            # serves root/ at srv.url
        srv.cut_after["/m.tlk"] = 1000           # the next GET of /m.tlk stops after 1000 bytes
        ...
        srv.log                                  # [(method, path, Range header, Authorization header)]

It answers GET/HEAD with HTTP Range support (206 + Content-Range; `ranges=False` ignores Range and sends
the whole file, like a server without it) and PUT (writes the body under root/, for upload tests).
"""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class RegistryServer:
    def __init__(self, root: str | Path, *, ranges: bool = True):
        self.root = Path(root)
        self.ranges = ranges
        self.cut_after: dict[str, int] = {}
        self.log: list[tuple[str, str, str | None, str | None]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> RegistryServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def requests(self, method: str, path: str) -> list[tuple[str, str, str | None, str | None]]:
        return [r for r in self.log if r[0] == method and r[1] == path]

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _file(self) -> Path | None:
                path = (server.root / self.path.split("?")[0].lstrip("/")).resolve()
                return path if path.is_file() and server.root.resolve() in path.parents else None

            def _record(self) -> None:
                server.log.append(
                    (self.command, self.path, self.headers.get("Range"), self.headers.get("Authorization"))
                )

            def do_HEAD(self) -> None:
                self._record()
                f = self._file()
                if f is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(f.stat().st_size))
                self.end_headers()

            def do_GET(self) -> None:
                self._record()
                f = self._file()
                if f is None:
                    self.send_error(404)
                    return
                data = f.read_bytes()
                start = 0
                m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if m and server.ranges:
                    start = int(m.group(1))
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = server.cut_after.pop(self.path, None)
                if cut is not None:  # a connection that dies mid-transfer
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def do_PUT(self) -> None:
                self._record()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                dest = server.root / self.path.split("?")[0].lstrip("/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(body)
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler
