"""The pager of the demo: a webhook on 127.0.0.1 that appends every JSON it is sent to a file, one line each.

    python -m demo.sink PORT FILE

The receiver's escalations arrive on /escalations, Alertmanager's default (human) route on /oncall.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def read_pages(path: Path) -> list[dict[str, Any]]:
    """What the sink recorded: {"path", "received_at", "body"} per request."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def serve(port: int, out: Path) -> None:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
            with lock, open(out, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"path": self.path, "received_at": time.time(), "body": body}) + "\n")
            self.send_response(204)
            self.end_headers()

        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"demo pager: POST JSON here\n")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    serve(int(sys.argv[1]), Path(sys.argv[2]))
