"""A real webhook receiver on 127.0.0.1: records every POST; can refuse or answer codes."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support.ports import wait_for


class Receiver:
    def __init__(self, port: int = 0) -> None:
        """`port` 0 picks a free one; a given port lets a test refuse connections on it first."""
        self.requests: list[dict[str, Any]] = []
        self.answer = 200  # the code given to every request
        self.answers: dict[int, int] = {}  # by callback status, instead of `answer`
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
                    code = receiver.answers.get(receiver.requests[-1]["body"].get("status"), receiver.answer)
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

    def incomplete(self, ids: Iterable[str]) -> dict[str, list[int] | None]:
        """The messages of `ids` that have not had callbacks 0, 1, 2 (exactly), with what they had."""
        got = self.statuses()
        return {m: got.get(m) for m in ids if got.get(m) != [0, 1, 2]}

    def wait_for_callbacks(
        self,
        ids: Iterable[str],
        *,
        timeout: float,
        what: str,
        interval: float = 0.05,
        explain: Callable[[], str] | None = None,
    ) -> None:
        """Until every message of `ids` had callbacks 0, 1, 2; else fail naming the ones that did not
        (and what `explain()` adds: logs, RQ state)."""
        ids = list(ids)
        try:
            wait_for(lambda: not self.incomplete(ids), timeout=timeout, interval=interval, what=what)
        except TimeoutError as e:
            pytest.fail(f"{e}; incomplete: {self.incomplete(ids)}" + (f"\n{explain()}" if explain else ""))
