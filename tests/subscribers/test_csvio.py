"""CSV import and export against the real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import io

import pytest
from sqlalchemy import func, select

from mailer import queries
from mailer.core.db import transaction
from mailer.core.errors import InvalidInput
from subscribers import csvio, service
from subscribers.models import Event, ImportBatch, MailingList, Membership, Subscriber, Suppression


def _import(engine, text: str | bytes, **kw):
    """The import as the product runs it: on PostgreSQL through COPY and the merge."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    kw.setdefault("list_name", "weekly")
    kw.setdefault("merge", queries.merge_import_chunk)
    return csvio.import_csv(engine, io.BytesIO(data), **kw)


def _subscribers(engine) -> dict[str, Subscriber]:
    with transaction(engine) as s:
        return {sub.email_key: sub for sub in s.scalars(select(Subscriber))}


def test_import_merges_duplicates_and_reports_bad_rows(engine):
    report = _import(engine, (
        "Email,Name,City\n"
        "ann@example.com,Ann,Paris\n"
        "not-an-address,Bob,Rome\n"
        "ANN@EXAMPLE.COM,,Berlin\n"
        "\n"
        "carl@example.com,\"Carl\nCarlsson\",Oslo\n"
        "dora@example.com,Dora,Bern\n"
    ))
    assert (report.imported, report.updated) == (2, 0)
    assert [line for line, _ in report.errors] == [3, 6]
    assert "@-sign" in report.errors[0][1] and "control" in report.errors[1][1]
    subs = _subscribers(engine)
    assert set(subs) == {"ann@example.com", "dora@example.com"}
    assert subs["ann@example.com"].name == "Ann"
    assert subs["ann@example.com"].attributes == {"City": "Berlin"}
    assert {s.status for s in subs.values()} == {"pending"}


def test_confirmed_flag_makes_active(engine):
    report = _import(engine, "email\nann@example.com\n", confirmed=True)
    assert report.imported == 1
    assert _subscribers(engine)["ann@example.com"].status == "active"


def test_reimport_changes_nothing_it_does_not_give(engine):
    with transaction(engine) as s:
        service.add_subscriber(s, email="ann@example.com", name="Ann", status="active",
                               attributes={"city": "Paris", "plan": "pro"}, list_name="old")
        gone = service.add_subscriber(s, email="gone@example.com", name="Gone", status="active").id
        service.unsubscribe(s, subscriber_id=gone, origin="admin")
        service.suppress(s, email="trap@example.com", reason="complaint")
    report = _import(engine, "e-mail,name,city\nann@example.com,,Rome\ngone@example.com,New,\n"
                             "TRAP@example.com,Trap,\nnew@example.com,New,\n")
    assert (report.imported, report.updated, report.skipped_existing_status, report.skipped_suppressed) == (1, 1, 1, 1)
    subs = _subscribers(engine)
    ann = subs["ann@example.com"]
    assert (ann.name, ann.status, ann.attributes) == ("Ann", "active", {"city": "Rome", "plan": "pro"})
    assert (subs["gone@example.com"].status, subs["gone@example.com"].name) == ("unsubscribed", "Gone")
    assert "trap@example.com" not in subs
    with transaction(engine) as s:
        # ann is on both lists now; gone was not added to the new one.
        assert s.scalar(select(func.count()).select_from(Membership)) == 3


def test_missing_email_column_is_one_line(engine):
    with pytest.raises(InvalidInput, match="no email column") as err:
        _import(engine, "name,city\nAnn,Paris\n")
    assert "\n" not in str(err.value)
    assert _subscribers(engine) == {}


def test_header_not_utf8_refuses_the_file(engine):
    with pytest.raises(InvalidInput, match="not UTF-8"):
        _import(engine, "email,name\nann@example.com,Ann\n".encode("utf-16"))
    assert _subscribers(engine) == {}


def test_rows_not_utf8_are_row_errors(engine):
    report = _import(engine, b"email,name\nann@example.com,Ann\nbob@example.com,J\xfcrgen\n")
    assert report.imported == 1
    assert report.errors == [(3, "not valid UTF-8 (save the file as UTF-8)")]


def test_ten_megabyte_field_is_a_row_error(engine):
    big = "x" * (10 * 1024 * 1024)
    report = _import(engine, f"email,name\nann@example.com,{big}\nbob@example.com,Bob\n")
    assert report.imported == 1
    assert report.errors and report.errors[0][0] == 2
    assert set(_subscribers(engine)) == {"bob@example.com"}


