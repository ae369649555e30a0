"""CSV import and export, streaming: a million rows never sit in memory.

Import reads with ``csv.reader`` and writes in chunks of ``CHUNK`` rows, each chunk its
own transaction (one multi-row INSERT ... ON CONFLICT for new subscribers, one for
memberships), so memory stays flat and a crash loses at most the chunk in flight; running
the same import again is harmless (everything merges on ``email_key``).

Encoding: bytes are decoded as UTF-8 (a BOM is accepted). A file that is not UTF-8 is
not refused as a whole - the import streams, so it cannot know before it has read the
last line - instead each row holding bytes that are not UTF-8 is reported as a row error
and imports nothing, and rows that decode cleanly import. Nothing is ever stored
mis-decoded. A header line that is not UTF-8 (UTF-16 files, say) refuses the whole file
with one line, before anything is written.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from mailer.core.clock import utcnow
from mailer.core.db import insert_for, transaction
from mailer.core.errors import InvalidInput
from subscribers import service
from subscribers.models import (
    GONE,
    Event,
    EventKind,
    MailingList,
    Membership,
    Subscriber,
    SubscriberStatus,
    Suppression,
)

S = SubscriberStatus

CHUNK = 1000
# csv's own per-field limit (128 KiB by default) stays: a bigger field is a row error.
# Our own limits are far below it.
MAX_ATTRIBUTE = 2000
MAX_ATTRIBUTES = 50
MAX_ERRORS_KEPT = 10_000
EMAIL_HEADERS = ("email", "e-mail", "email address", "e-mail address", "mail")
NAME_HEADERS = ("name", "full name", "fullname")
# Columns our own export writes that are not attributes.
EXPORT_ONLY = ("status", "created_at", "confirmed_at", "unsubscribed_at", "lists")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class ImportReport:
    imported: int = 0
    updated: int = 0
    skipped_suppressed: int = 0
    skipped_existing_status: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    # Errors beyond MAX_ERRORS_KEPT are counted, not kept.
    errors_not_listed: int = 0

    @property
    def error_count(self) -> int:
        return len(self.errors) + self.errors_not_listed

    def as_dict(self, *, errors: int = 1000) -> dict:
        """The counts, and the first ``errors`` bad rows by line."""
        return {"imported": self.imported, "updated": self.updated, "skipped_suppressed": self.skipped_suppressed,
                "skipped_existing_status": self.skipped_existing_status, "error_count": self.error_count,
                "errors": [{"line": line, "reason": reason} for line, reason in self.errors[:errors]]}

    def add_error(self, line_no: int, reason: str) -> None:
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append((line_no, reason))
        else:
            self.errors_not_listed += 1


@dataclass
class _Row:
    line_no: int
    email: str
    key: str
    name: str
    attributes: dict[str, Any]


def _text_stream(stream: IO) -> IO[str]:
    """A text view of ``stream``: bytes are decoded as UTF-8 with surrogateescape, so
    an undecodable byte shows up as a lone surrogate in its row instead of aborting."""
    if isinstance(stream, io.TextIOBase):
        return stream
    return io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")


def _not_utf8(values: list[str]) -> bool:
    return any("\udc80" <= c <= "\udcff" for v in values for c in v)


def _unescape(value: str) -> str:
    """Undo ``export_csv``'s formula escaping, so export then import round-trips."""
    if len(value) > 1 and value[0] == "'" and value[1] in FORMULA_STARTS:
        return value[1:]
    return value


class _Header:
    def __init__(self, header: list[str]):
        names = [h.strip().lstrip("\ufeff").strip() for h in header]
        lowered = [n.lower() for n in names]
        self.email = next((lowered.index(h) for h in EMAIL_HEADERS if h in lowered), None)
        if self.email is None:
            shown = ", ".join(repr(n) for n in names[:10]) or "nothing"
            raise InvalidInput(f"the CSV header has no email column (found {shown}); name one column 'email'")
        self.name = next((lowered.index(h) for h in NAME_HEADERS if h in lowered), None)
        self.json_attributes = lowered.index("attributes") if "attributes" in lowered else None
        skip = {self.email, self.name, self.json_attributes}
        self.attributes = [
            (i, n) for i, n in enumerate(names)
            if i not in skip and n and lowered[i] not in EXPORT_ONLY
        ]
        self.width = len(names)

    def parse(self, line_no: int, row: list[str]) -> _Row:
        if len(row) > self.width and any(v.strip() for v in row[self.width:]):
            raise InvalidInput(f"{len(row)} fields, the header has {self.width}")
        cell = lambda i: _unescape(row[i].strip()) if i is not None and i < len(row) else ""  # noqa: E731
        email = service.normalise_email(cell(self.email))
        name = service.clean_name(cell(self.name))
        attributes: dict[str, Any] = {}
        if self.json_attributes is not None and cell(self.json_attributes):
            try:
                loaded = json.loads(cell(self.json_attributes))
            except ValueError as err:
                raise InvalidInput("the attributes column is not JSON") from err
            if not isinstance(loaded, dict):
                raise InvalidInput("the attributes column is not a JSON object")
            attributes.update(loaded)
        for i, column in self.attributes:
            value = cell(i)
            if value:
                if len(value) > MAX_ATTRIBUTE:
                    raise InvalidInput(f"column {column!r} is longer than {MAX_ATTRIBUTE} characters")
                attributes[column] = value
        if len(attributes) > MAX_ATTRIBUTES:
            raise InvalidInput(f"more than {MAX_ATTRIBUTES} attributes")
        return _Row(line_no, email, service.email_key(email), name, attributes)


