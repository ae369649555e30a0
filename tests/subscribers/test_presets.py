"""Platform exports, written here from their documented columns, imported as they come
(SQLite and PostgreSQL; on PostgreSQL through COPY and the merge statement)."""

from __future__ import annotations

import io
from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from mailer import queries
from mailer.core.db import transaction
from mailer.core.errors import InvalidInput
from subscribers import csvio, service
from subscribers.models import ImportBatch, Subscriber

MAILCHIMP_COLUMNS = ('"Email Address","First Name","Last Name",Company,MEMBER_RATING,OPTIN_TIME,OPTIN_IP,'
                     "CONFIRM_TIME,CONFIRM_IP,LATITUDE,LONGITUDE,GMTOFF,DSTOFF,TIMEZONE,CC,REGION,LAST_CHANGED,"
                     "LEID,EUID,NOTES,TAGS")
MAILCHIMP_SUBSCRIBED = MAILCHIMP_COLUMNS + "\n" + (
    'ann@example.com,Ann,Lee,Acme,2,"2021-03-01 10:00:00",192.0.2.1,"2021-03-01 10:05:00",192.0.2.1,'
    ',,,,,CN,,"2021-03-02 09:00:00",111,aaa,,"""founding"",""VIP"""\n'
    'bob@example.com,Bob,,,2,"2022-01-05 08:00:00",,,,,,,,,,,"2022-01-05 08:00:00",112,bbb,,\n'
    "nodate@example.com,No,Date,,1,,,,,,,,,,,,,113,ccc,,\n")
MAILCHIMP_UNSUBSCRIBED = (MAILCHIMP_COLUMNS.replace(",TAGS", ",TAGS,UNSUB_TIME,UNSUB_CAMPAIGN_TITLE,UNSUB_CAMPAIGN_ID,"
                                                    "UNSUB_REASON,UNSUB_REASON_OTHER") + "\n"
                          'carl@example.com,Carl,,,2,"2020-01-01 00:00:00",,,,,,,,,,,,114,ddd,,,'
                          '"2023-05-05 12:00:00",Weekly,c1,"No longer interested",\n')
MAILCHIMP_CLEANED = (MAILCHIMP_COLUMNS.replace(",TAGS", ",TAGS,CLEAN_TIME,CLEAN_CAMPAIGN_TITLE,CLEAN_CAMPAIGN_ID")
                     + "\n" 'dead@example.com,Dead,,,1,,,,,,,,,,,,,115,eee,,,"2023-06-01 00:00:00",Weekly,c2\n')
SUBSTACK = ("email,active_subscription,expiry,plan,email_disabled,created_at,first_payment_at\n"
            "sam@example.com,true,2026-07-06T16:20:44.000Z,founding,false,2021-08-27T15:06:27.713Z,"
            "2021-08-27T15:10:00.000Z\n"
            "free@example.com,false,,free,false,2022-02-01T00:00:00.000Z,\n"
            "quiet@example.com,false,,free,true,2020-01-01T00:00:00.000Z,\n")
LISTMONK = ("uuid,email,name,attributes,status,created_at,updated_at\n"
            '5e5b0a1c-0000-4000-8000-000000000001,lis@example.com,Lis,"{""country"": ""CN"", ""plan"": ""pro""}",'
            "enabled,2023-01-02 03:04:05.123456+00:00,2023-01-02 03:04:05+00:00\n"
            "5e5b0a1c-0000-4000-8000-000000000002,block@example.com,Block,{},blocklisted,"
            "2023-01-02 03:04:05+00:00,2023-01-02 03:04:05+00:00\n"
            "5e5b0a1c-0000-4000-8000-000000000003,off@example.com,Off,{},disabled,"
            "2023-01-02 03:04:05+00:00,2023-01-02 03:04:05+00:00\n")


def _import(engine, text: str, fmt: str, **kw):
    kw.setdefault("list_name", "weekly")
    return csvio.import_csv(engine, io.BytesIO(text.encode("utf-8")), format=fmt, merge=queries.merge_import_chunk,
                            **kw)


def _subs(engine) -> dict[str, Subscriber]:
    with transaction(engine) as s:
        return {sub.email_key: sub for sub in s.scalars(select(Subscriber))}


def _suppressed(engine, address: str) -> bool:
    with transaction(engine) as s:
        return service.is_suppressed(s, address)


def _utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def test_a_mailchimp_audience_export_as_it_comes(engine):
    with transaction(engine) as s:  # already here, and about to be found unsubscribed in the export
        service.add_subscriber(s, email="carl@example.com", name="Carl", status="active", list_name="weekly")
    subscribed = _import(engine, MAILCHIMP_SUBSCRIBED, "mailchimp", file_name="subscribed_members_export_1.csv")
    unsubscribed = _import(engine, MAILCHIMP_UNSUBSCRIBED, "mailchimp")
    cleaned = _import(engine, MAILCHIMP_CLEANED, "mailchimp")
    assert (subscribed.imported, subscribed.suppressions, subscribed.error_count) == (3, 0, 0)
    assert (unsubscribed.imported, unsubscribed.suppressions) == (0, 1)
    assert (cleaned.imported, cleaned.suppressions) == (0, 1)
    subs = _subs(engine)
    ann, bob, nodate = subs["ann@example.com"], subs["bob@example.com"], subs["nodate@example.com"]
    assert (ann.name, ann.status, ann.tags, ann.confirmed_at) == ("Ann Lee", "active", ["VIP", "founding"],
                                                                  _utc(2021, 3, 1, 10, 5))
    assert ann.attributes["CC"] == "CN" and ann.attributes["OPTIN_IP"] == "192.0.2.1"
    assert not {"LEID", "EUID", "TAGS", "CONFIRM_TIME"} & set(ann.attributes)
    assert (bob.status, bob.confirmed_at, bob.tags) == ("active", _utc(2022, 1, 5, 8), [])
    # No opt-in time: no evidence of consent, so pending like any import without --confirmed.
    assert (nodate.status, nodate.confirmed_at) == ("pending", None)
    # The unsubscribed and the cleaned: suppressed, never subscribers; Carl stops being mailable.
    assert subs["carl@example.com"].status == "unsubscribed"
    assert "dead@example.com" not in subs
    assert _suppressed(engine, "carl@example.com") and _suppressed(engine, "dead@example.com")
    with transaction(engine) as s:
        batches = {b.file_name: (b.source, b.imported) for b in s.scalars(select(ImportBatch))}
    assert batches["subscribed_members_export_1.csv"] == ("mailchimp", 3)
    # And they stay out: the plain import of the same address later is skipped.
    again = csvio.import_csv(engine, io.BytesIO(b"email\ndead@example.com\n"), list_name="weekly", confirmed=True)
    assert (again.imported, again.skipped_suppressed) == (0, 1)