def test_more_rows_than_a_chunk(engine, monkeypatch):
    monkeypatch.setattr(csvio, "CHUNK", 7)
    monkeypatch.setattr(csvio, "COPY_CHUNK", 7)
    lines = ["email,name"] + [f"user{i}@example.com,User {i}" for i in range(50)] + ["user3@example.com,Again"]
    report = _import(engine, "\n".join(lines) + "\n")
    assert (report.imported, report.updated) == (50, 1)
    assert _subscribers(engine)["user3@example.com"].name == "Again"


def test_export_escapes_formulas_and_round_trips(engine):
    _import(engine, 'email,name,note\nann@example.com,=cmd()|\' /C calc\'!A0,"+1"\nbob@example.com,-2,@x\n')
    out = io.StringIO()
    with transaction(engine) as s:
        assert csvio.export_csv(s, out, list_name="weekly") == 2
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert rows[0]["name"] == "'=cmd()|' /C calc'!A0"
    assert rows[1]["name"] == "'-2"
    for row in rows:
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r"))
    with transaction(engine) as s:
        s.execute(Subscriber.__table__.delete())
    report = _import(engine, out.getvalue(), list_name="again")
    assert report.imported == 2 and not report.errors
    subs = _subscribers(engine)
    assert subs["ann@example.com"].name == "=cmd()|' /C calc'!A0"
    assert subs["ann@example.com"].attributes == {"note": "+1"}
    assert subs["bob@example.com"].attributes == {"note": "@x"}


def test_caller_stream_stays_open(engine):
    stream = io.BytesIO(b"email\nann@example.com\n")
    report = csvio.import_csv(engine, stream, list_name="weekly", merge=queries.merge_import_chunk)
    assert report.imported == 1 and not stream.closed


def _state(engine) -> dict:
    """Everything an import can change, ids and times left out where they differ by run."""
    with transaction(engine) as s:
        subs = {sub.email_key: (sub.email, sub.name, sub.status, sub.attributes, sub.tags, sub.updated_at,
                                sub.confirmed_at) for sub in s.scalars(select(Subscriber))}
        members = sorted(s.execute(select(Membership.list_id, Membership.subscriber_id)).all())
        batches = s.scalar(select(func.count()).select_from(ImportBatch))
        suppressions = sorted(s.scalars(select(Suppression.email_hash)))
    return {"subscribers": subs, "members": members, "batches": batches, "suppressions": suppressions}


def _existing(engine) -> None:
    with transaction(engine) as s:
        service.add_subscriber(s, email="ann@example.com", name="Ann", status="pending",
                               attributes={"city": "Paris"}, list_name="old")
        gone = service.add_subscriber(s, email="gone@example.com", name="Gone", status="active").id
        service.unsubscribe(s, subscriber_id=gone, origin="admin")
        service.suppress(s, email="trap@example.com", reason="complaint")


MIXED = ("email,name,city\n"
         "ann@example.com,,Rome\n"         # existing, pending: promoted, city changes, name kept
         "gone@example.com,Back,\n"        # unsubscribed: untouched
         "trap@example.com,Trap,\n"        # suppressed: skipped
         "new1@example.com,New One,Oslo\n"
         "broken,Bad,\n"                   # a bad row: line 6
         "new2@example.com,New Two,\n"
         "NEW1@example.com,,Bergen\n"      # a duplicate in the next chunk: an update
         "new3@example.com,New Three,\n")


def test_an_import_is_one_batch_of_consent_evidence_not_an_event_per_subscriber(engine):
    report = _import(engine, "email,name\nann@example.com,Ann\nbob@example.com,Bob\nbroken,X\n",
                     confirmed=True, origin="cli", file_name="people.csv")
    with transaction(engine) as s:
        batch = s.scalars(select(ImportBatch)).one()
        subs = list(s.scalars(select(Subscriber)))
        events = s.scalar(select(func.count()).select_from(Event))
    assert report.batch_id == batch.id
    assert (batch.file_name, batch.source, batch.origin, batch.status, batch.list_name) == (
        "people.csv", "csv", "cli", "active", "weekly")
    assert (batch.rows, batch.imported, batch.updated, batch.errors) == (2, 2, 0, 1)
    assert batch.finished_at is not None and batch.finished_at >= batch.started_at
    assert {sub.import_batch_id for sub in subs} == {batch.id}
    assert events == 0


