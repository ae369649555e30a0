"""A real HTTP server on a free loopback port that takes outbound webhooks, for tests:
it keeps every request it gets and answers each path as the test scripts it (a list of
status codes, the last one repeated; or ``hang`` to never answer in time)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class Receiver:
    def __init__(self):
        self.requests: list[Received] = []
        self._scripts: dict[str, list] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver._lock:
                    receiver.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                                                      body, time.monotonic()))
                    script = receiver._scripts.get(self.path) or [200]
                    answer = script.pop(0) if len(script) > 1 else script[0]
                if answer == "hang":
                    receiver._stop.wait(120)
                    return
                self.send_response(answer)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, answers: list) -> None:
        """How ``path`` answers, request after request: status codes or ``"hang"``."""
        with self._lock:
            self._scripts[path] = list(answers)

    def got(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)


@pytest.fixture
def receiver():
    """A running webhook receiver, stopped after the test."""
    r = Receiver().start()
    yield r
    r.stop()
