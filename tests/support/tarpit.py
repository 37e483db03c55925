"""A tarpit webhook receiver on 127.0.0.1: it reads the request, then answers one byte
every `interval` seconds and never finishes. Each connection records when it was accepted
and when the client hung up, so a test can measure how long one attempt held it."""

from __future__ import annotations

import select
import socket
import threading
import time
from dataclasses import dataclass

# A valid start of an answer, so the client keeps reading header bytes as they trickle in.
_ANSWER = b"HTTP/1.1 200 OK\r\nX-Trickle: " + b"a" * 4096


@dataclass
class Connection:
    accepted: float  # monotonic
    closed: float | None = None  # monotonic, when the client hung up


class Tarpit:
    def __init__(self, *, interval: float = 2.0) -> None:
        self.interval = interval
        self.connections: list[Connection] = []
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Tarpit:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def close(self) -> None:
        self._stop.set()
        for thread in list(self._threads):
            thread.join(self.interval + 2)
        self._listener.close()

    def finished(self) -> list[Connection]:
        with self._mutex:
            return [c for c in self.connections if c.closed is not None]

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn = Connection(time.monotonic())
            with self._mutex:
                self.connections.append(conn)
            thread = threading.Thread(target=self._trickle, args=(sock, conn), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _trickle(self, sock: socket.socket, conn: Connection) -> None:
        with sock:
            sent = 0
            while not self._stop.is_set() and sent < len(_ANSWER):
                # Readable means request bytes (drained) or the client's hang-up (b"").
                readable, _, _ = select.select([sock], [], [], self.interval)
                if readable:
                    try:
                        if sock.recv(65536) == b"":
                            break
                    except OSError:
                        break
                    continue
                try:
                    sock.sendall(_ANSWER[sent : sent + 1])
                except OSError:
                    break
                sent += 1
            conn.closed = time.monotonic()
