"""CSV import and export, streaming: a million rows never sit in memory.

Import reads with ``csv.reader`` and writes in chunks (``CHUNK`` rows on SQLite,
``COPY_CHUNK`` on PostgreSQL, where a chunk goes through COPY and one merge statement:
``subscribers.bulk``), each chunk its own transaction, so memory stays flat and a crash
loses at most the chunks in flight; running the same import again is harmless
(everything merges on ``email_key``). Each import is one ``import_batch`` row: the
file, the time, the source and the counts, the consent evidence of everyone it brought
in. A dry run does all of it in one transaction and rolls it back, so its report is
exactly what the import would do.

Encoding: bytes are decoded as UTF-8 (a BOM is accepted). A file that is not UTF-8 is
not refused as a whole - the import streams, so it cannot know before it has read the
last line - instead each row holding bytes that are not UTF-8 is reported as a row error
and imports nothing, and rows that decode cleanly import. Nothing is ever stored
mis-decoded. A header line that is not UTF-8 (UTF-16 files, say) refuses the whole file
with one line, before anything is written.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import json
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import IO, Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from mailer.core.clock import utcnow
from mailer.core.errors import InvalidInput
from subscribers import bulk, presets, service
from subscribers.bulk import Row
from subscribers.models import (
    ImportBatch,
    MailingList,
    Membership,
    Subscriber,
    SubscriberStatus,
)

S = SubscriberStatus

CHUNK = 1000
# PostgreSQL: bigger chunks, as a merge statement has a fixed cost; ~15 MB of rows,
# and at most three chunks are held at once (``_read_ahead``).
COPY_CHUNK = 20_000
MAX_FILE_NAME = 255
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
class ImportReport(bulk.Counts):
    """The counts of all chunks (``suppressions``: rows the file marks as gone, a
    platform's unsubscribed or cleaned contacts, suppressed now), and the bad rows."""

    rows: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    # Errors beyond MAX_ERRORS_KEPT are counted, not kept.
    errors_not_listed: int = 0
    batch_id: int | None = None
    dry_run: bool = False

    @property
    def error_count(self) -> int:
        return len(self.errors) + self.errors_not_listed

    def as_dict(self, *, errors: int = 1000) -> dict:
        """The counts, and the first ``errors`` bad rows by line."""
        return {"imported": self.imported, "updated": self.updated, "skipped_suppressed": self.skipped_suppressed,
                "skipped_existing_status": self.skipped_existing_status, "suppressions": self.suppressions,
                "error_count": self.error_count, "batch_id": self.batch_id, "dry_run": self.dry_run,
                "errors": [{"line": line, "reason": reason} for line, reason in self.errors[:errors]]}

    def add(self, counts: bulk.Counts) -> None:
        for name in bulk.Counts.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(counts, name))

    def add_error(self, line_no: int, reason: str) -> None:
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append((line_no, reason))
        else:
            self.errors_not_listed += 1


def _text_stream(stream: IO) -> IO[str]:
    """A text view of ``stream``: bytes are decoded as UTF-8 with surrogateescape, so
    an undecodable byte shows up as a lone surrogate in its row instead of aborting."""
    if isinstance(stream, io.TextIOBase):
        return stream
    return io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")


def _not_utf8(values: list[str]) -> bool:
    """Whether the row holds bytes that were not UTF-8 (surrogateescape's lone
    surrogates): encoding it back is one C call, where a loop over characters was a
    third of a large import's client time."""
    try:
        "".join(values).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _unescape(value: str) -> str:
    """Undo ``export_csv``'s formula escaping, so export then import round-trips."""
    if len(value) > 1 and value[0] == "'" and value[1] in FORMULA_STARTS:
        return value[1:]
    return value


