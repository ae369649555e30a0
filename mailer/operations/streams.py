"""Long downloads (a CSV of a million rows) as a byte stream with flat memory."""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Callable, Iterator
from typing import IO

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from mailer.core.db import transaction

CHUNK = 64 * 1024


def text_chunks(engine: Engine, write: Callable[[Session, IO[str]], object], *, name: str) -> Iterator[bytes]:
    """What ``write(session, stream)`` writes, as UTF-8 chunks of about 64 KiB. It runs in
    a thread of its own, in a transaction of its own (a web request's session is closed
    before its streamed body is done), writing to a small bounded queue: memory stays
    flat however much there is, and the writer stops when the reader goes away (the
    generator is closed). An error in the writer is raised in the reader."""
    chunks: queue.Queue = queue.Queue(maxsize=16)
    stop = threading.Event()
    done = object()

    class Pipe(io.TextIOBase):
        def __init__(self):
            self.buf = io.StringIO()

        def write(self, text: str) -> int:
            self.buf.write(text)
            if self.buf.tell() >= CHUNK:
                self.flush()
            return len(text)

        def flush(self) -> None:
            data = self.buf.getvalue()
            self.buf = io.StringIO()
            while data and not stop.is_set():
                try:
                    chunks.put(data.encode("utf-8"), timeout=0.5)
                    return
                except queue.Full:
                    continue
            if stop.is_set():
                raise BrokenPipeError(f"{name} cancelled")

    def run():
        pipe = Pipe()
        try:
            with transaction(engine) as s:
                write(s, pipe)
            pipe.flush()
        except BaseException as err:  # noqa: BLE001 - handed to the reader, which re-raises
            chunks.put(err) if not stop.is_set() else None
        finally:
            if not stop.is_set():
                chunks.put(done)

    def read() -> Iterator[bytes]:
        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        try:
            while True:
                item = chunks.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()

    return read()
