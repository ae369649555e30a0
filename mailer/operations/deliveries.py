"""Who got it and who did not: a campaign's deliveries by what happened to them (failed,
bounced, skipped, still queued, sent twice, sent), with the address, the attempts, the
relay's last reply and its time; paged, searchable, and as CSV. And one subscriber's
side of it: every message sent to them and what happened to it."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import datetime
from typing import IO

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from mailer import campaigns, queries
from mailer.core.clock import as_utc
from mailer.core.db import transaction
from mailer.core.errors import InvalidInput
from mailer.models import ATTENTION, UNSENT, DeliveryStatus
from mailer.operations import streams
from subscribers import service
from subscribers.csvio import escape_cell

D = DeliveryStatus
# What an editor can ask for: the statuses each filter reads, and whether only the
# deliveries sent more than once (a try whose outcome was lost, then sent again).
FILTERS: dict[str, tuple[tuple[DeliveryStatus, ...], bool]] = {
    "attention": (ATTENTION, False),  # did not get it: failed, bounced or skipped
    D.failed.value: ((D.failed,), False),
    D.bounced.value: ((D.bounced,), False),
    D.skipped.value: ((D.skipped,), False),
    D.queued.value: (UNSENT, False),  # still to go (or on its way right now)
    "repeated": (tuple(DeliveryStatus), True),
    D.sent.value: ((D.sent,), False),
}
DEFAULT_FILTER = "attention"
MAX_PAGE = 200
MAX_SEARCH = 320  # the longest address there is
CSV_HEADER = ("email", "status", "attempts", "repeats", "last_code", "last_reply", "at")


def _filter(status: str | None) -> tuple[str, tuple[DeliveryStatus, ...], bool]:
    name = (status or DEFAULT_FILTER).strip().lower()
    if name not in FILTERS:
        raise InvalidInput(f"unknown delivery status {status!r}; one of {', '.join(FILTERS)}")
    return (name, *FILTERS[name])


def _pattern(q: str) -> str:
    q = (q or "").strip().lower()
    if len(q) > MAX_SEARCH:
        raise InvalidInput(f"search for at most {MAX_SEARCH} characters")
    return q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def describe(row: queries.DeliveryRow) -> dict:
    return {"delivery_id": row.delivery_id, "subscriber_id": row.subscriber_id, "email": row.email,
            "status": row.status, "attempts": row.attempts, "repeats": row.repeats, "last_code": row.last_code,
            "last_reply": row.last_reply, "at": _iso(row.at)}


def _page(session: Session, *, campaign_id: int, statuses, repeated_only: bool, pattern: str, after: int,
          limit: int) -> tuple[list[dict], int | None]:
    rows = queries.campaign_deliveries(session, campaign_id=campaign_id, statuses=statuses,
                                       repeated_only=repeated_only, search=pattern, after=after, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return [describe(r) for r in rows], rows[-1].delivery_id if more else None


def _after(after: int) -> int:
    if not isinstance(after, int) or after < 0:
        raise InvalidInput(f"'after' is the id of the last delivery of the previous page, not {after!r}")
    return after


def list_deliveries(session: Session, *, campaign_id: int, status: str | None = None, q: str = "",
                    after: int = 0, limit: int = 50) -> dict:
    """One page of a campaign's deliveries matching ``status`` (a name of ``FILTERS``;
    default: every one that did not get it) and the search ``q`` (part of the address or
    of the relay's reply), oldest first: ``items`` and ``next_after`` (the id to pass as
    ``after`` for the next page, None at the end), ``status`` and ``retryable`` (the
    "retry the failed ones" action applies: ``operations.campaigns.retry``)."""
    name, statuses, repeated_only = _filter(status)
    pattern = _pattern(q)
    campaign = campaigns.get_campaign(session, campaign_id)
    items, next_after = _page(session, campaign_id=campaign_id, statuses=statuses, repeated_only=repeated_only,
                              pattern=pattern, after=_after(after), limit=max(1, min(int(limit), MAX_PAGE)))
    # One row of the partial index answers "is anything failed" (not a count of them all).
    failed = len(queries.campaign_deliveries(session, campaign_id=campaign_id, statuses=(D.failed,), limit=1))
    return {"campaign_id": campaign_id, "status": name, "q": (q or "").strip(), "items": items,
            "next_after": next_after,
            "retryable": "retry" in campaigns.available_actions(campaign.status, failed=failed)}


def every_delivery(session: Session, *, campaign_id: int, status: str | None = None,
                   q: str = "") -> Iterator[dict]:
    """Every matching delivery, in the order of ``list_deliveries``' pages."""
    _, statuses, repeated_only = _filter(status)
    pattern = _pattern(q)
    campaigns.get_campaign(session, campaign_id)
    after: int | None = 0
    while after is not None:
        items, after = _page(session, campaign_id=campaign_id, statuses=statuses, repeated_only=repeated_only,
                             pattern=pattern, after=after, limit=MAX_PAGE)
        yield from items


def check(session: Session, *, campaign_id: int, status: str | None = None, q: str = "") -> None:
    """Refuse a bad request for a CSV before anything of it is written."""
    _filter(status)
    _pattern(q)
    campaigns.get_campaign(session, campaign_id)


def export_csv(session: Session, stream: IO[str], *, campaign_id: int, status: str | None = None,
               q: str = "") -> int:
    """The same rows as ``list_deliveries``, every page, as CSV (cells a spreadsheet
    would run as a formula escaped); returns how many."""
    check(session, campaign_id=campaign_id, status=status, q=q)  # before the header is written
    rows = every_delivery(session, campaign_id=campaign_id, status=status, q=q)
    writer = csv.writer(stream)
    writer.writerow(CSV_HEADER)
    count = 0
    for item in rows:
        writer.writerow([escape_cell(item[k]) for k in CSV_HEADER])
        count += 1
    return count


def export_chunks(engine: Engine, *, campaign_id: int, status: str | None = None, q: str = "") -> Iterator[bytes]:
    """``export_csv`` as a byte stream with flat memory (``streams.text_chunks``). A bad
    request is refused here, at once (a 404 or 400 from a web adapter), not half-way
    through a download."""
    with transaction(engine) as session:
        check(session, campaign_id=campaign_id, status=status, q=q)
    return streams.text_chunks(
        engine, lambda session, out: export_csv(session, out, campaign_id=campaign_id, status=status, q=q),
        name="deliveries-export")


def csv_filename(campaign_id: int, status: str | None) -> str:
    return f"campaign-{campaign_id}-{_filter(status)[0]}.csv"


def subscriber_history(session: Session, *, subscriber_id: int) -> list[dict]:
    """Every message sent to one subscriber, oldest first, and what happened to it: the
    campaign and its issue, the delivery's status, attempts, the relay's last reply, when
    the relay took it and when it last changed."""
    service.get_subscriber(session, subscriber_id)
    return [
        {"campaign_id": cid, "issue": slug, "subject": subject, "status": status, "attempts": attempts,
         "last_code": code, "last_reply": reply or "", "sent_at": _iso(as_utc(sent_at)), "at": _iso(as_utc(at))}
        for cid, slug, subject, status, attempts, code, reply, sent_at, at
        in queries.subscriber_deliveries(session, subscriber_id=subscriber_id)
    ]