def test_a_dry_run_reports_what_the_import_does_and_changes_nothing(engine, monkeypatch):
    monkeypatch.setattr(csvio, "CHUNK", 4)
    monkeypatch.setattr(csvio, "COPY_CHUNK", 4)
    _existing(engine)
    before = _state(engine)
    dry = _import(engine, MIXED, confirmed=True, dry_run=True)
    assert _state(engine) == before
    real = _import(engine, MIXED, confirmed=True)
    assert dry.as_dict() | {"batch_id": None, "dry_run": None} == real.as_dict() | {"batch_id": None, "dry_run": None}
    assert (real.imported, real.updated, real.skipped_existing_status, real.skipped_suppressed) == (3, 2, 1, 1)
    assert [line for line, _ in real.errors] == [6]
    after = _state(engine)["subscribers"]
    assert after["ann@example.com"][1:4] == ("Ann", "active", {"city": "Rome"})
    assert after["gone@example.com"] == before["subscribers"]["gone@example.com"]
    assert after["new1@example.com"][1:4] == ("New One", "active", {"city": "Bergen"})
    assert "trap@example.com" not in after


def test_importing_the_same_file_again_changes_nothing(engine, monkeypatch):
    monkeypatch.setattr(csvio, "COPY_CHUNK", 3)
    monkeypatch.setattr(csvio, "CHUNK", 3)
    _existing(engine)
    first = _import(engine, MIXED, confirmed=True)
    before = _state(engine)
    again = _import(engine, MIXED, confirmed=True)
    after = _state(engine)
    assert (again.imported, again.updated) == (0, first.imported + first.updated)
    assert after["batches"] == before["batches"] + 1
    assert {k: v for k, v in after.items() if k != "batches"} == {k: v for k, v in before.items() if k != "batches"}


def test_copy_and_the_batched_statements_agree(engine, monkeypatch):
    """On PostgreSQL the product's path is COPY and one merge; the batched statements
    (SQLite's writer) must mean exactly the same thing, chunk boundaries included."""
    monkeypatch.setattr(csvio, "CHUNK", 3)
    monkeypatch.setattr(csvio, "COPY_CHUNK", 3)
    results = []
    for merge in (None, queries.merge_import_chunk):
        with transaction(engine) as s:
            for table in (Membership, Subscriber, Suppression, ImportBatch, Event):
                s.execute(table.__table__.delete())
        _existing(engine)
        report = _import(engine, MIXED, confirmed=True, merge=merge).as_dict()
        state = _state(engine)
        # Ids differ between the two runs; compare memberships by address and list.
        with transaction(engine) as s:
            members = sorted(s.execute(select(Subscriber.email_key, MailingList.name)
                                       .join(Membership, Membership.subscriber_id == Subscriber.id)
                                       .join(MailingList, MailingList.id == Membership.list_id)).all())
        subs = {k: v[:5] for k, v in state["subscribers"].items()}
        results.append((report | {"batch_id": None}, subs, members, state["suppressions"]))
    assert results[0] == results[1]


def test_a_nul_character_in_a_column_is_a_row_error(engine):
    report = _import(engine, 'email,note,attributes\nann@example.com,a\x00b,\nbob@example.com,,"{""x"": ""\\u0000""}"\n'
                             "carl@example.com,ok,\n")
    assert [line for line, _ in report.errors] == [2, 3]
    assert "NUL" in report.errors[0][1] and "NUL" in report.errors[1][1]
    assert set(_subscribers(engine)) == {"carl@example.com"}


def test_a_file_that_fails_part_way_stops_the_import_and_keeps_what_was_committed(engine, monkeypatch):
    """The file is read on a thread ahead of the writes: its failure reaches the caller,
    the chunks before it stay, and the batch is left unfinished with their counts."""
    monkeypatch.setattr(csvio, "CHUNK", 2)
    monkeypatch.setattr(csvio, "COPY_CHUNK", 2)
    good = "email\n" + "".join(f"u{i}@example.com\n" for i in range(4))

    class Failing(io.StringIO):
        def __next__(self):  # csv.reader's way in: the end of the file is a failure
            line = self.readline()
            if not line:
                raise OSError("the disk went away")
            return line

    with pytest.raises(OSError, match="the disk went away"):
        csvio.import_csv(engine, Failing(good), list_name="weekly", merge=queries.merge_import_chunk)
    with transaction(engine) as s:
        batch = s.scalars(select(ImportBatch)).one()
    assert batch.finished_at is None
    assert batch.imported == len(_subscribers(engine)) == 4