def _rows(reader, header: _Header, report: ImportReport) -> Iterator[_Row]:
    previous_end = reader.line_num
    while True:
        start = previous_end + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            # The reader resynchronises on the next line; e.g. a 10 MB field lands here.
            report.add_error(start, f"unreadable CSV: {err}")
            previous_end = reader.line_num
            continue
        previous_end = reader.line_num
        if not any(v.strip() for v in row):
            continue  # blank line
        if _not_utf8(row):
            report.add_error(start, "not valid UTF-8 (save the file as UTF-8)")
            continue
        try:
            yield header.parse(start, row)
        except InvalidInput as err:
            report.add_error(start, str(err))


def _chunks(rows: Iterator[_Row], size: int) -> Iterator[dict[str, _Row]]:
    """Rows grouped by ``email_key``: duplicates in a chunk merge (later names and
    attributes win, empty cells never blank out what an earlier row gave)."""
    chunk: dict[str, _Row] = {}
    for row in rows:
        seen = chunk.get(row.key)
        if seen is None:
            chunk[row.key] = row
        else:
            seen.name = row.name or seen.name
            seen.attributes.update(row.attributes)
        if len(chunk) >= size:
            yield chunk
            chunk = {}
    if chunk:
        yield chunk


def _write_chunk(session: Session, chunk: dict[str, _Row], *, list_id: int, status: str, origin: str,
                 list_name: str, report: ImportReport) -> None:
    hashes = {service.hash_key(key): key for key in chunk}
    for h in session.scalars(select(Suppression.email_hash).where(Suppression.email_hash.in_(list(hashes)))):
        chunk.pop(hashes[h], None)
        report.skipped_suppressed += 1
    if not chunk:
        return
    now = utcnow()
    existing = {
        key: (sid, st, name, attrs)
        for sid, key, st, name, attrs in session.execute(
            select(Subscriber.id, Subscriber.email_key, Subscriber.status, Subscriber.name, Subscriber.attributes)
            .where(Subscriber.email_key.in_(list(chunk)))
        )
    }
    new_rows, updates, member_ids = [], [], []
    for key, row in chunk.items():
        found = existing.get(key)
        if found is None:
            new_rows.append({
                "email": row.email, "email_key": key, "name": row.name, "status": status,
                "attributes": row.attributes, "created_at": now, "updated_at": now,
                "confirmed_at": now if status == S.active else None,
            })
            continue
        sid, current, name, attrs = found
        if current in GONE:
            # Never resurrected, and nothing about them changes.
            report.skipped_existing_status += 1
            continue
        promote = status == S.active and current == S.pending
        merged = {**(attrs or {}), **row.attributes}
        if promote or (row.name and row.name != name) or merged != (attrs or {}):
            updates.append({
                "sid": sid, "name": row.name or name, "attributes": merged,
                "status": S.active if promote else current,
            })
            if promote:
                updates[-1]["confirmed_at"] = now
        member_ids.append(sid)
        report.updated += 1

    insert = insert_for(session)
    if new_rows:
        # ON CONFLICT: another import or a signup may have added one of these since the
        # SELECT above (on PostgreSQL); that row then simply is not counted as new.
        subscribers = Subscriber.__table__
        inserted = session.connection().execute(
            insert(subscribers).on_conflict_do_nothing(index_elements=["email_key"])
            .returning(subscribers.c.id),
            new_rows,
        ).scalars().all()
        report.imported += len(inserted)
        member_ids.extend(inserted)
        if inserted:
            # The consent record: who came in, when, how, and whether confirmed.
            session.connection().execute(
                insert(Event.__table__),
                [{"kind": EventKind.subscribe, "origin": origin, "subscriber_id": sid, "campaign_id": None,
                  "delivery_id": None, "detail": {"list": list_name, "status": status}, "created_at": now}
                 for sid in inserted],
            )
    promoted = [u for u in updates if "confirmed_at" in u]
    plain = [u for u in updates if "confirmed_at" not in u]
    table = Subscriber.__table__
    if plain:
        session.connection().execute(
            update(table).where(table.c.id == bindparam("sid"))
            .values(name=bindparam("name"), attributes=bindparam("attributes"), updated_at=now),
            plain,
        )
    if promoted:
        session.connection().execute(
            update(table).where(table.c.id == bindparam("sid"), table.c.status == S.pending)
            .values(name=bindparam("name"), attributes=bindparam("attributes"), status=S.active,
                    confirmed_at=bindparam("confirmed_at"), updated_at=now),
            promoted,
        )
    if member_ids:
        session.connection().execute(
            insert(Membership.__table__).on_conflict_do_nothing(index_elements=["list_id", "subscriber_id"]),
            [{"list_id": list_id, "subscriber_id": sid, "created_at": now} for sid in member_ids],
        )