class _Header:
    """Which column is what: our own CSV's conventions, or a platform's (``preset``)."""

    def __init__(self, header: list[str], preset: presets.Preset | None = None):
        names = [h.strip().lstrip("\ufeff").strip() for h in header]
        lowered = [n.lower() for n in names]
        self.preset = preset
        self.columns = {n: i for i, n in reversed(list(enumerate(lowered)))}
        wanted = preset.email if preset else EMAIL_HEADERS
        self.email = next((lowered.index(h) for h in wanted if h in lowered), None)
        if self.email is None:
            shown = ", ".join(repr(n) for n in names[:10]) or "nothing"
            if preset:
                raise InvalidInput(f"not {preset.title}: the header has no {wanted[0]!r} column (found {shown})")
            raise InvalidInput(f"the CSV header has no email column (found {shown}); name one column 'email'")
        if preset and preset.marks and not set(preset.marks) & set(lowered):
            raise InvalidInput(f"not {preset.title}: the header has none of its columns "
                               f"{', '.join(c.upper() for c in preset.marks)}")
        if preset:
            self.names = [self.columns[c] for c in preset.name_columns if c in self.columns]
        else:
            self.names = [i for i in [next((lowered.index(h) for h in NAME_HEADERS if h in lowered), None)]
                          if i is not None]
        self.json_attributes = lowered.index("attributes") if "attributes" in lowered else None
        skip = {self.email, self.json_attributes, *self.names}
        not_attributes = preset.consumed if preset else EXPORT_ONLY
        self.attributes = [
            (i, n) for i, n in enumerate(names)
            if i not in skip and n and lowered[i] not in not_attributes
        ]
        self.width = len(names)

    def parse(self, line_no: int, row: list[str]) -> Row:
        # Written for speed (it runs per row of a million-row file): no closure per cell,
        # and the NUL and length checks only where a value could fail them.
        width = self.width
        if len(row) != width:
            if len(row) > width:
                if any(v.strip() for v in row[width:]):
                    raise InvalidInput(f"{len(row)} fields, the header has {width}")
                row = row[:width]
            else:
                row = row + [""] * (width - len(row))
        email = service.normalise_email(_unescape(row[self.email].strip()))
        if len(self.names) == 1:
            name = service.clean_name(_unescape(row[self.names[0]].strip()))
        else:
            name = service.clean_name(" ".join(filter(None, (_unescape(row[i].strip()) for i in self.names))))
        attributes: dict[str, Any] = {}
        if self.json_attributes is not None and (text := _unescape(row[self.json_attributes].strip())):
            try:
                loaded = json.loads(text)
            except ValueError as err:
                raise InvalidInput("the attributes column is not JSON") from err
            if not isinstance(loaded, dict):
                raise InvalidInput("the attributes column is not a JSON object")
            if "\x00" in text or "\\u0000" in text:
                raise InvalidInput("the attributes column holds a NUL character")
            attributes.update(loaded)
        for i, column in self.attributes:
            value = row[i].strip()
            if value:
                if value[0] == "'":
                    value = _unescape(value)
                if "\x00" in value:
                    raise InvalidInput(f"column {column!r} holds a NUL character")
                if len(value) > MAX_ATTRIBUTE:
                    raise InvalidInput(f"column {column!r} is longer than {MAX_ATTRIBUTE} characters")
                attributes[column] = value
        if len(attributes) > MAX_ATTRIBUTES:
            raise InvalidInput(f"more than {MAX_ATTRIBUTES} attributes")
        parsed = Row(line_no, email, service.email_key(email), name, attributes)
        if self.preset and self.preset.finish:
            self.preset.finish(parsed, lambda column: self._cell(row, self.columns.get(column)))
        return parsed

    @staticmethod
    def _cell(row: list[str], i: int | None) -> str:
        return _unescape(row[i].strip()) if i is not None and i < len(row) else ""


def _rows(reader, header: _Header, report: ImportReport) -> Iterator[Row]:
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
        # One string for both checks (per row of a million: no generator per row).
        joined = "".join(row)
        if not joined or joined.isspace():
            continue  # blank line
        try:
            joined.encode("utf-8")  # bytes that were not UTF-8 are lone surrogates here (_text_stream)
        except UnicodeEncodeError:
            report.add_error(start, "not valid UTF-8 (save the file as UTF-8)")
            continue
        try:
            yield header.parse(start, row)
        except InvalidInput as err:
            report.add_error(start, str(err))


def _chunks(rows: Iterator[Row], size: int) -> Iterator[dict[str, Row]]:
    """Rows grouped by ``email_key``: duplicates in a chunk merge (later names and
    attributes win, empty cells never blank out what an earlier row gave)."""
    chunk: dict[str, Row] = {}
    for row in rows:
        seen = chunk.get(row.key)
        if seen is None:
            chunk[row.key] = row
        else:
            seen.name = row.name or seen.name
            seen.attributes.update(row.attributes)
            seen.tags = sorted({*seen.tags, *row.tags})
            # Gone anywhere in the file is gone: a suppression is never undone by a later row.
            seen.suppress = seen.suppress or row.suppress
            seen.status = row.status or seen.status
            seen.confirmed_at = row.confirmed_at or seen.confirmed_at
        if len(chunk) >= size:
            yield chunk
            chunk = {}
    if chunk:
        yield chunk