def test_odd_attribute_columns_and_values_arrive_exactly(engine, monkeypatch):
    """On PostgreSQL the attribute values travel as plain columns of COPY's text format and
    the server builds the JSON: column names that look like SQL, quotes, commas, tabs,
    line breaks, backslashes, a line that is COPY's end marker, and more attribute columns
    than one jsonb_build_object call takes must all arrive as the parser read them."""
    monkeypatch.setattr(csvio, "COPY_CHUNK", 2)
    monkeypatch.setattr(csvio, "CHUNK", 2)
    many = [f"c{n}" for n in range(60)]
    header = ["email", "name", "city'); DROP TABLE subscriber; --", 'say "hi"', "ünï", *many]
    odd = ['Paris, "the" city\tand a tab', "line one\r\nline two\n\\.\nthree", "back\\slash\\N", *[""] * 60]
    full = ["x", "y", "z", *[f"v{n}" for n in range(45)], *[""] * 15]
    buffer = io.StringIO()
    out = csv.writer(buffer, lineterminator="\n")
    out.writerows([header, ["ann@example.com", "", *odd], ["bob@example.com", "Bob", *full],
                   ["carl@example.com", "'=Carl", "\\.", "", "", *[""] * 59, "last"]])
    report = _import(engine, buffer.getvalue())
    assert (report.imported, report.error_count) == (3, 0), report.errors
    subs = _subscribers(engine)
    assert subs["ann@example.com"].name == ""
    assert subs["ann@example.com"].attributes == {header[2]: odd[0], header[3]: odd[1], header[4]: odd[2]}
    assert subs["bob@example.com"].attributes == {
        header[2]: "x", header[3]: "y", header[4]: "z", **{f"c{n}": f"v{n}" for n in range(45)}}
    assert subs["carl@example.com"].name == "=Carl"
    assert subs["carl@example.com"].attributes == {header[2]: "\\.", "c59": "last"}
    with transaction(engine) as s:
        assert s.scalar(select(func.count()).select_from(Subscriber)) == 3  # the table is still there


def test_a_later_import_with_another_header_on_the_same_connection(engine):
    """Each import stages with its own header's columns, even on a pooled connection an
    earlier import staged on."""
    _import(engine, "email,city,plan\nann@example.com,Paris,pro\n")
    _import(engine, "email,colour\nbob@example.com,red\nann@example.com,blue\n")
    subs = _subscribers(engine)
    assert subs["ann@example.com"].attributes == {"city": "Paris", "plan": "pro", "colour": "blue"}
    assert subs["bob@example.com"].attributes == {"colour": "red"}


def test_a_later_row_of_an_address_wins_across_chunks(engine, monkeypatch):
    """Chunks merge one at a time in file order (on PostgreSQL the next one is staged
    while the one before merges): the last row of an address decides its name."""
    monkeypatch.setattr(csvio, "COPY_CHUNK", 2)
    monkeypatch.setattr(csvio, "CHUNK", 2)
    rows = "".join(f"u{i}@example.com,First {i}\n" for i in range(6))
    rows += "".join(f"u{i}@example.com,Second {i}\n" for i in range(6))
    report = _import(engine, "email,name\n" + rows)
    assert (report.imported, report.updated) == (6, 6)
    assert {k: s.name for k, s in _subscribers(engine).items()} == {
        f"u{i}@example.com": f"Second {i}" for i in range(6)}


def test_a_later_row_of_an_address_in_the_very_next_chunk_wins(engine, monkeypatch):
    """On PostgreSQL two chunks merge at once only when they share no address: here each
    chunk holds the second row of an address whose first row is in the chunk before."""
    monkeypatch.setattr(csvio, "COPY_CHUNK", 2)
    monkeypatch.setattr(csvio, "CHUNK", 2)
    rows = "u0@example.com,First 0\n" + "".join(
        f"u{i}@example.com,First {i}\nu{i - 1}@example.com,Second {i - 1}\n" for i in range(1, 12))
    report = _import(engine, "email,name\n" + rows)
    assert (report.imported, report.updated) == (12, 11)
    names = {k: s.name for k, s in _subscribers(engine).items()}
    assert names == {**{f"u{i}@example.com": f"Second {i}" for i in range(11)}, "u11@example.com": "First 11"}


