"""``newsletter inbound`` in a real process over the test's database: the MTA pipe (exit
0 only once something is recorded, 75 when it could not be), ``explain`` (any input,
no change), ``list`` and ``show`` of what was kept."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from mailer.core import signing
from tests.support.cli import assert_one_line_error, cli
from tests.support.inbound import CORPUS, corpus, sent_campaign, snapshot, statuses

pytestmark = pytest.mark.timeout(180)


def inbound(*args, stdin: bytes | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """``newsletter inbound ARGS`` with bytes on stdin (as an MTA pipes them), text out."""
    r = cli("inbound", *args, stdin=stdin if stdin is not None else b"", env=env)
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode("utf-8", "replace"),
                                       r.stderr.decode("utf-8", "replace"))


@pytest.fixture
def signed(settings, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "s3cret")  # what tests.support.inbound signs with
    return settings


def test_the_pipe_records_bounces_unsubscribes_and_keeps_the_rest(engine, signed):
    sent = sent_campaign(engine, ["ann.reader@example.org", "bob@example.org"])
    ann, bob = sent["ann.reader@example.org"], sent["bob@example.org"]
    dsn = corpus("postfix-dsn-user-unknown").replace(b"bounces@example.com", ann.verp().encode())
    bounced = inbound(stdin=dsn)
    assert bounced.returncode == 0, bounced.stderr
    assert bounced.stdout.startswith(f"delivery {ann.delivery_id}: bounced (5.1.1")
    token = signing.unsubscribe_token("s3cret", bob.subscriber_id, bob.campaign_id)
    mailto = f"From: bob@example.org\r\nTo: unsubscribe+{token}@example.com\r\nSubject: unsubscribe\r\n\r\n".encode()
    assert inbound(stdin=mailto).stdout.strip() == "unsubscribed"
    assert statuses(engine) == {"ann.reader@example.org": "bounced", "bob@example.org": "unsubscribed"}

    # Not understood: kept, exit 0, and listed with the reason.
    junk = inbound(stdin=b"From: x@example.com\r\nTo: someone@example.com\r\nSubject: hi\r\n\r\nhello\r\n")
    assert junk.returncode == 0 and junk.stdout.startswith("kept as unprocessed #"), junk.stderr
    listed = inbound("list", "--json")
    rows = json.loads(listed.stdout)
    assert [(r["status"], r["kind"], r["channel"]) for r in rows] == [("unprocessed", "unknown", "pipe")]
    assert rows[0]["reason"] == "no delivery or feedback report, and no bounce format that is known"
    text = inbound("list")
    assert text.stdout.strip().endswith("1 unprocessed") and f"#{rows[0]['id']}" in text.stdout
    shown = cli("inbound", "show", rows[0]["id"], stdin=b"")
    assert shown.stdout == b"From: x@example.com\r\nTo: someone@example.com\r\nSubject: hi\r\n\r\nhello\r\n"
    assert_one_line_error(inbound("show", 999999), "no kept inbound message 999999")


def test_the_pipe_reads_the_envelope_recipient_the_mta_passes(engine, signed):
    ann = sent_campaign(engine, ["ann.reader@example.org"])["ann.reader@example.org"]
    env = dict(os.environ, ORIGINAL_RECIPIENT=ann.verp())
    result = inbound(stdin=corpus("qmail-no-mailbox").replace(b"uma.nobody@example.net",
                                                                      b"ann.reader@example.org"), env=env)
    assert result.returncode == 0 and f"delivery {ann.delivery_id}: bounced (5.1.1" in result.stdout, result.stderr


def test_the_pipe_exits_75_when_it_could_not_record(engine, signed):
    env = dict(os.environ, NEWSLETTER_DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:9/none")
    result = inbound(stdin=corpus("qmail-no-mailbox"), env=env)
    assert result.returncode == 75, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the message was not recorded (the MTA will try again)")
    assert_one_line_error(inbound(stdin=b""), "no message on stdin")


@pytest.mark.parametrize("name", ["garbage", "dsn-several-recipients", "arf-redacted", "out-of-office"])
def test_explain_json_of_a_file(settings, engine, name):
    result = inbound("explain", CORPUS / f"{name}.eml", "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert set(shown) == {"kind", "recipients"}
    assert all(set(r) == {"address", "status", "diagnostic", "permanent", "delivery_id"} for r in shown["recipients"])


def test_explain_takes_anything_on_stdin_and_changes_no_row(engine, signed):
    ann = sent_campaign(engine, ["ann.reader@example.org"])["ann.reader@example.org"]
    dsn = corpus("postfix-dsn-user-unknown").replace(b"bounces@example.com", ann.verp().encode())
    before = snapshot(engine)
    for raw, kind in ((dsn, "bounce"), (b"\x00\x01 garbage \xff", "unknown"), (b"", "unknown"),
                      (corpus("out-of-office"), "auto-reply")):
        result = inbound("explain", "-", "--json", stdin=raw)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["kind"] == kind
    assert json.loads(inbound("explain", "-", "--json", stdin=dsn).stdout) == {"kind": "bounce", "recipients": [{
        "address": "ann.reader@example.org", "status": "5.1.1", "permanent": True, "delivery_id": ann.delivery_id,
        "diagnostic": "550 5.1.1 <ann.reader@example.org>: Recipient address rejected: User unknown in virtual "
                      "mailbox table"}]}
    people = inbound("explain", "-", stdin=dsn).stdout
    assert people.splitlines()[0] == "kind: bounce (dsn)" and f"delivery {ann.delivery_id}" in people
    assert snapshot(engine) == before
    assert_one_line_error(inbound("explain", "/nonexistent.eml"), "no such file")
