"""The one interface every transport has: open, send, close; a result per recipient."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class SendResult:
    """The server's reply to one message for one recipient: ``250 'ok'``, ``550 '5.1.1 …'``.
    ``code`` is None when there was no reply (the connection dropped after the message was
    sent, so whether it was delivered is unknown). ``mailer.replies.classify`` says what
    a result means."""

    code: int | None
    reply: str

    @property
    def accepted(self) -> bool:
        return self.code is not None and 200 <= self.code < 300


@runtime_checkable
class Transport(Protocol):
    name: str

    def open(self) -> None:
        """Connect now (optional: ``send`` connects when needed). Raises
        ``TransientDeliveryError`` when the server cannot be reached."""

    def send(self, envelope_from: str, recipient: str, message: bytes) -> SendResult:
        """Hand one message for one recipient to the server and return its reply, whatever
        it is (4xx and 5xx included). Raises ``TransientDeliveryError`` only when the server
        could not be talked to at all, even after one reconnect.

        A transport with ``pipelines_ahead = True`` also takes ``then=(envelope sender,
        recipient)``, the message the caller sends next, to write its envelope early, and
        ``dot_free``, the caller's word that no line of the message starts with "."
        (``SmtpTransport``); the others are never given them."""

    def close(self) -> None:
        """Let go of the connection; safe to call twice, and ``send`` may follow."""
