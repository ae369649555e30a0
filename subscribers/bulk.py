"""Writing an import's rows, a chunk at a time, at the database's speed.

Two writers behind one interface (``writer_for``): on PostgreSQL a chunk goes through
the COPY protocol into a temporary staging table and ONE statement
(``mailer.queries.merge_import_chunk``) merges it into ``subscriber``, ``membership``
and ``suppression``, so no Python loop or per-row statement touches the rows; on SQLite (the embedded default) a chunk is a few batched
statements. Both give a chunk the same meaning:

- a row the file marks as gone (``suppress``: a platform's unsubscribed or cleaned
  contact) becomes a suppression, never a subscriber, and a still-mailable subscriber
  with that address stops being mailable;
- a suppressed address is skipped; a subscriber who unsubscribed, bounced or complained
  is left exactly as they are and not added to the list;
- a new address becomes a subscriber (``status``: the row's, else the import's) pointing
  at its ``import_batch`` (the consent evidence: one row per file, not one event per
  subscriber), with the row's opt-in time as ``confirmed_at`` when it is active;
- an existing mailable subscriber keeps everything the row does not give: a non-empty
  name replaces theirs, attributes merge (the row's win), tags add up, and an active row
  promotes a pending subscriber; everyone kept or added joins the list.

A chunk holds each address once (``subscribers.csvio`` merges duplicates first).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection

from mailer.core.db import insert_for
from subscribers import service
from subscribers.models import (
    GONE,
    MAILABLE,
    Membership,
    Subscriber,
    SubscriberStatus,
    Suppression,
)

S = SubscriberStatus


@dataclass(slots=True)
class Row:
    """One subscriber of the file, parsed and normalised."""

    line_no: int
    email: str
    key: str
    name: str
    attributes: dict[str, Any]
    tags: list[str] = field(default_factory=list)
    status: str | None = None  # None: the import's own status
    confirmed_at: datetime | None = None  # the platform's opt-in time, if it gave one
    suppress: str | None = None  # a suppression reason: the file says they are gone


@dataclass
class Counts:
    imported: int = 0
    updated: int = 0
    skipped_suppressed: int = 0
    skipped_existing_status: int = 0
    suppressions: int = 0


@dataclass(frozen=True)
class Target:
    list_id: int
    status: str  # for rows that bring none of their own
    batch_id: int | None  # None in a dry run
    now: datetime


def _status_for(reason: str) -> str:
    """The status a suppression leaves a still-mailable subscriber in (as ``service.suppress``)."""
    return service.STATUS_FOR_REASON.get(reason, S.unsubscribed)


def _merged_tags(old: Iterable[str], new: Iterable[str]) -> list[str]:
    return sorted({*old, *new})


class SqliteWriter:
    """A chunk as a handful of batched statements (SQLite has no COPY, and is fast
    enough with them for the lists it is used with)."""

    def __init__(self, conn: Connection, target: Target):
        self.conn, self.target = conn, target

    def write(self, chunk: dict[str, Row]) -> Counts:
        conn, t, counts = self.conn, self.target, Counts()
        insert = insert_for(conn)
        gone = {key: row for key, row in chunk.items() if row.suppress}
        for key, row in gone.items():
            del chunk[key]
            counts.suppressions += 1
            conn.execute(insert(Suppression).values(email_hash=service.hash_key(key), reason=row.suppress,
                                                    created_at=t.now).on_conflict_do_nothing(index_elements=["email_hash"]))
            status = _status_for(row.suppress)
            values: dict[str, Any] = {"status": status, "updated_at": t.now}
            if status == S.unsubscribed:
                values["unsubscribed_at"] = t.now
            conn.execute(update(Subscriber).where(Subscriber.email_key == key, Subscriber.status.in_(sorted(MAILABLE)))
                         .values(**values))
        hashes = {service.hash_key(key): key for key in chunk}
        for h in conn.scalars(select(Suppression.email_hash).where(Suppression.email_hash.in_(list(hashes)))):
            chunk.pop(hashes[h], None)
            counts.skipped_suppressed += 1
        if not chunk:
            return counts
        existing = {
            key: (sid, st, name, attrs, tags)
            for sid, key, st, name, attrs, tags in conn.execute(
                select(Subscriber.id, Subscriber.email_key, Subscriber.status, Subscriber.name, Subscriber.attributes,
                       Subscriber.tags).where(Subscriber.email_key.in_(list(chunk)))
            )
        }
        new_rows, updates, member_ids = [], [], []
        for key, row in chunk.items():
            status = row.status or t.status
            found = existing.get(key)
            if found is None:
                new_rows.append({
                    "email": row.email, "email_key": key, "name": row.name, "status": status,
                    "attributes": row.attributes, "tags": _merged_tags([], row.tags), "created_at": t.now,
                    "updated_at": t.now, "confirmed_at": (row.confirmed_at or t.now) if status == S.active else None,
                    "import_batch_id": t.batch_id,
                })
                continue
            sid, current, name, attrs, tags = found
            if current in GONE:
                counts.skipped_existing_status += 1  # never resurrected, and nothing about them changes
                continue
            promote = status == S.active and current == S.pending
            merged = {**(attrs or {}), **row.attributes}
            all_tags = _merged_tags(tags or [], row.tags)
            if promote or (row.name and row.name != name) or merged != (attrs or {}) or all_tags != sorted(tags or []):
                updates.append({
                    "sid": sid, "name": row.name or name, "attributes": merged, "tags": all_tags,
                    "promote": promote, "confirmed_at": (row.confirmed_at or t.now) if promote else None,
                })
            member_ids.append(sid)
            counts.updated += 1

        table = Subscriber.__table__
        if new_rows:
            # ON CONFLICT: a signup may have added one of these since the SELECT above;
            # that row then simply is not counted as new.
            inserted = conn.execute(
                insert(table).on_conflict_do_nothing(index_elements=["email_key"]).returning(table.c.id), new_rows,
            ).scalars().all()
            counts.imported += len(inserted)
            member_ids.extend(inserted)
        for promote in (False, True):
            group = [u for u in updates if u["promote"] is promote]
            if not group:
                continue
            statement = update(table).where(table.c.id == bindparam("sid")).values(
                name=bindparam("name"), attributes=bindparam("attributes"), tags=bindparam("tags"), updated_at=t.now)
            if promote:
                # Guarded on 'pending', so a subscriber who left meanwhile is not brought back.
                statement = statement.where(table.c.status == S.pending).values(
                    status=S.active, confirmed_at=bindparam("confirmed_at"))
            conn.execute(statement, [{k: v for k, v in u.items() if k != "promote"} for u in group])
        if member_ids:
            conn.execute(
                insert(Membership.__table__).on_conflict_do_nothing(index_elements=["list_id", "subscriber_id"]),
                [{"list_id": t.list_id, "subscriber_id": sid, "created_at": t.now} for sid in member_ids],
            )
        return counts


# The staging table of an import: one per database session (TEMP: not WAL-logged, gone
# with the connection), emptied before each chunk.
_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS import_staging (
    email text NOT NULL, email_key text NOT NULL, name text NOT NULL, attributes jsonb NOT NULL,
    tags jsonb NOT NULL DEFAULT '[]', status text, confirmed_at timestamptz, suppress text
)
"""
_PLAIN_COLUMNS = "email, email_key, name, attributes"
_ALL_COLUMNS = "email, email_key, name, attributes, tags, status, confirmed_at, suppress"