def import_csv(
    engine: Engine,
    stream: IO[str] | IO[bytes],
    *,
    list_name: str,
    confirmed: bool = False,
    origin: str = "import",
    file_name: str = "",
    dry_run: bool = False,
    merge: bulk.Merge | None = None,
    format: str = "csv",  # noqa: A002 - the CLI's --format
) -> ImportReport:
    """Import subscribers from CSV into ``list_name`` (created if needed).

    The header needs an ``email`` column (``Email``, ``e-mail`` also work); ``name`` is
    the name, every other column becomes an attribute. Rows are ``active`` only with
    ``confirmed=True`` (the operator vouches for their consent), else ``pending``.
    Suppressed addresses and subscribers who unsubscribed, bounced or complained are
    skipped and left untouched; existing subscribers keep everything the file does not
    give again. Bad rows are reported by line number and the rest import. The import is
    recorded as one ``import_batch`` naming ``file_name``; ``dry_run`` reports the same
    counts and changes nothing. ``format`` reads a platform's export as it comes
    (``subscribers.presets``: mailchimp, substack, listmonk). ``merge`` (``mailer.queries.merge_import_chunk``) makes
    PostgreSQL take each chunk through COPY and that one statement.
    A missing or unusable header raises ``InvalidInput`` before anything is written.
    """
    chosen = presets.preset(format)
    text = _text_stream(stream)
    try:
        with _cycle_collection_paused():
            return _import(engine, text, list_name=list_name, confirmed=confirmed, origin=origin,
                           file_name=file_name, dry_run=dry_run, merge=merge, preset=chosen)
    finally:
        if text is not stream:
            text.detach()  # leave the caller's binary stream open, as it was given


