"""Recording what comes back (``mailer.bounces``), on SQLite and PostgreSQL: reports
tied to their deliveries by a verified VERP token, one of our Message-IDs or the
address's latest delivery; permanent bounces, soft bounces and their limit, policy
blocks, complaints; and everything that cannot be acted on kept as unprocessed. The
templated samples follow what Postfix and Gmail send; the corpus is ``bounce_corpus/``."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml
from sqlalchemy import select, text

from mailer import bounces
from mailer.bounces import BouncePolicy
from mailer.core.clock import utcnow
from mailer.core.db import transaction
from mailer.core.signing import verp_token as delivery_token
from mailer.models import Delivery, InboundMessage, InboundStatus, SoftBounce
from mailer.reports import Channel, read_message
from mailer.sending import drain
from subscribers.models import Event, Subscriber
from tests.support.delivery import assert_counters_match, config, transport_for
from tests.support.inbound import CORPUS, corpus, sent_campaign, statuses, suppressed, suppressions
from tests.support.seed import seed_campaign

pytestmark = pytest.mark.timeout(120)
SECRET = "s3cret"  # tests.support.delivery.config()

POSTFIX_DSN = """\
Return-Path: <>
Delivered-To: {verp}
Received: by mx.example.com (Postfix) id B1C2D3; Mon, 30 Nov 2026 10:00:01 +0000 (UTC)
Date: Mon, 30 Nov 2026 10:00:01 +0000 (UTC)
From: MAILER-DAEMON@mx.example.com (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: {verp}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="B1C2D3.1764496801/mx.example.com"
Content-Transfer-Encoding: 8bit
Message-Id: <20261130100001.B1C2D3@mx.example.com>

This is a MIME-encapsulated message.

--B1C2D3.1764496801/mx.example.com
Content-Description: Notification
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

This is the mail system at host mx.example.com.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

                   The mail system

<{rcpt}>: host mail.example.org[203.0.113.5] said: 550 5.1.1
    <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox
    table (in reply to RCPT TO command)

--B1C2D3.1764496801/mx.example.com
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.com
X-Postfix-Queue-ID: B1C2D3
X-Postfix-Sender: rfc822; {verp}
Arrival-Date: Mon, 30 Nov 2026 10:00:00 +0000 (UTC)

Final-Recipient: rfc822; {rcpt}
Original-Recipient: rfc822;{rcpt}
Action: failed
Status: {status}
Remote-MTA: dns; mail.example.org
Diagnostic-Code: smtp; 550 {status} <{rcpt}>: Recipient address rejected: User
    unknown in virtual mailbox table

--B1C2D3.1764496801/mx.example.com
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers
Content-Transfer-Encoding: 8bit

Return-Path: <{verp}>
Received: from worker (localhost [127.0.0.1]) by mx.example.com (Postfix) with ESMTP id B1C2D3
From: Weekly China AI <news@example.com>
To: Reader <{rcpt}>
Subject: This week in AI
Date: Mon, 30 Nov 2026 09:59:59 +0000
Message-ID: {message_id}

--B1C2D3.1764496801/mx.example.com--
"""

GMAIL_DSN = """\
Delivered-To: {verp}
Return-Path: <>
Received: by 2002:a05:6a10:1234:b0:5a0:1234:5678 with SMTP id abc; Mon, 30 Nov 2026 02:00:02 -0800 (PST)
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: {verp}
Auto-Submitted: auto-replied
Subject: Delivery Status Notification (Failure)
References: {message_id}
In-Reply-To: {message_id}
X-Failed-Recipients: {rcpt}
Message-ID: <6566aa12.abc.0001@mx.google.com>
Date: Mon, 30 Nov 2026 02:00:02 -0800 (PST)
MIME-Version: 1.0
Content-Type: multipart/report; boundary="000000000000b1c2d3"; report-type=delivery-status

--000000000000b1c2d3
Content-Type: multipart/related; boundary="000000000000e4f5a6"

--000000000000e4f5a6
Content-Type: multipart/alternative; boundary="000000000000e4f5a7"

--000000000000e4f5a7
Content-Type: text/plain; charset="UTF-8"


** Address not found **

Your message wasn't delivered to {rcpt} because the address couldn't be found, or is unable to receive mail.

Learn more here: https://support.google.com/mail/?p=NoSuchUser

The response was:

The email account that you tried to reach does not exist.

--000000000000e4f5a7
Content-Type: text/html; charset="UTF-8"

<html><body><p><b>Address not found</b></p></body></html>

--000000000000e4f5a7--
--000000000000e4f5a6--
--000000000000b1c2d3
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com
Received-From-MTA: dns; mail-sor-f41.google.com
Arrival-Date: Mon, 30 Nov 2026 02:00:01 -0800 (PST)
X-Original-Message-ID: {message_id}

Final-Recipient: rfc822; {rcpt}
Action: failed
Status: {status}
Remote-MTA: dns; gmail-smtp-in.l.google.com. (142.250.102.27, the server for the domain gmail.com.)
Diagnostic-Code: smtp; 550-{status} The email account that you tried to reach does not exist. Please try
 550-{status} double-checking the recipient's email address for typos or
 550-{status} unnecessary spaces. For more information, go to
 550 {status}  https://support.google.com/mail/?p=NoSuchUser
Last-Attempt-Date: Mon, 30 Nov 2026 02:00:02 -0800 (PST)

--000000000000b1c2d3
Content-Type: message/rfc822

Return-Path: <{verp}>
From: Weekly China AI <news@example.com>
To: Reader <{rcpt}>
Subject: This week in AI
Date: Mon, 30 Nov 2026 10:00:00 +0000
Message-ID: {message_id}
MIME-Version: 1.0
Content-Type: text/plain; charset="utf-8"

Hi Reader,

--000000000000b1c2d3--
"""

DELAYED_DSN = """\
From: MAILER-DAEMON@mx.example.com (Mail Delivery System)
To: {verp}
Subject: Delayed Mail (still being retried)
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="D1"

--D1
Content-Type: text/plain

This is the mail system at host mx.example.com. Your message is still being retried.

--D1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.com

Final-Recipient: rfc822; {rcpt}
Action: delayed
Status: 4.4.1
Diagnostic-Code: X-Postfix; connect to mail.example.org[203.0.113.5]:25: Connection timed out
Will-Retry-Until: Fri, 4 Dec 2026 10:00:00 +0000 (UTC)

--D1--
"""

ARF = """\
From: <staff@hotmail.com>
Date: Mon, 30 Nov 2026 11:00:00 +0000
Subject: complaint about message from 192.0.2.10
To: <abuse@example.com>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report;
     boundary="part1_13d.2e68ed54_boundary"

--part1_13d.2e68ed54_boundary
Content-Type: text/plain; charset="US-ASCII"
Content-Transfer-Encoding: 7bit

This is an email abuse report for an email message received from IP
192.0.2.10 on Mon, 30 Nov 2026 10:00:00 +0000.
For more information about this format please see
http://www.mipassoc.org/arf/.

--part1_13d.2e68ed54_boundary
Content-Type: message/feedback-report

Feedback-Type: {feedback_type}
User-Agent: SomeGenerator/1.0
Version: 1
{original_mail_from}Original-Rcpt-To: <{rcpt}>
Arrival-Date: Mon, 30 Nov 2026 10:00:00 +0000
Reporting-MTA: dns; mail.hotmail.com
Source-IP: 192.0.2.10

--part1_13d.2e68ed54_boundary
Content-Type: text/rfc822-headers

From: Weekly China AI <news@example.com>
To: <{rcpt}>
Subject: This week in AI
Date: Mon, 30 Nov 2026 10:00:00 +0000
Message-ID: {message_id}

--part1_13d.2e68ed54_boundary--
"""


@pytest.fixture
def sent(engine, smtp_sink):
    """A campaign of 5 really sent through an SMTP server: (engine, campaign id, rows of
    (delivery id, address, Message-ID, subscriber id))."""
    cid = seed_campaign(engine, 5, batch_size=50)
    drain(engine, cid, transport=transport_for(smtp_sink), cfg=config())
    with transaction(engine) as s:
        rows = s.execute(select(Delivery.id, Subscriber.email, Delivery.message_id, Delivery.subscriber_id)
                         .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                         .where(Delivery.campaign_id == cid).order_by(Delivery.id)).all()
    assert assert_counters_match(engine, cid) == {"sent": 5}
    return engine, cid, rows


def sample(template: str, row, *, status: str = "5.1.1", secret: str = SECRET, **extra) -> bytes:
    did, rcpt, message_id, _ = row
    verp = f"bounces+{delivery_token(secret, did)}@example.com"
    return template.format(verp=verp, rcpt=rcpt, message_id=message_id, status=status, **extra) \
        .replace("\n", "\r\n").encode()


def record(engine, raw: bytes, *, keys=(SECRET,), environ=None, envelope_to=(), now=None, **policy):
    """What ``receive`` does for one message, with the policy given here."""
    report = read_message(raw, environ=environ, envelope_to=envelope_to)
    with transaction(engine) as s:
        return bounces.record(s, report, raw=raw, channel=Channel.pipe,
                              policy=BouncePolicy(secret_keys=tuple(keys), **policy), now=now or utcnow())


def state(engine, row) -> tuple[str, str, list[tuple[str, str]]]:
    did, _, _, sid = row
    with transaction(engine) as s:
        d = s.get(Delivery, did)
        sub = s.get(Subscriber, sid)
        events = [(e.kind, e.origin) for e in s.scalars(select(Event).where(Event.delivery_id == did)
                                                        .order_by(Event.id))]
        return d.status, sub.status, events


def kept(engine) -> list[tuple[str, str, str]]:
    with transaction(engine) as s:
        return [(m.status, m.kind, m.reason) for m in s.scalars(select(InboundMessage).order_by(InboundMessage.id))]


def events_of(engine, subscriber_id: int) -> list[dict]:
    with transaction(engine) as s:
        return [dict(e.detail, kind=e.kind, origin=e.origin, delivery_id=e.delivery_id)
                for e in s.scalars(select(Event).where(Event.subscriber_id == subscriber_id,
                                                       Event.kind.in_(["bounce", "complaint"])).order_by(Event.id))]


# --- tied by VERP and Message-ID, as really sent ------------------------------------------

@pytest.mark.parametrize("template", [POSTFIX_DSN, GMAIL_DSN], ids=["postfix", "gmail"])
def test_dsn_5_1_1_bounces_the_delivery_and_the_subscriber(sent, template):
    engine, cid, rows = sent
    done = record(engine, sample(template, rows[1]))
    assert done.line.startswith(f"delivery {rows[1][0]}: bounced (5.1.1") and "\n" not in done.line
    assert done.stored_id is None
    assert state(engine, rows[1]) == ("bounced", "bounced", [("bounce", "dsn")])
    assert state(engine, rows[0])[:2] == ("sent", "active"), "nobody else is touched"
    assert assert_counters_match(engine, cid) == {"sent": 4, "bounced": 1}
    assert suppressions(engine) == 1
    with transaction(engine) as s:
        d = s.get(Delivery, rows[1][0])
        assert d.last_code == 550 and "5.1.1" in d.last_reply
        detail = s.scalars(select(Event).where(Event.delivery_id == rows[1][0])).one().detail
        assert detail["status"] == "5.1.1" and detail["permanent"] is True and detail["tied_by"] == "verp"
    # The same report delivered twice moves nothing a second time.
    again = record(engine, sample(template, rows[1]))
    assert "stays bounced" in again.line
    assert assert_counters_match(engine, cid) == {"sent": 4, "bounced": 1}


def test_envelope_recipient_from_the_pipe_environment(sent):
    engine, cid, rows = sent
    raw = sample(GMAIL_DSN, rows[2]).replace(b"Delivered-To: bounces+", b"X-Nothing: bounces+")
    raw = raw.replace(b"To: bounces+", b"To: someone+")
    verp = f"bounces+{delivery_token(SECRET, rows[2][0])}@example.com"
    assert "bounced" in record(engine, raw, environ={"ORIGINAL_RECIPIENT": verp}).line
    assert state(engine, rows[2])[0] == "bounced"


def test_the_quoted_message_id_alone_ties_a_report(sent):
    """No VERP address anywhere (a relay that rewrote the envelope sender): the
    Message-ID of the returned headers names the delivery, through its MAC."""
    engine, cid, rows = sent
    raw = sample(POSTFIX_DSN, rows[3])
    verp = f"bounces+{delivery_token(SECRET, rows[3][0])}@example.com".encode()
    raw = raw.replace(verp, b"bounces@example.com").replace(rows[3][1].encode(), b"forwarded@example.net")
    done = record(engine, raw)
    assert done.line.startswith(f"delivery {rows[3][0]}: bounced")
    assert events_of(engine, rows[3][3])[0]["tied_by"] == "message-id"


def test_a_delayed_4xx_dsn_is_a_soft_bounce(sent):
    engine, cid, rows = sent
    done = record(engine, sample(DELAYED_DSN, rows[0]))
    assert "temporary" in done.line and "4.4.1" in done.line and "soft bounce 1 of 3 in 15 days" in done.line
    assert state(engine, rows[0]) == ("sent", "active", [("bounce", "dsn")])
    assert assert_counters_match(engine, cid) == {"sent": 5}
    assert suppressions(engine) == 0
    # Another delay notice about the same message does not count twice.
    assert "soft bounce 1 of 3" in record(engine, sample(DELAYED_DSN, rows[0])).line


def test_a_policy_block_is_an_event_only_and_never_counts(sent):
    engine, cid, rows = sent
    for _ in range(4):
        done = record(engine, sample(POSTFIX_DSN, rows[3], status="5.7.1"), soft_bounce_limit=1)
        assert "blocked by policy, not the address" in done.line
    assert state(engine, rows[3])[:2] == ("sent", "active")
    assert suppressions(engine) == 0
    with transaction(engine) as s:
        assert s.execute(select(SoftBounce.id)).all() == []
    assert events_of(engine, rows[3][3])[0]["blame_sender"] is True


def test_a_full_mailbox_is_counted_not_suppressed_at_once(sent):
    engine, cid, rows = sent
    done = record(engine, sample(POSTFIX_DSN, rows[3], status="5.2.2"))
    assert "temporary (5.2.2" in done.line
    assert state(engine, rows[3])[:2] == ("sent", "active")


def test_a_forged_or_mangled_token_is_refused_kept_and_changes_nothing(sent):
    engine, cid, rows = sent
    did = rows[1][0]
    forged = sample(POSTFIX_DSN, rows[1]).replace(delivery_token(SECRET, did).encode(), f"{did}-0123456789ab".encode())
    mangled = sample(POSTFIX_DSN, rows[1]).replace(delivery_token(SECRET, did).encode(), f"{did}-0123".encode())
    other_secret = sample(POSTFIX_DSN, rows[1], secret="someone else's")
    for raw in (forged, mangled, other_secret):
        # The quoted Message-ID (and the address) would still name the delivery: refused all the same.
        done = record(engine, raw)
        assert done.line.startswith("refused, kept as unprocessed #") and "not valid" in done.line
    assert state(engine, rows[1]) == ("sent", "active", [])
    assert assert_counters_match(engine, cid) == {"sent": 5}
    assert [k[0] for k in kept(engine)] == ["unprocessed"] * 3
    with transaction(engine) as s:
        stored = s.scalars(select(InboundMessage)).first()
        assert stored.raw == forged and stored.size == len(forged) and stored.channel == "pipe"


def test_a_token_signed_with_an_old_secret_still_verifies(sent):
    engine, cid, rows = sent
    assert "bounced" in record(engine, sample(POSTFIX_DSN, rows[4]), keys=["new", SECRET]).line


@pytest.mark.parametrize("via", ["original-mail-from", "message-id"])
def test_arf_complaint_marks_the_subscriber_complained(sent, via):
    engine, cid, rows = sent
    did = rows[2][0]
    omf = f"Original-Mail-From: <bounces+{delivery_token(SECRET, did)}@example.com>\n" if via != "message-id" else ""
    raw = sample(ARF, rows[2], feedback_type="abuse", original_mail_from=omf)
    done = record(engine, raw)
    assert done.line == f"delivery {did}: complaint (abuse); subscriber marked complained"
    assert state(engine, rows[2]) == ("sent", "complained", [("complaint", "arf")])
    assert suppressions(engine) == 1
    assert assert_counters_match(engine, cid) == {"sent": 5}


def test_arf_not_spam_is_not_a_complaint(sent):
    engine, cid, rows = sent
    raw = sample(ARF, rows[2], feedback_type="not-spam", original_mail_from="")
    done = record(engine, raw)
    assert "nothing to record (not-spam)" in done.line and done.stored_as == InboundStatus.ignored
    assert state(engine, rows[2]) == ("sent", "active", [])


def test_a_prose_bounce_to_the_verp_address_is_read_with_flufl_bounce(sent):
    engine, cid, rows = sent
    verp = f"bounces+{delivery_token(SECRET, rows[0][0])}@example.com"
    raw = (f"From: MAILER-DAEMON@old.example.net\r\nTo: {verp}\r\nSubject: failure notice\r\n\r\n"
           f"Hi. This is the qmail-send program at old.example.net.\r\n"
           "I'm afraid I wasn't able to deliver your message to the following addresses.\r\n\r\n"
           f"<{rows[0][1]}>:\r\nRemote host said: 550 5.1.1 <{rows[0][1]}>... User unknown\r\n").encode()
    done = record(engine, raw)
    assert "bounced (5.1.1" in done.line
    assert state(engine, rows[0]) == ("bounced", "bounced", [("bounce", "mta")])
    assert assert_counters_match(engine, cid) == {"sent": 4, "bounced": 1}


def test_an_auto_reply_is_kept_as_ignored_and_changes_nothing(sent):
    engine, cid, rows = sent
    verp = f"bounces+{delivery_token(SECRET, rows[0][0])}@example.com"
    raw = (f"From: reader@example.com\r\nTo: {verp}\r\nSubject: Out of office\r\nAuto-Submitted: auto-replied\r\n"
           "\r\nI am away until Monday. 550 5.1.1 is not a bounce here.\r\n").encode()
    done = record(engine, raw)
    assert done.line.startswith(f"delivery {rows[0][0]}: auto-reply, nothing to record")
    assert state(engine, rows[0]) == ("sent", "active", [])
    with transaction(engine) as s:
        stored = s.scalars(select(InboundMessage)).one()
        assert (stored.status, stored.kind, stored.delivery_id) == ("ignored", "auto-reply", rows[0][0])


def test_a_report_about_a_delivery_not_yet_recorded_sent_still_bounces_the_subscriber(engine):
    """The engine records an outcome with the next message; a very fast DSN can come
    first. The subscriber is bounced; the delivery keeps its state; counters agree."""
    cid = seed_campaign(engine, 2, batch_size=50)
    with transaction(engine) as s:
        row = s.execute(select(Delivery.id, Subscriber.email, Delivery.message_id, Delivery.subscriber_id)
                        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                        .where(Delivery.campaign_id == cid).order_by(Delivery.id)).first()
        s.execute(text("UPDATE delivery SET status = 'sending' WHERE id = :d"), {"d": row[0]})
    done = record(engine, sample(POSTFIX_DSN, row))
    assert "delivery stays sending" in done.line and "subscriber marked bounced" in done.line
    assert assert_counters_match(engine, cid) == {"sending": 1, "queued": 1}


# --- tied by address -----------------------------------------------------------------------

SEVERAL = (CORPUS / "dsn-several-recipients.eml").read_bytes()


def test_every_recipient_of_a_report_is_recorded_on_its_own_delivery(engine):
    """A report without our token names four addresses: each is tied to its latest
    delivery and gets its own verdict; one we never mailed is kept as unprocessed."""
    people = ["kim.gone@example.org", "lee.full@example.org", "max.fine@example.org"]
    sent = sent_campaign(engine, people)
    done = record(engine, SEVERAL)
    assert f"delivery {sent['kim.gone@example.org'].delivery_id}: bounced (5.1.1" in done.line
    assert f"delivery {sent['lee.full@example.org'].delivery_id}: temporary (4.2.2" in done.line
    assert statuses(engine) == {"kim.gone@example.org": "bounced", "lee.full@example.org": "active",
                                "max.fine@example.org": "active"}
    assert kept(engine) == [("unprocessed", "bounce", "1 of 3 recipients not tied to a delivery: ned.policy@example.org")]
    assert events_of(engine, sent["kim.gone@example.org"].subscriber_id)[0]["tied_by"] == "address"
    assert events_of(engine, sent["max.fine@example.org"].subscriber_id) == [], "good news records nothing"


def test_an_address_is_tied_to_its_most_recent_delivery_within_the_window(engine):
    now = utcnow()
    old = sent_campaign(engine, ["kim.gone@example.org"], slug="old", at=now - timedelta(days=40))
    assert "not tied" in record(engine, SEVERAL, now=now).line, "40 days ago is outside the 30-day window"
    assert statuses(engine)["kim.gone@example.org"] == "active"
    newer = sent_campaign(engine, ["kim.gone@example.org"], slug="newer", at=now - timedelta(days=3))
    newest = sent_campaign(engine, ["kim.gone@example.org"], slug="newest", at=now - timedelta(days=1))
    done = record(engine, SEVERAL, now=now)
    assert f"delivery {newest['kim.gone@example.org'].delivery_id}: bounced" in done.line
    with transaction(engine) as s:
        got = {d: s.get(Delivery, d).status for d in (old["kim.gone@example.org"].delivery_id,
                                                      newer["kim.gone@example.org"].delivery_id,
                                                      newest["kim.gone@example.org"].delivery_id)}
    assert list(got.values()) == ["sent", "sent", "bounced"]


# --- the soft-bounce policy ----------------------------------------------------------------

DELAY = (CORPUS / "postfix-dsn-delayed.eml").read_bytes()  # bo.slow@example.org, 4.4.1


def test_n_transient_bounces_within_d_days_suppress_each_step_an_event(engine):
    now = utcnow()
    days = [30, 20, 14, 6]  # each message bounced this many days ago, a day after it was sent
    campaigns = [sent_campaign(engine, ["bo.slow@example.org"], slug=f"w{d}", at=now - timedelta(days=d + 1))
                 for d in days]
    sid = campaigns[0]["bo.slow@example.org"].subscriber_id
    lines = []
    for d, c in zip(days, campaigns):
        verp = c["bo.slow@example.org"].verp()
        lines.append(record(engine, DELAY, envelope_to=[verp], now=now - timedelta(days=d)).line)
    # A 15-day window: 1; 2; 2 (the first is 16 days older); 3 -> suppressed.
    assert [line.split("; ")[1] for line in lines] == [
        "soft bounce 1 of 3 in 15 days", "soft bounce 2 of 3 in 15 days", "soft bounce 2 of 3 in 15 days",
        "soft bounce 3 of 3 in 15 days"]
    assert lines[-1].endswith("limit reached: subscriber marked bounced")
    assert statuses(engine)["bo.slow@example.org"] == "bounced" and suppressed(engine, "bo.slow@example.org")
    steps = [(e["verdict"], e.get("soft_bounces")) for e in events_of(engine, sid)]
    assert steps == [("transient", 1), ("transient", 2), ("transient", 2), ("transient", 3),
                     ("soft-bounce limit", 3)]
    with transaction(engine) as s:  # the deliveries keep what the relay said: accepted
        assert {s.get(Delivery, c["bo.slow@example.org"].delivery_id).status for c in campaigns} == {"sent"}


def test_the_soft_bounce_limit_and_window_are_settings(engine):
    c = sent_campaign(engine, ["bo.slow@example.org"])
    done = record(engine, DELAY, envelope_to=[c["bo.slow@example.org"].verp()], soft_bounce_limit=1,
                  soft_bounce_window=timedelta(days=2))
    assert "soft bounce 1 of 1 in 2 days; limit reached" in done.line


def test_two_soft_bounces_recorded_at_once_both_count(engine):
    """Two transient reports about two messages of one subscriber, recorded at the same
    time with a limit of 2: the second sees the first, and the subscriber is suppressed."""
    import threading

    a = sent_campaign(engine, ["bo.slow@example.org"], slug="a")
    b = sent_campaign(engine, ["bo.slow@example.org"], slug="b")
    barrier, lines, errors = threading.Barrier(2), [], []

    def one(c):
        try:
            barrier.wait()
            lines.append(record(engine, DELAY, envelope_to=[c["bo.slow@example.org"].verp()],
                                soft_bounce_limit=2).line)
        except Exception as err:  # a lock timeout would show here
            errors.append(err)

    threads = [threading.Thread(target=one, args=(c,)) for c in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(line.split("; ")[1] for line in lines) == ["soft bounce 1 of 2 in 15 days",
                                                             "soft bounce 2 of 2 in 15 days"]
    assert statuses(engine)["bo.slow@example.org"] == "bounced"


# --- the corpus, recorded ------------------------------------------------------------------

EXPECTED = yaml.safe_load((CORPUS / "expected.yaml").read_text(encoding="utf-8"))


def test_the_corpus_recorded_suppresses_the_bad_addresses_and_no_policy_block(engine):
    """Every message of the corpus through ``record``, each recipient tied by address to
    a delivery of its own: the permanent ones end bounced and suppressed, the complaints
    complained, and nobody else; above all no 5.7.x policy rejection suppresses anyone."""
    addresses = sorted({a for e in EXPECTED.values() for a in e["recipients"] if a})
    sent_campaign(engine, addresses)
    for name in sorted(EXPECTED):
        record(engine, corpus(name))
    want = {}
    for e in EXPECTED.values():
        for address, (verdict, status) in e["recipients"].items():
            if not address:
                continue
            want[address] = ("complained" if e["kind"] == "complaint" and verdict == "permanent"
                             else "bounced" if verdict == "permanent" else "active")
    got = statuses(engine)
    assert got == want
    policy = [a for e in EXPECTED.values() for a, (v, _) in e["recipients"].items() if v == "policy"]
    assert len(policy) >= 5 and all(got[a] == "active" and not suppressed(engine, a) for a in policy)
    assert suppressions(engine) == sum(1 for s in want.values() if s != "active")
    # What could not be acted on is kept, each with its reason.
    reasons = {k[2] for k in kept(engine) if k[0] == "unprocessed"}
    assert any(r.startswith("not a mail message") for r in reasons)
    assert any(r.startswith("no delivery or feedback report") for r in reasons)
    assert any("a recipient the report does not name" in r for r in reasons), "the redacted ARF has no tie"


def test_an_unknown_message_is_kept_size_capped_with_its_reason(engine):
    raw = b"From: someone@example.org\r\nSubject: hello\r\n\r\n" + b"x" * 5000
    done = record(engine, raw, max_bytes=1024)
    assert done.stored_as == InboundStatus.unprocessed
    with transaction(engine) as s:
        stored = s.scalars(select(InboundMessage)).one()
        assert stored.size == len(raw) and stored.raw == raw[:1024] and stored.kind == "unknown"
        assert stored.reason == "no delivery or feedback report, and no bounce format that is known"
        assert bounces.unprocessed_count(s) == 1


def test_control_characters_in_a_report_are_kept_as_bytes_never_as_text(engine):
    """A NUL in a diagnostic or an address (PostgreSQL stores it in no text column): the
    bounce is recorded without it, and what cannot be tied is kept with its raw bytes."""
    ann = sent_campaign(engine, ["ann.reader@example.org"])["ann.reader@example.org"]
    raw = corpus("postfix-dsn-user-unknown").replace(b"bounces@example.com", ann.verp().encode()) \
        .replace(b"Diagnostic-Code: smtp; 550 5.1.1", b"Diagnostic-Code: smtp; 550 5.1.1 \x00\x07bad")
    assert "bounced (5.1.1" in record(engine, raw).line
    with transaction(engine) as s:
        detail = s.scalars(select(Event).where(Event.delivery_id == ann.delivery_id)).one().detail
        assert "\x00" not in detail["diagnostic"] and "bad" in detail["diagnostic"]
    junk = b"From: MAILER-DAEMON@x.example\r\nTo: bounces@example.com\r\n\r\n" \
           b"Hi. This is the qmail-send program at x.\r\n\r\n<a\x00b@example.org>:\r\nno (#5.1.1)\r\n\x00\r\n"
    done = record(engine, junk)
    assert done.stored_as == InboundStatus.unprocessed
    with transaction(engine) as s:
        assert s.scalars(select(InboundMessage)).one().raw == junk
