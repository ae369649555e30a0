"""Inbound bounces (RFC 3464 DSNs, prose bounces to the VERP address) and complaints
(RFC 5965 ARF), on SQLite and PostgreSQL. The samples follow what Postfix and Gmail
actually send; the addresses and tokens are filled in per test."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from mailer.bounces import handle_inbound, is_bounce
from mailer.core.db import transaction
from mailer.core.errors import InvalidInput
from mailer.core.signing import verp_token as delivery_token
from mailer.models import Delivery
from mailer.sending import drain
from subscribers.models import Event, Subscriber, Suppression
from tests.support.delivery import assert_counters_match, config, transport_for
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
    """A campaign of 5, all accepted by the relay: (engine, campaign id, deliveries)."""
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


def state(engine, row) -> tuple[str, str, list[tuple[str, str]]]:
    did, _, _, sid = row
    with transaction(engine) as s:
        d = s.get(Delivery, did)
        sub = s.get(Subscriber, sid)
        events = [(e.kind, e.origin) for e in s.scalars(select(Event).where(Event.delivery_id == did)
                                                        .order_by(Event.id))]
        return d.status, sub.status, events


def suppressed(engine) -> int:
    with transaction(engine) as s:
        return s.execute(select(Suppression.id)).all().__len__()


@pytest.mark.parametrize("template", [POSTFIX_DSN, GMAIL_DSN], ids=["postfix", "gmail"])
def test_dsn_5_1_1_bounces_the_delivery_and_the_subscriber(sent, template):
    engine, cid, rows = sent
    line = handle_inbound(engine, sample(template, rows[1]), secret_keys=[SECRET])
    assert line.startswith(f"delivery {rows[1][0]}: bounced (5.1.1") and "\n" not in line
    assert state(engine, rows[1]) == ("bounced", "bounced", [("bounce", "dsn")])
    assert state(engine, rows[0])[:2] == ("sent", "active"), "nobody else is touched"
    assert assert_counters_match(engine, cid) == {"sent": 4, "bounced": 1}
    assert suppressed(engine) == 1
    with transaction(engine) as s:
        d = s.get(Delivery, rows[1][0])
        assert d.last_code == 550 and "5.1.1" in d.last_reply
        detail = s.scalars(select(Event).where(Event.delivery_id == rows[1][0])).one().detail
        assert detail["status"] == "5.1.1" and detail["permanent"] is True
    # The same report delivered twice moves nothing a second time.
    again = handle_inbound(engine, sample(template, rows[1]), secret_keys=[SECRET])
    assert "stays bounced" in again
    assert assert_counters_match(engine, cid) == {"sent": 4, "bounced": 1}


def test_envelope_recipient_from_the_pipe_environment(sent):
    engine, cid, rows = sent
    raw = sample(GMAIL_DSN, rows[2]).replace(b"Delivered-To: bounces+", b"X-Nothing: bounces+")
    raw = raw.replace(b"To: bounces+", b"To: someone+")
    verp = f"bounces+{delivery_token(SECRET, rows[2][0])}@example.com"
    assert "bounced" in handle_inbound(engine, raw, secret_keys=[SECRET], environ={"ORIGINAL_RECIPIENT": verp})
    assert state(engine, rows[2])[0] == "bounced"


def test_a_delayed_4xx_dsn_is_an_event_only(sent):
    engine, cid, rows = sent
    line = handle_inbound(engine, sample(DELAYED_DSN, rows[0]), secret_keys=[SECRET])
    assert "temporary" in line and "4.4.1" in line
    assert state(engine, rows[0]) == ("sent", "active", [("bounce", "dsn")])
    assert assert_counters_match(engine, cid) == {"sent": 5}
    assert suppressed(engine) == 0


@pytest.mark.parametrize("status", ["5.7.1", "5.2.2"])
def test_a_permanent_dsn_that_does_not_blame_the_address_is_an_event_only(sent, status):
    engine, cid, rows = sent
    line = handle_inbound(engine, sample(POSTFIX_DSN, rows[3], status=status), secret_keys=[SECRET])
    assert "permanent, not the address" in line
    assert state(engine, rows[3]) == ("sent", "active", [("bounce", "dsn")])
    assert assert_counters_match(engine, cid) == {"sent": 5}


def test_a_forged_token_is_rejected_and_nothing_changes(sent):
    engine, cid, rows = sent
    did = rows[1][0]
    forged = sample(POSTFIX_DSN, rows[1]).replace(delivery_token(SECRET, did).encode(), f"{did}-0123456789ab".encode())
    # The quoted Message-ID would still name the delivery: take it out too.
    forged = forged.replace(rows[1][2].encode(), b"<forged@example.com>")
    with pytest.raises(InvalidInput, match="not valid"):
        handle_inbound(engine, forged, secret_keys=[SECRET])
    other_secret = sample(POSTFIX_DSN, rows[1], secret="someone else's").replace(rows[1][2].encode(), b"<x@y>")
    with pytest.raises(InvalidInput, match="not valid"):
        handle_inbound(engine, other_secret, secret_keys=[SECRET])
    assert state(engine, rows[1]) == ("sent", "active", [])
    assert assert_counters_match(engine, cid) == {"sent": 5}


def test_a_token_signed_with_an_old_secret_still_verifies(sent):
    engine, cid, rows = sent
    assert "bounced" in handle_inbound(engine, sample(POSTFIX_DSN, rows[4]), secret_keys=["new", SECRET])


@pytest.mark.parametrize("via", ["original-mail-from", "message-id"])
def test_arf_complaint_marks_the_subscriber_complained(sent, via):
    engine, cid, rows = sent
    did = rows[2][0]
    omf = f"Original-Mail-From: <bounces+{delivery_token(SECRET, did)}@example.com>\n" if via != "message-id" else ""
    raw = sample(ARF, rows[2], feedback_type="abuse", original_mail_from=omf)
    line = handle_inbound(engine, raw, secret_keys=[SECRET])
    assert line == f"delivery {did}: complaint (abuse); subscriber marked complained"
    assert state(engine, rows[2]) == ("sent", "complained", [("complaint", "arf")])
    assert suppressed(engine) == 1
    assert assert_counters_match(engine, cid) == {"sent": 5}


def test_arf_not_spam_is_not_a_complaint(sent):
    engine, cid, rows = sent
    raw = sample(ARF, rows[2], feedback_type="not-spam", original_mail_from="")
    assert "nothing to record" in handle_inbound(engine, raw, secret_keys=[SECRET])
    assert state(engine, rows[2]) == ("sent", "active", [])


def test_a_prose_bounce_to_the_verp_address_is_classified_from_its_text(sent):
    engine, cid, rows = sent
    verp = f"bounces+{delivery_token(SECRET, rows[0][0])}@example.com"
    raw = (f"From: MAILER-DAEMON@old.example.net\r\nTo: {verp}\r\nSubject: failure notice\r\n\r\n"
           f"Hi. This is the qmail-send program at old.example.net.\r\n"
           f"<{rows[0][1]}>:\r\nRemote host said: 550 5.1.1 <{rows[0][1]}>... User unknown\r\n").encode()
    assert "bounced (5.1.1" in handle_inbound(engine, raw, secret_keys=[SECRET])
    assert state(engine, rows[0])[:2] == ("bounced", "bounced")
    assert assert_counters_match(engine, cid) == {"sent": 4, "bounced": 1}


def test_an_auto_reply_to_the_verp_address_changes_nothing(sent):
    engine, cid, rows = sent
    verp = f"bounces+{delivery_token(SECRET, rows[0][0])}@example.com"
    raw = (f"From: reader@example.com\r\nTo: {verp}\r\nSubject: Out of office\r\nAuto-Submitted: auto-replied\r\n"
           "\r\nI am away until Monday. 550 5.1.1 is not a bounce here.\r\n").encode()
    assert "nothing to record (auto-reply)" in handle_inbound(engine, raw, secret_keys=[SECRET])
    assert state(engine, rows[0]) == ("sent", "active", [])


def test_a_report_about_a_delivery_not_yet_recorded_sent_still_bounces_the_subscriber(engine):
    """The engine records an outcome with the next message; a very fast DSN can come
    first. The subscriber is bounced; the delivery keeps its state; counters agree."""
    cid = seed_campaign(engine, 2, batch_size=50)
    with transaction(engine) as s:
        row = s.execute(select(Delivery.id, Subscriber.email, Delivery.message_id, Delivery.subscriber_id)
                        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                        .where(Delivery.campaign_id == cid).order_by(Delivery.id)).first()
        s.execute(text("UPDATE delivery SET status = 'sending' WHERE id = :d"), {"d": row[0]})
    line = handle_inbound(engine, sample(POSTFIX_DSN, row), secret_keys=[SECRET])
    assert "delivery stays sending" in line and "subscriber marked bounced" in line
    assert assert_counters_match(engine, cid) == {"sending": 1, "queued": 1}


def test_is_bounce_routes_verp_and_reports_only(sent):
    _, _, rows = sent
    assert is_bounce(sample(POSTFIX_DSN, rows[0]))
    assert is_bounce(sample(ARF, rows[0], feedback_type="abuse", original_mail_from=""))
    assert not is_bounce(b"From: a@example.org\r\nTo: unsubscribe+tok@example.com\r\nSubject: unsubscribe\r\n\r\n")
    assert is_bounce(b"From: a@example.org\r\nTo: x@example.com\r\n\r\n", {"ORIGINAL_RECIPIENT": "bounces+1-ab@example.com"})


def test_newsletter_inbound_routes_bounces_and_mailto_unsubscribes(settings, engine, smtp_sink):
    """`newsletter inbound` reads what an MTA pipe gives it: a DSN to the VERP address is
    a bounce; a message to unsubscribe+TOKEN@ is an unsubscribe; anything else is a
    one-line error with exit code 2."""
    import os
    import subprocess
    import sys

    from mailer.core import signing
    from mailer.sending import drain
    from tests.support.delivery import config, transport_for
    from tests.support.seed import seed_campaign

    cid = seed_campaign(engine, 2, batch_size=10)
    drain(engine, cid, transport=transport_for(smtp_sink), cfg=config(secret_key=settings.secret_key))
    first = smtp_sink.messages[0]
    dsn = (f"From: MAILER-DAEMON@mx.example.net\r\nTo: {first.mail_from}\r\nSubject: Undelivered Mail\r\n"
           "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n"
           "--b\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n"
           "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n"
           f"Final-Recipient: rfc822; {first.rcpt_tos[0]}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
           "Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n\r\n--b--\r\n").encode()

    def inbound(raw: bytes):
        return subprocess.run([sys.executable, "-m", "mailer.cli", "inbound"], input=raw, capture_output=True,
                              env=dict(os.environ), timeout=60)

    bounced = inbound(dsn)
    assert bounced.returncode == 0, bounced.stderr
    with transaction(engine) as s:
        assert s.execute(text("SELECT status FROM subscriber WHERE email = :e"),
                         {"e": first.rcpt_tos[0]}).scalar() == "bounced"
        other_id = s.execute(text("SELECT id FROM subscriber WHERE email <> :e"), {"e": first.rcpt_tos[0]}).scalar()
    token = signing.unsubscribe_token(settings.secret_key, other_id, cid)
    mailto = f"From: x@example.com\r\nTo: unsubscribe+{token}@example.com\r\nSubject: unsubscribe\r\n\r\n".encode()
    assert inbound(mailto).returncode == 0
    with transaction(engine) as s:
        assert s.execute(text("SELECT status FROM subscriber WHERE id = :i"), {"i": other_id}).scalar() == "unsubscribed"
    junk = inbound(b"From: x@example.com\r\nTo: someone@example.com\r\nSubject: hi\r\n\r\nhello\r\n")
    assert junk.returncode == 2 and len(junk.stderr.decode().strip().splitlines()) == 1