# ``mailer.queries.merge_import_chunk``: where the statement lives (the SQL of the
# project is all there), handed down by ``mailer.operations.subscribers``.
Merge = Callable[[Connection, Target], Counts]


class PostgresWriter:
    """A chunk through COPY into ``import_staging``, then one merge statement."""

    def __init__(self, conn: Connection, target: Target, *, plain: bool, merge: Merge):
        self.conn, self.target, self.merge = conn, target, merge
        # A plain CSV brings no tags, statuses, opt-in times or suppressions: copying
        # four columns instead of eight saves the client a third of its work per row.
        self.plain = plain

    def write(self, chunk: dict[str, Row]) -> Counts:
        raw = self.conn.connection.driver_connection
        dumps = json.dumps
        with raw.cursor() as cur:
            cur.execute(_STAGING)
            cur.execute("TRUNCATE import_staging")
            columns = _PLAIN_COLUMNS if self.plain else _ALL_COLUMNS
            with cur.copy(f"COPY import_staging ({columns}) FROM STDIN") as copy:
                if self.plain:
                    for key, r in chunk.items():
                        copy.write_row((r.email, key, r.name, dumps(r.attributes)))
                else:
                    for key, r in chunk.items():
                        copy.write_row((r.email, key, r.name, dumps(r.attributes), dumps(r.tags), r.status,
                                        r.confirmed_at, r.suppress))
            # A temporary table has no statistics until analysed; without them the
            # planner takes the chunk for a handful of rows and joins it by scanning.
            cur.execute("ANALYZE import_staging")
        return self.merge(self.conn, self.target)


def writer_for(conn: Connection, target: Target, *, plain: bool, merge: Merge | None
               ) -> SqliteWriter | PostgresWriter:
    """COPY and ``merge`` on PostgreSQL; the batched statements on SQLite, or when no
    ``merge`` is given (they work on PostgreSQL too, at a tenth of the speed)."""
    if conn.dialect.name == "postgresql" and merge is not None:
        return PostgresWriter(conn, target, plain=plain, merge=merge)
    return SqliteWriter(conn, target)