def test_a_merge_that_fails_stops_the_import_and_keeps_what_was_committed(engine, monkeypatch):
    """A failure in the merge (on PostgreSQL it runs on a thread while the next chunk is
    staged) reaches the caller, nothing hangs, and the chunks merged before it stay."""
    monkeypatch.setattr(csvio, "COPY_CHUNK", 2)
    monkeypatch.setattr(csvio, "CHUNK", 2)
    calls = []

    def merge(conn, target):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("the merge went wrong")
        return queries.merge_import_chunk(conn, target)

    good = "email\n" + "".join(f"u{i}@example.com\n" for i in range(10))
    if engine.dialect.name != "postgresql":
        merge = None  # SQLite's writer: make its third chunk fail instead
        from subscribers import bulk

        original = bulk.SqliteWriter.write

        def write(self, chunk):
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError("the merge went wrong")
            return original(self, chunk)

        monkeypatch.setattr(bulk.SqliteWriter, "write", write)
    with pytest.raises(RuntimeError, match="the merge went wrong"):
        _import(engine, good, merge=merge)
    import threading

    # The file's reader thread stopped with the import, not whenever its generator is collected.
    assert not [t for t in threading.enumerate() if t.name.startswith(("import-reader", "import-merge"))]
    assert len(_subscribers(engine)) == 4
    with transaction(engine) as s:
        batch = s.scalars(select(ImportBatch)).one()
    assert (batch.imported, batch.finished_at) == (4, None)


def test_the_cycle_collector_is_back_on_after_an_import(engine):
    import gc

    assert gc.isenabled()
    _import(engine, "email\nann@example.com\n")
    assert gc.isenabled()
    with pytest.raises(InvalidInput):
        _import(engine, "name\nAnn\n")
    assert gc.isenabled()
    gc.disable()
    try:
        _import(engine, "email\nbob@example.com\n")
        assert not gc.isenabled()  # it was off before: left off
    finally:
        gc.enable()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_signup_during_the_merge_is_updated_not_lost(engine):
    """The merge inserts new subscribers without ON CONFLICT (it costs per row): an
    address someone adds while the statement runs makes it fail on the unique key, and the
    chunk is merged again in the tolerant form, which finds that subscriber and updates
    them. Made deterministic by holding the signup's transaction open until the import's
    INSERT waits on it."""
    import threading
    import time

    from sqlalchemy import text

    signup = engine.connect()
    tx = signup.begin()
    with transaction(engine) as s:
        service.ensure_list(s, "weekly")
    signup.execute(text(
        "INSERT INTO subscriber (email, email_key, name, status, attributes, tags, created_at, updated_at) "
        "VALUES ('ann@example.com', 'ann@example.com', 'Ann', 'active', '{}', '[]', now(), now())"))
    result: dict = {}

    def run() -> None:
        try:
            result["report"] = _import(engine, "email,city\nann@example.com,Paris\nbob@example.com,Rome\n",
                                       confirmed=True)
        except BaseException as err:  # shown by the assertion below
            result["report"] = err

    importer = threading.Thread(target=run)
    importer.start()
    try:
        deadline = time.monotonic() + 30
        with engine.connect() as watch:
            while time.monotonic() < deadline:
                waiting = watch.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%FROM import_rows%'")).scalar()
                watch.rollback()  # pg_stat_activity is read once per transaction
                if waiting:
                    break
                time.sleep(0.05)
            else:
                pytest.fail("the import's merge never waited on the signup's row")
        tx.commit()
    finally:
        if tx.is_active:
            tx.rollback()
        signup.close()
        importer.join(timeout=60)
    report = result["report"]
    assert not isinstance(report, BaseException), report
    assert (report.imported, report.updated, report.error_count) == (1, 1, 0)
    subs = _subscribers(engine)
    assert subs["ann@example.com"].name == "Ann" and subs["ann@example.com"].attributes == {"city": "Paris"}
    with transaction(engine) as s:
        members = set(s.scalars(select(Subscriber.email_key).join(Membership, Membership.subscriber_id == Subscriber.id)))
    assert members == {"ann@example.com", "bob@example.com"}
