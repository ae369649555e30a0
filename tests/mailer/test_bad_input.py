"""Issue 4, "bad input": an empty list, a missing list or issue, an address the relay
rejects or that cannot go into a message, CR/LF in a name or subject, an unreachable
relay. Each ends in a clear recorded state and (on the command line) one line of error;
nothing is sent twice and nothing is silently dropped."""

from __future__ import annotations

import email
import email.policy
import sys

import pytest
from sqlalchemy import insert, text

from mailer.core.db import transaction
from mailer.models import Campaign, Issue
from mailer.sending import drain
from mailer.transports.smtp import SmtpTransport
from subscribers.models import Membership, Subscriber
from tests.support.cli import assert_one_line_error, cli
from tests.support.delivery import (
    assert_counters_match,
    config,
    received,
    transport_for,
)
from tests.support.example import ROOT as REPO
from tests.support.seed import seed_campaign, seed_issue, seed_list

pytestmark = pytest.mark.timeout(120)
EXAMPLE = REPO / "examples" / "china-ai-weekly-2022-06-14.md"


def count(engine, table: str) -> int:
    with transaction(engine) as s:
        return s.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()


# --- the command line --------------------------------------------------------------------


def test_send_to_a_list_without_active_members_is_refused_in_one_line(engine):
    seed_list(engine, 3, list_name="empty", status="unsubscribed")
    result = cli("send", str(EXAMPLE), "--list", "empty")
    assert_one_line_error(result, "has no active subscribers")
    # Nothing half-done is left behind: the whole start was one transaction.
    assert count(engine, "campaign") == 0 and count(engine, "delivery") == 0


def test_send_to_a_missing_list_is_refused_in_one_line(engine):
    assert_one_line_error(cli("send", str(EXAMPLE), "--list", "no-such-list"), "no list named 'no-such-list'")
    assert count(engine, "campaign") == 0


def test_send_of_a_missing_issue_file_is_refused_in_one_line(engine, tmp_path):
    seed_list(engine, 3, list_name="weekly")
    assert_one_line_error(cli("send", str(tmp_path / "missing.md"), "--list", "weekly"), "no such file")
    assert count(engine, "campaign") == 0


def test_a_subject_with_cr_lf_in_the_front_matter_is_refused_by_the_issue_parser(engine, tmp_path):
    seed_list(engine, 3, list_name="weekly")
    issue = tmp_path / "evil.md"
    issue.write_text('---\nsubject: "Hello\\r\\nBcc: victim@example.org"\nslug: evil\n---\n\nBody.\n', encoding="utf-8")
    result = cli("send", str(issue), "--list", "weekly")
    assert_one_line_error(result, "subject")
    assert count(engine, "campaign") == 0 and count(engine, "issue") == 0


# --- the engine ----------------------------------------------------------------------------


def test_an_address_the_relay_rejects_is_recorded_and_the_others_are_sent(engine, smtp_sink):
    smtp_sink.reject["reader000002@example.com"] = (550, "5.1.1 <reader000002@example.com>: User unknown")
    cid = seed_campaign(engine, 5, batch_size=50)
    drain(engine, cid, transport=transport_for(smtp_sink), cfg=config())
    got = received(smtp_sink)
    assert sorted(got) == [f"reader{i:06d}@example.com" for i in (0, 1, 3, 4)] and set(got.values()) == {1}
    with transaction(engine) as s:
        st, code, reply = s.execute(text(
            "SELECT d.status, d.last_code, d.last_reply FROM delivery d JOIN subscriber s ON s.id = d.subscriber_id "
            "WHERE s.email = 'reader000002@example.com'")).one()
        assert (st, code) == ("bounced", 550) and "User unknown" in reply
        assert s.get(Campaign, cid).status == "sent"
    assert assert_counters_match(engine, cid) == {"sent": 4, "bounced": 1}


def _add_subscriber(engine, list_id: int, email_addr: str, name: str) -> None:
    with transaction(engine) as s:
        sid = s.execute(insert(Subscriber).returning(Subscriber.id),
                        [{"email": email_addr, "email_key": email_addr.lower(), "name": name, "status": "active",
                          "attributes": {}}]).scalar_one()
        s.execute(insert(Membership), [{"list_id": list_id, "subscriber_id": sid}])


def _campaign_for(engine, list_id: int, subject: str = "This week in AI") -> int:
    from mailer import campaigns

    issue_id = seed_issue(engine, subject=subject)
    with transaction(engine) as s:
        c, _ = campaigns.create_campaign(s, issue_id=issue_id, list_id=list_id)
        campaigns.start_campaign(s, campaign_id=c.id, batch_size=50)
        return c.id


