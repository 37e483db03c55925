"""A real webhook receiver on 127.0.0.1: records every POST; can refuse or answer codes."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self, port: int = 0) -> None:
        """`port` 0 picks a free one; a given port lets a test refuse connections on it first."""
        self.requests: list[dict[str, Any]] = []
        self.answer = 200  # the code given to every request
        self._mutex = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._mutex:
                    receiver.requests.append(
                        {
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body": json.loads(body),
                            "path": self.path,
                        }
                    )
                    code = receiver.answer
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def statuses(self) -> dict[str, list[int]]:
        """Per message id, the statuses in arrival order, duplicates (same webhook-id) dropped."""
        seen: set[str] = set()
        out: dict[str, list[int]] = defaultdict(list)
        with self._mutex:
            for r in self.requests:
                wid = r["headers"]["webhook-id"]
                if wid in seen:
                    continue
                seen.add(wid)
                out[r["body"]["id"]].append(r["body"]["status"])
        return dict(out)

    def bodies(self, message_id: str) -> list[dict[str, Any]]:
        with self._mutex:
            return [r["body"] for r in self.requests if r["body"]["id"] == message_id]
