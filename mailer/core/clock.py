"""Time, once: every timestamp the service writes is an aware UTC ``datetime``."""

from __future__ import annotations

from datetime import datetime, timezone

UTC = timezone.utc


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | str | None) -> datetime | None:
    """An aware UTC datetime from what a database hands back: SQLite keeps no zone (every
    stored time was written in UTC) and raw SQL on it can return ISO text."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