def test_an_address_that_cannot_go_into_a_message_fails_alone_with_its_reason(engine, smtp_sink):
    """A non-ASCII address needs SMTPUTF8, which we do not speak: that one delivery ends
    'failed' with the reason, the batch goes on, and it is not retried forever."""
    list_id = seed_list(engine, 3)
    _add_subscriber(engine, list_id, "josé@example.com", "José")
    cid = _campaign_for(engine, list_id)
    drain(engine, cid, transport=transport_for(smtp_sink), cfg=config())
    assert len(received(smtp_sink)) == 3
    with transaction(engine) as s:
        st, reply = s.execute(text("SELECT d.status, d.last_reply FROM delivery d JOIN subscriber s "
                                   "ON s.id = d.subscriber_id WHERE s.email = 'josé@example.com'")).one()
        assert st == "failed" and "not a plain ASCII address" in reply and "\n" not in reply
        assert s.get(Campaign, cid).status == "sent"
    assert assert_counters_match(engine, cid) == {"sent": 3, "failed": 1}


@pytest.mark.parametrize("name", [
    "Eve\r\nBcc: victim@example.org",
    "Eve\nBcc: victim@example.org",
    "Eve\rBcc: victim@example.org",
    "Eve\u2028Bcc: victim@example.org",
    '"Eve" <x@evil.example>\r\n\r\n<p>injected body',
])
def test_cr_lf_in_a_subscriber_name_cannot_inject_a_header(engine, smtp_sink, name):
    list_id = seed_list(engine, 0)
    _add_subscriber(engine, list_id, "eve@example.com", name)
    cid = _campaign_for(engine, list_id)
    drain(engine, cid, transport=transport_for(smtp_sink), cfg=config())
    assert len(smtp_sink.messages) == 1
    m = smtp_sink.messages[0]
    assert m.rcpt_tos == ("eve@example.com",)
    assert sys.version_info[:2] >= (3, 11)
    for policy in (email.policy.compat32, email.policy.default):
        msg = email.message_from_bytes(m.content, policy=policy)
        assert msg["Bcc"] is None and msg.get_all("To") and len(msg.get_all("To")) == 1
        assert [k.lower() for k in msg.keys()].count("content-type") == 1
        assert "eve@example.com" in str(msg["To"])
        assert not msg.defects, msg.defects
    assert assert_counters_match(engine, cid) == {"sent": 1}


def test_a_stored_subject_with_a_line_break_pauses_the_campaign_with_the_reason(engine, smtp_sink):
    """The issue parser refuses such a subject; if one reaches the database anyway the
    engine builds nothing, sends nothing and says why, instead of failing every task."""
    list_id = seed_list(engine, 4)
    cid = _campaign_for(engine, list_id, subject="Hello\r\nBcc: victim@example.org")
    outcomes = drain(engine, cid, transport=transport_for(smtp_sink), cfg=config())
    assert outcomes and outcomes[-1].stopped.startswith("paused: cannot build the message")
    assert len(smtp_sink.messages) == 0
    with transaction(engine) as s:
        c = s.get(Campaign, cid)
        assert c.status == "paused" and "subject must be one line" in c.pause_reason
    assert assert_counters_match(engine, cid) == {"queued": 4}


def test_an_unreachable_relay_is_recorded_in_one_line_and_nothing_is_lost(engine, smtp_sink):
    cid = seed_campaign(engine, 6, batch_size=3)
    port = smtp_sink.port
    smtp_sink.stop()
    outcomes = drain(engine, cid, transport=SmtpTransport.from_url(f"smtp://127.0.0.1:{port}", timeout=2),
                     cfg=config())
    assert len(outcomes) == 1 and outcomes[0].stopped.startswith("relay unreachable: cannot reach SMTP relay")
    assert "\n" not in outcomes[0].stopped
    with transaction(engine) as s:
        replies = s.execute(text("SELECT last_reply FROM delivery WHERE campaign_id = :c AND last_reply <> ''"),
                            {"c": cid}).scalars().all()
        assert replies == [replies[0]] and f"127.0.0.1:{port}" in replies[0] and "\n" not in replies[0]
        assert s.get(Campaign, cid).status == "sending"
    assert assert_counters_match(engine, cid) == {"queued": 6}
    smtp_sink.start()
    with transaction(engine) as s:
        s.execute(text("UPDATE batch SET available_at = NULL WHERE campaign_id = :c"), {"c": cid})
    drain(engine, cid, transport=transport_for(smtp_sink), cfg=config())
    got = received(smtp_sink)
    assert len(got) == 6 and set(got.values()) == {1}
    assert assert_counters_match(engine, cid) == {"sent": 6}


def test_issue_row_is_unchanged_by_a_refused_send(engine):
    """A refused send leaves no issue row half-written either (same transaction)."""
    seed_list(engine, 2, list_name="empty", status="unsubscribed")
    cli("send", str(EXAMPLE), "--list", "empty")
    with transaction(engine) as s:
        assert s.query(Issue).count() == 0
