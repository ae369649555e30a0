"""The one inbound handler (``mailer.operations.inbound``) over the real database: what
every channel ends in, and ``explain``, which says what it would record and changes
nothing."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError

from mailer.core import signing
from mailer.core.config import load_settings
from mailer.models import InboundStatus
from mailer.operations.inbound import explain, receive
from mailer.reports import Channel, InboundKind
from tests.support.inbound import CORPUS, corpus, sent_campaign, snapshot, statuses

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def signed(settings, monkeypatch):
    """The test's settings, signing with the secret of ``tests.support.inbound``."""
    from mailer.core.config import get_settings

    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "s3cret")
    get_settings.cache_clear()
    return get_settings()


@pytest.mark.parametrize("name", ["postfix-dsn-user-unknown", "qmail-no-mailbox", "garbage", "human-reply",
                                  "out-of-office", "arf-abuse", "dsn-several-recipients", "postfix-dsn-spam-block"])
def test_explain_changes_no_row_and_says_what_receive_then_does(engine, signed, name):
    sent_campaign(engine, ["ann.reader@example.org", "uma.nobody@example.net", "eve.annoyed@example.net",
                           "kim.gone@example.org", "lee.full@example.org", "cy.blocked@example.net"])
    raw = corpus(name)
    before = snapshot(engine)
    shown = explain(raw, settings=signed)
    assert snapshot(engine) == before
    assert set(shown) == {"kind", "recipients"}
    for r in shown["recipients"]:
        assert set(r) == {"address", "status", "diagnostic", "permanent", "delivery_id"}
    received = receive(raw, settings=signed, channel=Channel.pipe)
    assert received.kind == shown["kind"]
    now = statuses(engine)
    for r in shown["recipients"]:
        if r["delivery_id"] and r["permanent"]:
            assert now[r["address"]] in ("bounced", "complained"), r
        elif r["address"] in now:
            assert now[r["address"]] == "active", r


def test_explain_gives_the_shape_for_every_corpus_message_and_changes_nothing(engine, signed):
    sent_campaign(engine, ["ann.reader@example.org", "kim.gone@example.org"])
    before = snapshot(engine)
    for path in sorted(CORPUS.glob("*.eml")):
        shown = explain(path.read_bytes(), settings=signed)
        assert set(shown) == {"kind", "recipients"} and shown["kind"] in {k.value for k in InboundKind}, path
        for r in shown["recipients"]:
            assert set(r) == {"address", "status", "diagnostic", "permanent", "delivery_id"}, path
            assert isinstance(r["permanent"], bool) and (r["status"] is None or isinstance(r["status"], str))
    assert snapshot(engine) == before


def test_explain_in_the_shape_of_the_issue(engine, signed):
    sent = sent_campaign(engine, ["ann.reader@example.org"])
    did = sent["ann.reader@example.org"].delivery_id
    assert explain(corpus("postfix-dsn-user-unknown"), settings=signed) == {"kind": "bounce", "recipients": [{
        "address": "ann.reader@example.org", "status": "5.1.1",
        "diagnostic": "550 5.1.1 <ann.reader@example.org>: Recipient address rejected: User unknown in virtual "
                      "mailbox table", "permanent": True, "delivery_id": did}]}
    blocked = explain(corpus("postfix-dsn-spam-block"), settings=signed)["recipients"][0]
    assert blocked["status"] == "5.7.1" and blocked["permanent"] is False
    assert explain(b"\x00garbage", settings=signed) == {"kind": "unknown", "recipients": []}


def test_explain_shows_a_forged_token_ties_nothing(engine, signed):
    sent = sent_campaign(engine, ["ann.reader@example.org"])
    s = sent["ann.reader@example.org"]
    good = corpus("postfix-dsn-user-unknown").replace(b"bounces@example.com", s.verp().encode())
    assert explain(good, settings=signed)["recipients"][0]["delivery_id"] == s.delivery_id
    forged = good.replace(s.verp().encode(), f"bounces+{s.delivery_id}-0123456789ab@example.com".encode())
    assert explain(forged, settings=signed)["recipients"][0]["delivery_id"] is None


def test_a_mailto_unsubscribe_and_a_forged_one(engine, signed):
    sent = sent_campaign(engine, ["ann@example.org"])
    s = sent["ann@example.org"]
    token = signing.unsubscribe_token("s3cret", s.subscriber_id, s.campaign_id)
    raw = f"From: Ann <ann@example.org>\r\nTo: unsubscribe+{token}@example.com\r\nSubject: unsubscribe\r\n\r\n".encode()
    assert explain(raw, settings=signed) == {"kind": "unsubscribe", "recipients": [{
        "address": "ann@example.org", "status": None, "diagnostic": "mailto unsubscribe", "permanent": False,
        "delivery_id": None}]}
    forged = raw.replace(token.encode(), token[:-2].encode())
    refused = receive(forged, settings=signed)
    assert refused.stored_as == InboundStatus.unprocessed and "not valid" in refused.line
    assert statuses(engine)["ann@example.org"] == "active"
    assert receive(raw, settings=signed).line == "unsubscribed"
    assert receive(raw, settings=signed).line == "already unsubscribed"


def test_nothing_is_recorded_when_the_database_does_not_answer(tmp_path):
    down = load_settings(database_url="postgresql+psycopg://nobody@127.0.0.1:9/none", var_dir=tmp_path)
    with pytest.raises(OperationalError):
        receive(corpus("qmail-no-mailbox"), settings=down)