def import_csv(
    engine: Engine,
    stream: IO[str] | IO[bytes],
    *,
    list_name: str,
    confirmed: bool = False,
    origin: str = "import",
) -> ImportReport:
    """Import subscribers from CSV into ``list_name`` (created if needed).

    The header needs an ``email`` column (``Email``, ``e-mail`` also work); ``name`` is
    the name, every other column becomes an attribute. Rows are ``active`` only with
    ``confirmed=True`` (the operator vouches for their consent), else ``pending``.
    Suppressed addresses and subscribers who unsubscribed, bounced or complained are
    skipped and left untouched; existing subscribers keep everything the file does not
    give again. Bad rows are reported by line number and the rest import.
    A missing or unusable header raises ``InvalidInput`` before anything is written.
    """
    text = _text_stream(stream)
    try:
        return _import(engine, text, list_name=list_name, confirmed=confirmed, origin=origin)
    finally:
        if text is not stream:
            text.detach()  # leave the caller's binary stream open, as it was given


def _import(engine: Engine, text: IO[str], *, list_name: str, confirmed: bool, origin: str) -> ImportReport:
    report = ImportReport()
    reader = csv.reader(text)
    try:
        first = next(reader)
        while not any(v.strip() for v in first):
            first = next(reader)
    except StopIteration:
        raise InvalidInput("the CSV file is empty; it needs a header line with an 'email' column") from None
    except csv.Error as err:
        raise InvalidInput(f"the CSV header cannot be read: {err}") from err
    if _not_utf8(first):
        raise InvalidInput("the file is not UTF-8; save it as UTF-8 CSV and import again")
    header = _Header(first)
    status = S.active if confirmed else S.pending

    with transaction(engine) as session:
        list_id = service.ensure_list(session, list_name).id
    for chunk in _chunks(_rows(reader, header, report), CHUNK):
        with transaction(engine) as session:
            _write_chunk(session, chunk, list_id=list_id, status=status, origin=origin,
                         list_name=list_name, report=report)
    return report


def escape_cell(value: Any) -> str:
    """OWASP CSV injection: a cell a spreadsheet would run as a formula gets a ``'``."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def export_csv(session: Session, stream: IO[str], *, list_name: str | None = None) -> int:
    """Write subscribers (of one list, or all) as CSV to ``stream``; returns the count.
    Streams with ``yield_per``, so memory stays flat however many there are."""
    query = select(Subscriber.email, Subscriber.name, Subscriber.status, Subscriber.created_at,
                   Subscriber.confirmed_at, Subscriber.attributes)
    if list_name is not None:
        mailing_list = session.scalar(select(MailingList).where(MailingList.name == list_name))
        if mailing_list is None:
            raise InvalidInput(f"no list called {list_name!r}")
        query = query.join(Membership, Membership.subscriber_id == Subscriber.id).where(
            Membership.list_id == mailing_list.id)
    query = query.order_by(Subscriber.id).execution_options(yield_per=1000)
    writer = csv.writer(stream)
    writer.writerow(["email", "name", "status", "created_at", "confirmed_at", "attributes"])
    count = 0
    for email, name, status, created, confirmed_at, attributes in session.execute(query):
        writer.writerow([
            escape_cell(email), escape_cell(name), status,
            created.isoformat() if created else "", confirmed_at.isoformat() if confirmed_at else "",
            escape_cell(json.dumps(attributes or {}, ensure_ascii=False, sort_keys=True)),
        ])
        count += 1
    return count
