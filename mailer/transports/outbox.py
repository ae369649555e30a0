"""The embedded default: every message becomes one ``.eml`` file in a folder, as a local
delivery agent would write it. Open one in any mail client to see what was sent."""

from __future__ import annotations

import itertools
import os
import re
import threading
import time
from pathlib import Path

from mailer.core.errors import TransientDeliveryError
from mailer.transports.base import SendResult

_UNSAFE = re.compile(r"[\x00-\x20\x7f<>]")


class OutboxTransport:
    """Writes ``{time_ns}-{pid}-{n}.eml``. Every send is a new file, so a message sent twice
    shows up twice: the outbox is also how tests count deliveries."""

    name = "outbox"

    def __init__(self, folder: Path, *, fsync: bool = False):
        self.folder = Path(folder)
        self.fsync = fsync
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def open(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TransientDeliveryError(f"cannot create the outbox folder {self.folder}: {err.strerror}") from err

    def send(self, envelope_from: str, recipient: str, message: bytes) -> SendResult:
        with self._lock:
            n = next(self._counter)
        name = f"{time.time_ns()}-{os.getpid()}-{n}.eml"
        # What a local delivery agent adds (RFC 5321 §4.4 Return-Path; Postfix's
        # X-Original-To / Delivered-To), with anything that could break the line removed.
        sender, rcpt = _UNSAFE.sub("", envelope_from), _UNSAFE.sub("", recipient)
        trace = f"Return-Path: <{sender}>\r\nX-Original-To: {rcpt}\r\nDelivered-To: {rcpt}\r\n".encode()
        tmp = self.folder / f".{name}.tmp"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(tmp, "xb") as f:
                f.write(trace)
                f.write(message)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            # Readers never see half a file: the name appears only once it is complete.
            os.replace(tmp, self.folder / name)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise TransientDeliveryError(f"cannot write to the outbox {self.folder}: {err.strerror or err}") from err
        return SendResult(250, f"saved {name}")

    def close(self) -> None:
        pass