@contextlib.contextmanager
def _cycle_collection_paused() -> Iterator[None]:
    """Python's cycle collector off for the import: tens of thousands of rows stay alive
    in the chunks, and each full collection walked them all again, a third of a large
    import's client time (bench/import_csv.py). Rows hold no cycles, so nothing is left
    uncollected by the import; other threads' cycles wait until it ends. With two imports
    at once, the one that turned it off turns it back on."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _import(engine: Engine, text: IO[str], *, list_name: str, confirmed: bool, origin: str, file_name: str,
            dry_run: bool, merge: bulk.Merge | None, preset: presets.Preset | None) -> ImportReport:
    report = ImportReport(dry_run=dry_run)
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
    header = _Header(first, preset)
    status = S.active if confirmed else S.pending
    plain = preset is None
    # Every row's attributes are its non-empty cells of these columns: on PostgreSQL the
    # merge builds the JSON (``bulk.Target.columns``). A JSON ``attributes`` column or a
    # preset can bring others.
    columns = (tuple(dict.fromkeys(name for _, name in header.attributes))
               if plain and header.json_attributes is None else None)
    rows = _counted(_rows(reader, header, report), report)

    with engine.connect() as conn:
        if dry_run:
            # One transaction for everything, rolled back: the counts are the real ones,
            # duplicates across chunks included, and nothing stays.
            with conn.begin() as whole:
                target = _start(conn, list_name=list_name, status=status, batch=None, columns=columns)
                _write(conn, bulk.writer_for(conn, target, plain=plain, merge=merge), rows, report)
                whole.rollback()
            return report
        with conn.begin():
            batch_id = _record_batch(conn, list_name=list_name, file_name=file_name,
                                     source=preset.name if preset else "csv", origin=origin, status=status)
            target = _start(conn, list_name=list_name, status=status, batch=batch_id, columns=columns)
        report.batch_id = batch_id
        writer = bulk.writer_for(conn, target, plain=plain, merge=merge)
        if isinstance(writer, bulk.PostgresWriter):
            with contextlib.ExitStack() as more:
                others = [more.enter_context(engine.connect()) for _ in range(PIPELINE - 1)]
                writers = (writer, *(bulk.writer_for(c, target, plain=plain, merge=merge)
                                     for c in others))
                _write_overlapped(writers, rows, report)
        else:
            _write(conn, writer, rows, report, commit_each=True)
        with conn.begin():
            _update_batch(conn, report, finished=True)
    return report


def _counted(rows: Iterator[Row], report: ImportReport) -> Iterator[Row]:
    for row in rows:
        report.rows += 1
        yield row


def _start(conn: Connection, *, list_name: str, status: str, batch: int | None,
           columns: tuple[str, ...] | None) -> bulk.Target:
    with Session(bind=conn) as session:
        list_id = service.ensure_list(session, list_name).id
    return bulk.Target(list_id=list_id, status=status, batch_id=batch, now=utcnow(), columns=columns)


def _write(conn: Connection, writer: bulk.SqliteWriter | bulk.PostgresWriter, rows: Iterator[Row],
           report: ImportReport, *, commit_each: bool = False) -> None:
    size = COPY_CHUNK if isinstance(writer, bulk.PostgresWriter) else CHUNK
    # Closed on the way out, error or not: its reader thread stops now, not when the
    # generator is collected.
    with contextlib.closing(_read_ahead(_chunks(rows, size), report)) as chunks:
        for chunk, read, errors in chunks:
            if not commit_each:
                report.add(writer.write(chunk))
                continue
            with conn.begin():
                report.add(writer.write(chunk))
                # The batch's counts move with the chunks they count.
                _update_batch(conn, report, finished=False, rows=read, errors=errors)


# Connections an import on PostgreSQL uses: one stages the next chunk while up to two merge.
PIPELINE = 3


def _write_overlapped(writers: tuple[bulk.PostgresWriter, ...], rows: Iterator[Row], report: ImportReport) -> None:
    """PostgreSQL: chunk N+2 is staged (client work: text and COPY) on one connection
    while chunks N and N+1 merge (server work) on the other two, each in a thread (the
    driver lets go of the GIL while it waits). A chunk merges beside the one before only
    when the two share no address; otherwise it waits for that one's commit, so a later
    row of an address always sees what an earlier chunk made of it (chunks further back
    have committed by then). Commits go in file order whatever order the merges finish
    in, and each moves the batch's counts. A crash loses at most the chunks in flight
    (running the import again is harmless)."""
    with ThreadPoolExecutor(max_workers=len(writers) - 1, thread_name_prefix="import-merge") as pool:
        before: Future | None = None  # the previous chunk's merge
        before_that: Future | None = None
        before_keys: set[str] = set()
        chunks = _read_ahead(_chunks(rows, COPY_CHUNK), report)
        try:
            for n, (chunk, read, errors) in enumerate(chunks):
                # Its connection's last chunk (n - 3) has committed: it was ``before_that``
                # one chunk ago, and waited for then.
                writer = writers[n % len(writers)]
                transaction = writer.conn.begin()
                try:
                    writer.stage(chunk)
                    keys = set(chunk)
                    del chunk
                    if before_that is not None:
                        before_that.result()  # at most two merges at once (or its error, raised here)
                    if before is not None and not keys.isdisjoint(before_keys):
                        before.result()  # an address of the previous chunk again: after its commit
                except BaseException:
                    transaction.rollback()
                    raise
                merging = pool.submit(_merge_and_commit, writer, transaction, report, read, errors, before)
                before_that, before, before_keys = before, merging, keys
            for future in (before_that, before):
                if future is not None:
                    future.result()
        finally:
            chunks.close()  # its reader thread stops now, not when the generator is collected
            wait([f for f in (before_that, before) if f is not None])  # no merge left running behind an error


def _merge_and_commit(writer: bulk.PostgresWriter, transaction, report: ImportReport, read: int, errors: int,
                      before: Future | None) -> None:
    try:
        counts = writer.merge()
        if before is not None:
            before.result()  # commits in file order; a failure before this one fails it too
        report.add(counts)
        # The batch's counts move with the chunks they count.
        _update_batch(writer.conn, report, finished=False, rows=read, errors=errors)
    except BaseException:
        transaction.rollback()
        raise
    transaction.commit()


_DONE = object()


def _read_ahead(chunks: Iterator[dict[str, Row]], report: ImportReport
                ) -> Iterator[tuple[dict[str, Row], int, int]]:
    """``chunks``, each read and parsed on a thread while the database writes the one
    before (the driver lets go of the GIL while it waits): parsing is about a third of an
    import's time, and this hides it. At most two chunks wait, so memory stays flat.
    Each comes with the rows and errors counted up to its end."""
    ready: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def hand(item) -> None:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read() -> None:
        try:
            for chunk in chunks:
                hand((chunk, report.rows, report.error_count))
                if stop.is_set():
                    return
            hand(_DONE)
        except BaseException as err:  # handed to the importing thread, raised there
            hand(err)

    reader = threading.Thread(target=read, name="import-reader", daemon=True)
    reader.start()
    try:
        while (item := ready.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()


def _record_batch(conn: Connection, *, list_name: str, file_name: str, source: str, origin: str, status: str) -> int:
    return conn.execute(
        insert(ImportBatch).values(
            list_name=list_name.strip()[:100], file_name=(file_name or "")[:MAX_FILE_NAME], source=source,
            origin=origin[:32], status=status, started_at=utcnow(), rows=0, imported=0, updated=0,
            skipped_suppressed=0, skipped_existing_status=0, suppressions_added=0, errors=0,
        ).returning(ImportBatch.id)
    ).scalar_one()


def _update_batch(conn: Connection, report: ImportReport, *, finished: bool, rows: int | None = None,
                  errors: int | None = None) -> None:
    values = {"rows": report.rows if rows is None else rows, "imported": report.imported, "updated": report.updated,
              "skipped_suppressed": report.skipped_suppressed, "skipped_existing_status": report.skipped_existing_status,
              "suppressions_added": report.suppressions, "errors": report.error_count if errors is None else errors}
    if finished:
        values["finished_at"] = utcnow()
    conn.execute(update(ImportBatch).where(ImportBatch.id == report.batch_id).values(**values))


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
