"""Writing an import's rows, a chunk at a time, at the database's speed.

Two writers behind one interface (``writer_for``): on PostgreSQL a chunk goes through
the COPY protocol (text format) into a temporary staging table and ONE statement
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

import hashlib
import itertools
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
    # The header's attribute columns, when each row's attributes are exactly its
    # non-empty cells of them (a plain CSV without a JSON ``attributes`` column): on
    # PostgreSQL they travel as plain columns ``a0``, ``a1``, ... and the merge builds
    # the JSON. None: each row's attributes travel as JSON.
    columns: tuple[str, ...] | None = None


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


# The staging of an import, per database session (TEMP: not WAL-logged, gone with the
# connection), emptied before each chunk: ``import_rows`` takes the COPY, and the merge
# statement reads it (``mailer.queries.merge_import_chunk``, which also builds the
# attributes' JSON from the plain columns ``a0``, ``a1``, ... on the server: json.dumps
# per row was a fifth of the client's time). ``email_hash`` (the suppression key) comes
# from the client: hashlib costs it less than the server's sha256 costs the merge.
# ``email_key`` compares bytes, as ``subscriber.email_key`` does (migration 0018). An
# empty string is NULL in the COPY (its ``NULL ''``): no value of a row is empty but a
# name, which the merge turns back into ''.
_ROWS = """
CREATE TEMP TABLE import_rows (
    email text NOT NULL, email_key text COLLATE "C" NOT NULL, email_hash text NOT NULL, name text,
    attributes jsonb, tags jsonb, status text, confirmed_at timestamptz, suppress text{values}
)
"""

# ``mailer.queries.merge_import_chunk``: where the statement lives (the SQL of the
# project is all there), handed down by ``mailer.operations.subscribers``.
Merge = Callable[[Connection, Target], Counts]


def _copy_text(rows: list[tuple[str, ...]]) -> str:
    """Rows (all text; "" for NULL, see ``_ROWS``) in COPY's text format: tab-separated,
    one line each. Joined as they are, then checked once over the whole chunk: only a
    backslash, tab or line break inside a value needs escaping, and when the chunk has
    one (a multi-line attribute, say) it is built again with every value escaped."""
    text = "\n".join(map("\t".join, rows)) + "\n"
    if rows and ("\\" in text or "\r" in text or text.count("\n") != len(rows)
                 or text.count("\t") != len(rows) * (len(rows[0]) - 1)):
        text = "".join("\t".join(map(_escaped, row)) + "\n" for row in rows)
    return text


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


class PostgresWriter:
    """A chunk through COPY into ``import_rows`` (``stage``), then one merge statement
    (``merge``); ``write`` is both. Staging is client work and merging server work, so
    ``subscribers.csvio`` stages the next chunk on one connection while up to two others merge."""

    def __init__(self, conn: Connection, target: Target, *, plain: bool, merge: Merge):
        """``plain``: the rows bring no tags, statuses, opt-in times or suppressions (fewer
        columns to copy); ``target.columns``: see ``Target``."""
        self.conn, self.target, self._merge = conn, target, merge
        self.plain, self.columns = plain, target.columns
        self._ready = False

    def _prepare(self, cur) -> None:
        from psycopg import sql

        if self._ready:
            return
        # Made afresh: an earlier import on this pooled connection may have had another header.
        cur.execute("DROP TABLE IF EXISTS pg_temp.import_rows")
        values = sql.SQL("").join(sql.SQL(", {} text").format(sql.Identifier(f"a{n}"))
                                  for n in range(len(self.columns or ())))
        cur.execute(sql.SQL(_ROWS).format(values=values))
        self._ready = True

    def stage(self, chunk: dict[str, Row]) -> None:
        """COPY the chunk into ``import_rows``, as COPY's text format built in one piece
        (``_copy_text``) and sent in one write, where a ``write_row`` per row cost ~7 us."""
        from psycopg import sql

        names = ["email", "email_key", "email_hash", "name"]
        names += [f"a{n}" for n in range(len(self.columns))] if self.columns is not None else ["attributes"]
        sha256 = hashlib.sha256  # service.hash_key, inlined: it runs per row
        if self.columns is not None:
            columns, empty = self.columns, itertools.repeat("")
            rows = [(r.email, key, sha256(key.encode()).hexdigest(), r.name, *map(r.attributes.get, columns, empty))
                    for key, r in chunk.items()]
        else:
            dumps = json.dumps
            rows = [(r.email, key, sha256(key.encode()).hexdigest(), r.name, dumps(r.attributes))
                    for key, r in chunk.items()]
        if not self.plain:
            names += ["tags", "status", "confirmed_at", "suppress"]
            rows = [(*values, json.dumps(r.tags) if r.tags else "", r.status or "",
                     r.confirmed_at.isoformat() if r.confirmed_at else "", r.suppress or "")
                    for values, r in zip(rows, chunk.values(), strict=True)]
        statement = sql.SQL("COPY import_rows ({}) FROM STDIN (FORMAT text, NULL '')").format(
            sql.SQL(", ").join(map(sql.Identifier, names)))
        data = _copy_text(rows)
        del rows
        raw = self.conn.connection.driver_connection
        with raw.cursor() as cur:
            self._prepare(cur)
            cur.execute("TRUNCATE import_rows")
            with cur.copy(statement) as copy:
                copy.write(data)
            # A temporary table has no statistics until analysed; without them the
            # planner takes the chunk for a handful of rows and joins it by scanning.
            # Two columns are enough: the row count (each join is on a unique key of the
            # other table) and how many rows are suppressions (a few must not be taken for
            # all, or the planner hashes the whole subscriber table to update them). A
            # fifth of analysing every column.
            cur.execute("ANALYZE import_rows (email_key, suppress)")

    def merge(self) -> Counts:
        """Merge what ``stage`` put in (in the caller's transaction)."""
        return self._merge(self.conn, self.target)

    def write(self, chunk: dict[str, Row]) -> Counts:
        self.stage(chunk)
        return self.merge()


def writer_for(conn: Connection, target: Target, *, plain: bool, merge: Merge | None
               ) -> SqliteWriter | PostgresWriter:
    """COPY and ``merge`` on PostgreSQL; the batched statements on SQLite, or when no
    ``merge`` is given (they work on PostgreSQL too, at a tenth of the speed)."""
    if conn.dialect.name == "postgresql" and merge is not None:
        return PostgresWriter(conn, target, plain=plain, merge=merge)
    return SqliteWriter(conn, target)
