"""Transports deliver one message to one recipient and report the reply (``base``)."""

from __future__ import annotations

from pathlib import Path

from mailer.transports.base import SendResult, Transport
from mailer.transports.memory import MemoryTransport
from mailer.transports.outbox import OutboxTransport
from mailer.transports.smtp import SmtpTransport

__all__ = ["MemoryTransport", "OutboxTransport", "SendResult", "SmtpTransport", "Transport", "transport_from_settings"]


def transport_from_settings(smtp_url: str | None, outbox_dir: Path, timeout: float) -> Transport:
    """An SMTP relay when a URL is set, else the outbox folder (the embedded default)."""
    if smtp_url:
        return SmtpTransport.from_url(smtp_url, timeout=timeout)
    return OutboxTransport(Path(outbox_dir))
