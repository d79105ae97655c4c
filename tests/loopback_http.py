"""A loopback HTTP file server for download tests (127.0.0.1 only, never the internet).

Serves in-memory files, honours ``Range: bytes=N-`` (206 + Content-Range) unless told not to,
can cut every response body after a number of bytes (a dropped connection) and records each
request's path, Range header and body bytes sent.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class ServerState:
    files: dict[str, bytes] = field(default_factory=dict)
    cut_after: int | None = None  # send at most this many body bytes, then drop the connection
    honour_range: bool = True
    content_type: str = "application/octet-stream"
    requests: list[dict] = field(default_factory=list)


def _handler(state: ServerState):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:
            body = state.files.get(self.path)
            asked = self.headers.get("Range")
            record = {"path": self.path, "range": asked, "sent": 0}
            state.requests.append(record)
            if body is None:
                self.send_error(404)
                return
            start = 0
            match = re.match(r"bytes=(\d+)-$", asked or "")
            if match and state.honour_range:
                start = int(match.group(1))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            payload = body[start:]
            self.send_header("Content-Type", state.content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if state.cut_after is not None:
                payload = payload[: state.cut_after]
            self.wfile.write(payload)
            record["sent"] = len(payload)
            self.close_connection = True

    return Handler


class LoopbackServer:
    """``with LoopbackServer() as server: server.url("/file")``."""

    def __init__(self) -> None:
        self.state = ServerState()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self) -> "LoopbackServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __exit__(self, *exc) -> None:
        self.stop()


def closed_port_url(path: str = "/gone.pt") -> str:
    """A loopback URL nothing listens on (bound then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"
