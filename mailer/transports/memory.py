"""A transport that keeps messages in a list: for unit tests of pure code only
(functional tests use a real SMTP server, ``tests.support.smtpd``)."""

from __future__ import annotations

import threading

from mailer.transports.base import SendResult

OK = SendResult(250, "2.0.0 ok")


class MemoryTransport:
    """``outbox`` holds every accepted ``(envelope_from, recipient, message)``;
    ``replies`` maps a recipient to the ``SendResult`` to answer instead of 250, or to an
    exception to raise (e.g. ``TransientDeliveryError`` for a relay that is down)."""

    name = "memory"

    def __init__(self) -> None:
        self.outbox: list[tuple[str, str, bytes]] = []
        self.replies: dict[str, SendResult | BaseException] = {}
        self.is_open = False
        self._lock = threading.Lock()

    def open(self) -> None:
        self.is_open = True

    def send(self, envelope_from: str, recipient: str, message: bytes) -> SendResult:
        reply = self.replies.get(recipient, OK)
        if isinstance(reply, BaseException):
            raise reply
        if reply.accepted:
            with self._lock:
                self.outbox.append((envelope_from, recipient, message))
        return reply

    def close(self) -> None:
        self.is_open = False
