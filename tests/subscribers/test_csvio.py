"""CSV import and export against the real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import io

import pytest
from sqlalchemy import func, select

from mailer.core.db import transaction
from mailer.core.errors import InvalidInput
from subscribers import csvio, service
from subscribers.models import Membership, Subscriber


def _import(engine, text: str | bytes, **kw):
    data = text.encode("utf-8") if isinstance(text, str) else text
    kw.setdefault("list_name", "weekly")
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
    report = csvio.import_csv(engine, stream, list_name="weekly")
    assert report.imported == 1 and not stream.closed