def test_a_mailchimp_export_with_a_status_column(engine):
    text = ('"Email Address",STATUS,OPTIN_TIME\n'
            'a@example.com,subscribed,"2021-01-01 00:00:00"\nb@example.com,pending,\n'
            "c@example.com,cleaned,\nd@example.com,transactional,\n")
    report = _import(engine, text, "mailchimp")
    assert (report.imported, report.suppressions) == (2, 1)
    assert report.errors == [(5, "Mailchimp status 'transactional': they never subscribed, not imported")]
    subs = _subs(engine)
    assert (subs["a@example.com"].status, subs["b@example.com"].status) == ("active", "pending")


def test_a_substack_export_as_it_comes(engine):
    report = _import(engine, SUBSTACK, "substack")
    assert (report.imported, report.suppressions) == (2, 1)
    subs = _subs(engine)
    sam = subs["sam@example.com"]
    assert (sam.status, sam.tags, sam.confirmed_at) == ("active", ["founding"], _utc(2021, 8, 27, 15, 6, 27, 713000))
    assert sam.attributes == {"active_subscription": "true", "expiry": "2026-07-06T16:20:44.000Z",
                              "first_payment_at": "2021-08-27T15:10:00.000Z"}
    assert subs["free@example.com"].tags == ["free"]
    assert "quiet@example.com" not in subs and _suppressed(engine, "quiet@example.com")


def test_a_listmonk_export_as_it_comes(engine):
    report = _import(engine, LISTMONK, "listmonk")
    assert (report.imported, report.suppressions, report.error_count) == (1, 2, 0)
    lis = _subs(engine)["lis@example.com"]
    assert (lis.name, lis.status, lis.attributes) == ("Lis", "active", {"country": "CN", "plan": "pro"})
    assert lis.confirmed_at == _utc(2023, 1, 2, 3, 4, 5, 123456)
    assert _suppressed(engine, "block@example.com") and _suppressed(engine, "off@example.com")


def test_a_dry_run_of_a_platform_export_changes_nothing(engine):
    before = _subs(engine)
    report = _import(engine, SUBSTACK, "substack", dry_run=True)
    assert (report.imported, report.suppressions, report.dry_run) == (2, 1, True)
    assert _subs(engine) == before and not _suppressed(engine, "quiet@example.com")


def test_a_platform_export_that_says_gone_never_brings_anyone_back(engine):
    """A file saying someone is subscribed does not undo their unsubscribe here, and a
    row saying they are gone wins over one saying they are not."""
    with transaction(engine) as s:
        gone = service.add_subscriber(s, email="gone@example.com", status="active").id
        service.unsubscribe(s, subscriber_id=gone, origin="admin")
    text = ("email,plan,email_disabled,created_at\ngone@example.com,free,false,2021-01-01T00:00:00Z\n"
            "twice@example.com,free,false,2021-01-01T00:00:00Z\ntwice@example.com,free,true,2021-01-01T00:00:00Z\n")
    report = _import(engine, text, "substack")
    assert (report.imported, report.skipped_existing_status, report.suppressions) == (0, 1, 1)
    subs = _subs(engine)
    assert subs["gone@example.com"].status == "unsubscribed" and "twice@example.com" not in subs


@pytest.mark.parametrize(("fmt", "text", "message"), [
    ("mailchimp", "email_addr,name\nx@example.com,X\n", "not a Mailchimp audience export: the header has no 'email"),
    ("mailchimp", "email,plan,email_disabled\nx@example.com,free,false\n",
     "not a Mailchimp audience export: the header has none of its columns OPTIN_TIME, CONFIRM_TIME"),
    ("substack", "email,name\nx@example.com,X\n", "not a Substack subscriber export"),
    ("hubspot", "email\nx@example.com\n", "unknown format 'hubspot'; one of csv, mailchimp, substack, listmonk"),
])
def test_a_wrong_format_is_one_line_before_anything_is_written(engine, fmt, text, message):
    with pytest.raises(InvalidInput, match=message) as err:
        _import(engine, text, fmt)
    assert "\n" not in str(err.value) and _subs(engine) == {}


def test_a_bad_time_is_a_row_error_naming_the_column(engine):
    report = _import(engine, "email,email_disabled,created_at\na@example.com,false,yesterday\n"
                             "b@example.com,false,2021-01-01\n", "substack")
    assert report.errors == [(2, "column 'created_at' is not a time: 'yesterday'")]
    assert set(_subs(engine)) == {"b@example.com"}
