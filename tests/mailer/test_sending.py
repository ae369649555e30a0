"""The delivery engine against a real database (SQLite and PostgreSQL) and a real SMTP
server (aiosmtpd), in this process. Worker-process tests are in test_workers.py."""

from __future__ import annotations

import email
import email.policy
import sys
import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError

from mailer import campaigns, queries
from mailer.core.db import transaction
from mailer.message import feedback_sender_id
from mailer.models import Campaign, Delivery
from mailer.sending import drain, send_batch
from mailer.transports.smtp import SmtpTransport
from subscribers.models import Membership, Subscriber
from tests.support.delivery import (
    assert_counters_match,
    config,
    received,
    transport_for,
)
from tests.support.seed import seed_campaign, seed_issue, seed_list

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=[1, 4], ids=["window1", "window4"])
def window(request) -> int:
    """NEWSLETTER_SEND_WINDOW: one message marked and recorded at a time, or four."""
    return request.param


def test_freeze_takes_active_members_once(engine):
    list_id = seed_list(engine, 30)
    seed_list(engine, 5, status="unsubscribed", start=100)
    seed_list(engine, 5, status="pending", start=200)
    issue_id = seed_issue(engine)
    with transaction(engine) as s:
        c, created = campaigns.create_campaign(s, issue_id=issue_id, list_id=list_id)
        again, created_again = campaigns.create_campaign(s, issue_id=issue_id, list_id=list_id)
        assert created and not created_again and again.id == c.id
        assert campaigns.start_campaign(s, campaign_id=c.id, batch_size=7) == 30
    with transaction(engine) as s:
        # A second start of the same campaign freezes nothing more ...
        assert campaigns.start_campaign(s, campaign_id=c.id, batch_size=7) == 0
        # ... and a second freeze, whatever called it, is refused by the unique key.
        with pytest.raises(IntegrityError), s.begin_nested():
            queries.freeze_audience(s, campaign_id=c.id, list_id=list_id, batch_size=7,
                                    now=datetime.now(timezone.utc))
        assert s.execute(text("SELECT COUNT(*) FROM delivery WHERE campaign_id = :c"), {"c": c.id}).scalar() == 30
        assert s.execute(text("SELECT COUNT(*) FROM batch WHERE campaign_id = :c"), {"c": c.id}).scalar() == 5
        seqs = s.execute(text("SELECT batch_seq, COUNT(*) FROM delivery WHERE campaign_id = :c GROUP BY batch_seq"),
                         {"c": c.id}).all()
        assert sorted(n for _, n in seqs) == [2, 7, 7, 7, 7]


def test_empty_list_is_refused_and_nothing_recorded(engine):
    from mailer.core.errors import InvalidInput

    list_id = seed_list(engine, 0)
    issue_id = seed_issue(engine)
    with pytest.raises(InvalidInput, match="no active subscribers"):
        with transaction(engine) as s:
            c, _ = campaigns.create_campaign(s, issue_id=issue_id, list_id=list_id)
            campaigns.start_campaign(s, campaign_id=c.id, batch_size=10)


def test_campaign_sends_every_message_once_with_headers(window, engine, smtp_sink):
    cid = seed_campaign(engine, 120, batch_size=50)
    outcomes = drain(engine, cid, transport=transport_for(smtp_sink), cfg=config(window=window))
    assert [o.sent for o in outcomes] == [50, 50, 20]
    got = received(smtp_sink)
    assert len(got) == 120 and set(got.values()) == {1}
    counts = assert_counters_match(engine, cid)
    assert counts == {"sent": 120}
    with transaction(engine) as s:
        assert s.get(Campaign, cid).status == "sent"
        d = s.scalars(select(Delivery).where(Delivery.campaign_id == cid)).first()
        assert d.last_code == 250 and d.message_id.startswith("<nl.") and d.sent_at is not None
    first = smtp_sink.messages[0]
    mail_from, data = first.mail_from, first.content
    msg = email.message_from_bytes(data, policy=email.policy.default)
    for header in ("From", "To", "Subject", "Date", "Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post",
                   "List-Id", "Feedback-ID", "MIME-Version"):
        assert msg[header], header
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "https://news.example.com/u/" in msg["List-Unsubscribe"] and "mailto:" in msg["List-Unsubscribe"]
    # Gmail's a:b:c:SenderId, the SenderId 5-15 characters: campaign, list, kind, sender.
    with transaction(engine) as s:
        list_id = s.get(Campaign, cid).list_id
    campaign_field, list_field, kind, sender_id = msg["Feedback-ID"].split(":")
    assert (campaign_field, list_field, kind) == (str(cid), str(list_id), "newsletter")
    assert 5 <= len(sender_id) <= 15 and sender_id == feedback_sender_id("example.com")
    assert {m.content.split(b"Feedback-ID: ")[1].split(b"\r\n")[0] for m in smtp_sink.messages} \
        == {msg["Feedback-ID"].encode()}  # one value for the campaign: nothing personal in it
    assert mail_from.startswith("bounces+") and mail_from.endswith("@example.com")
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]


def test_unsubscribe_after_freeze_is_skipped_not_mailed(window, engine, smtp_sink):
    cid = seed_campaign(engine, 20, batch_size=50)
    with transaction(engine) as s:
        s.execute(text("UPDATE subscriber SET status = 'unsubscribed' WHERE email = 'reader000003@example.com'"))
    drain(engine, cid, transport=transport_for(smtp_sink), cfg=config(window=window))
    got = received(smtp_sink)
    assert "reader000003@example.com" not in got and len(got) == 19
    assert assert_counters_match(engine, cid) == {"sent": 19, "skipped": 1}


class _Recording(SmtpTransport):
    """The real transport, noting which envelope each send put behind its message."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ahead: list[tuple[str, str | None]] = []

    def send(self, envelope_from, recipient, message, **kwargs):
        then = kwargs.get("then")
        self.ahead.append((recipient, then[1] if then else None))
        return super().send(envelope_from, recipient, message, **kwargs)


def _recording(sink) -> _Recording:
    return _Recording("127.0.0.1", sink.port, timeout=10)


def test_the_next_windows_first_envelope_goes_behind_the_last_message(engine, smtp_sink):
    """Window 4, a batch of 10: every message but the batch's last carries the next
    recipient's envelope, across windows too (the next window is marked before its
    content goes); one connection for all of it."""
    cid = seed_campaign(engine, 10, batch_size=10)
    transport = _recording(smtp_sink)
    drain(engine, cid, transport=transport, cfg=config(window=4))
    order = [recipient for recipient, _ in transport.ahead]
    assert [then for _, then in transport.ahead] == order[1:] + [None]
    assert len(received(smtp_sink)) == 10 and set(received(smtp_sink).values()) == {1}
    assert smtp_sink.sessions == 1


def test_an_envelope_sent_ahead_for_someone_who_left_is_dropped_with_the_connection(engine, smtp_sink):
    """The next window's first recipient unsubscribed after the freeze: the envelope that
    went ahead for them is abandoned (a server waiting for content cannot be told
    otherwise), the transport connects again, they get nothing and the rest get one copy."""
    cid = seed_campaign(engine, 10, batch_size=10)
    transport = _recording(smtp_sink)
    with transaction(engine) as s:
        rows = s.execute(text("SELECT s.email FROM delivery d JOIN subscriber s ON s.id = d.subscriber_id "
                              "WHERE d.campaign_id = :c ORDER BY d.id"), {"c": cid}).scalars().all()
        s.execute(text("UPDATE subscriber SET status = 'unsubscribed' WHERE email = :e"), {"e": rows[4]})
    drain(engine, cid, transport=transport, cfg=config(window=4))
    got = received(smtp_sink)
    assert rows[4] not in got and len(got) == 9 and set(got.values()) == {1}
    assert (rows[3], rows[4]) in transport.ahead  # it did go ahead
    assert smtp_sink.sessions == 2
    assert assert_counters_match(engine, cid) == {"sent": 9, "skipped": 1}


def test_smtp_replies_are_classified_and_recorded(window, engine, smtp_sink):
    smtp_sink.reject["reader000001@example.com"] = (550, "5.1.1 No such user")
    smtp_sink.reject["reader000002@example.com"] = (550, "5.7.1 Message rejected as spam")
    smtp_sink.reject["reader000003@example.com"] = (451, "4.3.0 Try again later")
    cid = seed_campaign(engine, 6, batch_size=50)
    transport = transport_for(smtp_sink)
    drain(engine, cid, transport=transport, cfg=config(window=window, retry_base_seconds=3600))
    with transaction(engine) as s:
        by_email = {e: (st, code, reply, att) for e, st, code, reply, att in s.execute(text(
            "SELECT s.email, d.status, d.last_code, d.last_reply, d.attempts FROM delivery d "
            "JOIN subscriber s ON s.id = d.subscriber_id WHERE d.campaign_id = :c"), {"c": cid})}
        assert by_email["reader000001@example.com"][:2] == ("bounced", 550)
        assert "5.1.1" in by_email["reader000001@example.com"][2]
        assert by_email["reader000002@example.com"][:2] == ("failed", 550)  # policy: not the subscriber's fault
        assert by_email["reader000003@example.com"][:2] == ("queued", 451)
        statuses = dict(s.execute(text("SELECT email, status FROM subscriber")).all())
        assert statuses["reader000001@example.com"] == "bounced"
        assert statuses["reader000002@example.com"] == "active"
        assert by_email["reader000003@example.com"][3] == 1
        s.execute(text("UPDATE delivery SET next_attempt_at = NULL WHERE campaign_id = :c"), {"c": cid})
        s.execute(text("UPDATE batch SET available_at = NULL WHERE campaign_id = :c"), {"c": cid})
    # The transient one is retried until max_attempts (3), then failed.
    drain(engine, cid, transport=transport, cfg=config(window=window))
    with transaction(engine) as s:
        st, att = s.execute(text("SELECT d.status, d.attempts FROM delivery d JOIN subscriber s "
                                 "ON s.id = d.subscriber_id WHERE s.email = 'reader000003@example.com'")).one()
        assert (st, att) == ("failed", 3)
        assert s.get(Campaign, cid).status == "sent"
    assert assert_counters_match(engine, cid) == {"sent": 3, "bounced": 1, "failed": 2}
    assert received(smtp_sink)["reader000000@example.com"] == 1


def test_pause_stops_at_next_message_and_resume_sends_the_rest_once(window, engine, smtp_sink):
    cid = seed_campaign(engine, 40, batch_size=10)
    transport = transport_for(smtp_sink)
    send_batch(engine, cid, transport=transport, cfg=config(window=window))
    with transaction(engine) as s:
        assert campaigns.pause_campaign(s, campaign_id=cid)
    assert send_batch(engine, cid, transport=transport, cfg=config(window=window)) is None
    assert len(received(smtp_sink)) == 10
    with transaction(engine) as s:
        assert campaigns.resume_campaign(s, campaign_id=cid)
    drain(engine, cid, transport=transport, cfg=config(window=window))
    got = received(smtp_sink)
    assert len(got) == 40 and set(got.values()) == {1}
    assert assert_counters_match(engine, cid) == {"sent": 40}


def test_two_concurrent_senders_never_send_twice(window, engine, smtp_sink, database_url):
    cid = seed_campaign(engine, 300, batch_size=20)
    errors = []

    def run(name):
        try:
            drain(engine, cid, transport=transport_for(smtp_sink), cfg=config(window=window, worker=name))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(f"w{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    got = received(smtp_sink)
    assert len(got) == 300 and set(got.values()) == {1}
    assert assert_counters_match(engine, cid) == {"sent": 300}


def test_a_dead_workers_batch_is_taken_over_after_its_lease(engine, smtp_sink):
    """Simulates a worker killed mid-message: its batch is claimed, one delivery is left
    'sending'. After the lease runs out another worker finishes the batch; the one
    message whose fate was unknown is the only one that may repeat."""
    cid = seed_campaign(engine, 10, batch_size=10)
    now = datetime.now(timezone.utc)
    with transaction(engine) as s:
        claim = queries.claim_batch(s, campaign_id=cid, worker="dead", now=now, lease=timedelta(seconds=30))
        first = queries.batch_recipients(s, campaign_id=cid, seq=claim.seq, now=now)[0]
        assert queries.mark_window(s, delivery_ids=[first.delivery_id], campaign_id=cid, now=now) == {
            first.delivery_id}
    # Within the lease nobody else can take it.
    assert send_batch(engine, cid, transport=transport_for(smtp_sink), cfg=config()) is None
    later = lambda: now + timedelta(seconds=31)  # noqa: E731
    out = send_batch(engine, cid, transport=transport_for(smtp_sink), cfg=config(), clock=later)
    assert out.sent == 10 and out.campaign_finished
    assert assert_counters_match(engine, cid) == {"sent": 10}
    # The database can tell: the repeat was a second try, recorded as a repeat.
    with transaction(engine) as s:
        tries = dict(s.execute(text("SELECT id, attempts || '/' || repeats FROM delivery WHERE campaign_id = :c"),
                               {"c": cid}).all())
        assert tries.pop(first.delivery_id) == "2/1" and set(tries.values()) == {"1/0"}
        assert campaigns.campaign_report(s, cid).repeated == 1


def test_a_worker_killed_mid_window_repeats_at_most_that_window(engine, smtp_sink):
    """NEWSLETTER_SEND_WINDOW=4: a worker marks four deliveries and dies before it records
    them. The one that takes over sends those four again, each counted as a repeat, and
    nothing else twice: the bound is the window."""
    cid = seed_campaign(engine, 10, batch_size=10)
    now = datetime.now(timezone.utc)
    with transaction(engine) as s:
        claim = queries.claim_batch(s, campaign_id=cid, worker="dead", now=now, lease=timedelta(seconds=30))
        window = [r.delivery_id for r in queries.batch_recipients(s, campaign_id=cid, seq=claim.seq, now=now)[:4]]
        assert queries.mark_window(s, delivery_ids=window, campaign_id=cid, now=now) == set(window)
    later = lambda: now + timedelta(seconds=31)  # noqa: E731
    out = send_batch(engine, cid, transport=transport_for(smtp_sink), cfg=config(window=4), clock=later)
    assert out.sent == 10 and out.campaign_finished
    with transaction(engine) as s:
        tries = dict(s.execute(text("SELECT id, attempts || '/' || repeats FROM delivery WHERE campaign_id = :c"),
                               {"c": cid}).all())
        assert {tries.pop(i) for i in window} == {"2/1"} and set(tries.values()) == {"1/0"}
        assert campaigns.campaign_report(s, cid).repeated == 4


def test_a_window_that_ends_early_gives_its_marks_back(engine, smtp_sink):
    """The circuit breaker trips on the second message of a window of four: the two
    marked but never sent go back to 'queued' with their attempt given back."""
    for i in range(2):
        smtp_sink.reject[f"reader{i:06d}@example.com"] = (554, "5.7.0 Authentication required")
    cid = seed_campaign(engine, 8, batch_size=10)
    drain(engine, cid, transport=transport_for(smtp_sink), cfg=config(window=4, permanent_error_limit=2))
    with transaction(engine) as s:
        rows = s.execute(text("SELECT status, attempts, repeats FROM delivery WHERE campaign_id = :c ORDER BY id"),
                         {"c": cid}).all()
        assert s.get(Campaign, cid).status == "paused"
    assert [tuple(r) for r in rows] == [("failed", 1, 0)] * 2 + [("queued", 0, 0)] * 6
    assert len(received(smtp_sink)) == 0


def test_a_dead_workers_release_cannot_undo_the_batch_of_the_one_that_took_over(engine):
    cid = seed_campaign(engine, 4, batch_size=10)
    now = datetime.now(timezone.utc)
    with transaction(engine) as s:
        queries.claim_batch(s, campaign_id=cid, worker="slow", now=now, lease=timedelta(seconds=5))
    with transaction(engine) as s:  # its lease ran out: another worker has it now
        later = now + timedelta(seconds=6)
        assert queries.claim_batch(s, campaign_id=cid, worker="fast", now=later, lease=timedelta(seconds=60))
    with transaction(engine) as s:
        assert queries.release_batch(s, campaign_id=cid, seq=0, worker="slow", now=later) is None
        assert queries.next_work_at(s, campaign_id=cid, now=later) == later + timedelta(seconds=60)
        assert queries.release_batch(s, campaign_id=cid, seq=0, worker="fast", now=later) == "pending"
        assert queries.next_work_at(s, campaign_id=cid, now=later) <= later


def test_one_recovery_task_waits_per_campaign(engine):
    cid = seed_campaign(engine, 1, batch_size=10)
    now = datetime.now(timezone.utc)
    with transaction(engine) as s:
        assert queries.claim_recovery(s, campaign_id=cid, at=now + timedelta(seconds=30), now=now)
        assert not queries.claim_recovery(s, campaign_id=cid, at=now + timedelta(seconds=20), now=now)
        # Once that time passed, the next waiter may be queued.
        assert queries.claim_recovery(s, campaign_id=cid, at=now + timedelta(seconds=90),
                                      now=now + timedelta(seconds=31))


@pytest.fixture
def pg_engine(request):
    """A migrated PostgreSQL database of the test's own (a copy of the session's template)."""
    from mailer.core.db import make_engine
    from tests.conftest import migrated_database

    with migrated_database(request, "postgres") as url:
        eng = make_engine(url)
        yield eng
        eng.dispose()


@pytest.mark.postgres
def test_an_outcome_survives_the_database_dropping_every_connection(pg_engine, smtp_sink):
    """After the relay took a message, the worker's connections are killed (as in a
    database restart or failover; PostgreSQL only): the outcome is written on a fresh
    connection and the next message goes out; nobody gets two, every delivery is recorded."""
    engine = pg_engine
    cid = seed_campaign(engine, 20, batch_size=20)
    real = transport_for(smtp_sink)
    killed = []

    class DroppingTransport:
        name = "dropping"

        def open(self):
            real.open()

        def send(self, envelope_from, recipient, message):
            result = real.send(envelope_from, recipient, message)
            if len(killed) < 3 and recipient.endswith(("3@example.com", "9@example.com", "5@example.com")):
                with engine.connect() as admin:
                    admin.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                       "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
                    admin.commit()
                killed.append(recipient)
            return result

        def close(self):
            real.close()

    drain(engine, cid, transport=DroppingTransport(), cfg=config())
    assert len(killed) == 3
    got = received(smtp_sink)
    assert len(got) == 20 and set(got.values()) == {1}
    assert assert_counters_match(engine, cid) == {"sent": 20}


@pytest.mark.postgres
def test_the_window_statement_on_a_connection_the_server_dropped_raises_sqlalchemys_error(pg_engine):
    """The window statement runs on the driver's connection; when the server ends that
    connection (a restart), the error is SQLAlchemy's OperationalError, as from
    ``conn.execute``: what the send loop takes for "the database went away, reconnect"."""
    from sqlalchemy.exc import OperationalError

    cid = seed_campaign(pg_engine, 2, batch_size=2)
    now = datetime.now(timezone.utc)
    with pg_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        ids = [d for d, in conn.execute(text("SELECT id FROM delivery WHERE campaign_id = :c"), {"c": cid})]
        assert queries.record_and_mark_window(conn, outcomes=[], delivery_ids=ids, campaign_id=cid,
                                              now=now) == set(ids)
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with pg_engine.connect() as other:
            assert other.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()
        with pytest.raises(OperationalError):
            queries.record_and_mark_window(conn, outcomes=[], delivery_ids=ids, campaign_id=cid, now=now)
        conn.invalidate()


@pytest.mark.postgres
def test_the_window_statement_is_planned_once_per_connection_and_the_pool_gets_the_default_back(pg_engine,
                                                                                              smtp_sink):
    """PostgreSQL planned the record-and-mark statement afresh at every window (1.6 ms of
    server CPU each): on the sender's own connection it keeps one plan; a connection
    without the setting plans every time; after a batch the pooled connections are back
    to PostgreSQL's default."""
    cid = seed_campaign(pg_engine, 12, batch_size=12)
    now = datetime.now(timezone.utc)

    def plans(conn, *, once: bool) -> tuple[int, int]:
        if once:
            queries.plan_window_once(conn)
        for _ in range(8):  # psycopg prepares a statement on its fifth run
            queries.record_and_mark_window(conn, outcomes=[], delivery_ids=[-1, -2], campaign_id=cid, now=now)
        return tuple(conn.execute(text("SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                                       "WHERE statement LIKE '%json_to_recordset%'")).one())

    with pg_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        generic, custom = plans(conn, once=False)
        assert custom > 0 and generic == 0
    pg_engine.dispose()  # the next connection is a new one, nothing prepared on it yet
    with pg_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        generic, custom = plans(conn, once=True)
        assert generic > 0 and custom == 0
        queries.unplan_window(conn)
        assert conn.execute(text("SHOW plan_cache_mode")).scalar_one() == "auto"

    drain(pg_engine, cid, transport=transport_for(smtp_sink), cfg=config(window=4))
    assert len(received(smtp_sink)) == 12
    with pg_engine.connect() as a, pg_engine.connect() as b:
        assert {c.execute(text("SHOW plan_cache_mode")).scalar_one() for c in (a, b)} == {"auto"}


def test_the_campaign_says_since_when_the_relay_is_unreachable(engine, smtp_sink):
    cid = seed_campaign(engine, 3, batch_size=50)
    port = smtp_sink.port
    smtp_sink.stop()
    drain(engine, cid, transport=SmtpTransport.from_url(f"smtp://127.0.0.1:{port}", timeout=2), cfg=config())
    with transaction(engine) as s:
        report = campaigns.campaign_report(s, cid)
    assert report.relay_down_since and "cannot reach SMTP relay" in report.relay_error
    assert report.eta_seconds is None and report.queued == 3
    smtp_sink.start()
    with transaction(engine) as s:
        s.execute(text("UPDATE batch SET available_at = NULL WHERE campaign_id = :c"), {"c": cid})
    drain(engine, cid, transport=transport_for(smtp_sink), cfg=config())
    with transaction(engine) as s:
        report = campaigns.campaign_report(s, cid)
    assert (report.relay_down_since, report.relay_error, report.sent) == (None, "", 3)


def test_too_many_permanent_errors_pause_the_campaign(window, engine, smtp_sink):
    for i in range(10):
        smtp_sink.reject[f"reader{i:06d}@example.com"] = (554, "5.7.0 Authentication required")
    cid = seed_campaign(engine, 20, batch_size=50)
    drain(engine, cid, transport=transport_for(smtp_sink), cfg=config(window=window, permanent_error_limit=5))
    with transaction(engine) as s:
        c = s.get(Campaign, cid)
        assert c.status == "paused" and "permanent errors in a row" in c.pause_reason
    counts = assert_counters_match(engine, cid)
    assert counts == {"failed": 5, "queued": 15}
    assert len(received(smtp_sink)) == 0


def test_unreachable_relay_keeps_deliveries_queued(window, engine, smtp_sink):
    cid = seed_campaign(engine, 5, batch_size=50)
    port = smtp_sink.port
    smtp_sink.stop()
    dead = SmtpTransport.from_url(f"smtp://127.0.0.1:{port}", timeout=2)
    outcomes = drain(engine, cid, transport=dead, cfg=config(window=window))
    assert outcomes == [] or outcomes[0].sent == 0
    counts = assert_counters_match(engine, cid)
    assert counts == {"queued": 5}
    with transaction(engine) as s:
        assert s.execute(text("SELECT MAX(attempts) FROM delivery WHERE campaign_id = :c"), {"c": cid}).scalar() == 0
    smtp_sink.start()
    with transaction(engine) as s:  # the batch waits a little before the next try
        s.execute(text("UPDATE batch SET available_at = NULL WHERE campaign_id = :c"), {"c": cid})
    drain(engine, cid, transport=transport_for(smtp_sink), cfg=config(window=window))
    assert len(received(smtp_sink)) == 5
    assert assert_counters_match(engine, cid) == {"sent": 5}


def test_cancel_records_every_unsent_delivery(window, engine, smtp_sink):
    cid = seed_campaign(engine, 30, batch_size=10)
    send_batch(engine, cid, transport=transport_for(smtp_sink), cfg=config(window=window))
    with transaction(engine) as s:
        assert campaigns.cancel_campaign(s, campaign_id=cid)
    assert assert_counters_match(engine, cid) == {"sent": 10, "skipped": 20}


def test_retry_failed_queues_them_again(window, engine, smtp_sink):
    smtp_sink.reject["reader000001@example.com"] = (552, "5.2.2 Mailbox full")
    cid = seed_campaign(engine, 3, batch_size=50)
    drain(engine, cid, transport=transport_for(smtp_sink), cfg=config(window=window))
    assert assert_counters_match(engine, cid) == {"sent": 2, "failed": 1}
    del smtp_sink.reject["reader000001@example.com"]
    with transaction(engine) as s:
        assert campaigns.retry_failed(s, campaign_id=cid) == 1
    drain(engine, cid, transport=transport_for(smtp_sink), cfg=config(window=window))
    assert assert_counters_match(engine, cid) == {"sent": 3}
    assert set(received(smtp_sink).values()) == {1}


# --- issue 4 follow-ups ------------------------------------------------------------------


def test_date_header_is_utc_written_plus_0000(engine, smtp_sink):
    """RFC 5322 §3.3: "-0000" means "zone unknown"; we know the zone, so "+0000"."""
    from email.utils import parsedate_to_datetime

    from mailer.message import _date_now

    assert _date_now().endswith(" +0000")
    cid = seed_campaign(engine, 2, batch_size=50)
    drain(engine, cid, transport=transport_for(smtp_sink), cfg=config())
    for m in smtp_sink.messages:
        msg = email.message_from_bytes(m.content, policy=email.policy.default)
        assert msg["Date"].endswith(" +0000"), msg["Date"]
        when = parsedate_to_datetime(msg["Date"])
        assert when.utcoffset() == timedelta(0)
        assert abs((datetime.now(timezone.utc) - when).total_seconds()) < 60


def test_static_body_lines_never_start_with_a_dot():
    """The SMTP client dot-stuffs a message with a line starting with "." (RFC 5321
    §4.5.2), a regex pass over the whole message per recipient; the compiled template
    writes such a dot as "=2E" so that pass is skipped, and decoding is unchanged."""
    from email.headerregistry import Address

    from mailer.merge import MARKERS, personalise
    from mailer.message import Recipient, compile_message

    html = "<style>\n.mj-column { width: 100% }\n</style>\n<p>Hi " + MARKERS["name"] + "</p>\n" + \
        "".join(f"<p>word{i} P.hD. sentence. ending. with. dots.</p>\n" for i in range(200))
    text_part = "Hi " + MARKERS["name"] + "\n.\n..\n" + "x. " * 400 + "\n"
    template = compile_message(subject="s", from_=Address("N", addr_spec="news@example.com"), html=html,
                               text=text_part, list_id="l.example.com", list_name="L", feedback_id="1:1:n:x")
    ann = Recipient(email="a@example.org", name="Ann", message_id="<1@example.com>",
                    unsubscribe_url="https://x.example/u/t")
    raw = template.assemble(ann)
    assert b"\n." not in raw
    # So the transport may skip its own pass; a value of the recipient's own on a line
    # that starts with "." takes that back.
    assert template.assemble_for_relay(ann) == (raw, None, True)
    dotted = template.assemble_for_relay(Recipient(email="a@example.org", name=".ann", message_id="<1@example.com>",
                                                   unsubscribe_url="https://x.example/u/t"))
    assert b"\n.ann" in dotted[0] and dotted[2] is False
    assert all(len(line) <= 76 for line in raw.split(b"\r\n\r\n", 1)[1].split(b"\r\n"))
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    plain, rich = [p.get_content() for p in msg.iter_parts()]
    values = {"name": "Ann", "email": "a@example.org", "unsubscribe_url": "https://x.example/u/t", "preferences_url": ""}
    assert plain.replace("\r\n", "\n") == personalise(text_part, values, html=False)
    assert rich.replace("\r\n", "\n") == personalise(html, values, html=True)


def test_a_name_starting_with_a_dot_arrives_whole(engine, smtp_sink):
    """The one message whose own value puts a "." at the start of a line is dot-stuffed
    by the transport (RFC 5321 §4.5.2); the others skip that pass. Both arrive intact."""
    cid = seed_campaign(engine, 3, batch_size=10)
    with transaction(engine) as s:
        s.execute(text("UPDATE subscriber SET name = '.Dot' WHERE email = 'reader000001@example.com'"))
        s.execute(text("UPDATE subscriber SET name = '.' WHERE email = 'reader000002@example.com'"))
    drain(engine, cid, transport=transport_for(smtp_sink), cfg=config(window=4))
    assert assert_counters_match(engine, cid) == {"sent": 3}
    by_rcpt = {m.rcpt_tos[0]: email.message_from_bytes(m.content, policy=email.policy.default)
               for m in smtp_sink.messages}
    for address, name in (("reader000001@example.com", ".Dot"), ("reader000002@example.com", ".")):
        plain = by_rcpt[address].get_body(("plain",)).get_content()
        assert f"Hi {name}," in plain, plain[:300]
    assert "reader000000@example.com" in by_rcpt


# --- bad input: an address the relay rejects or that cannot go into a message, CR/LF in a name
# or a stored subject, an unreachable relay: each ends in a clear recorded state.


def test_an_address_the_relay_rejects_is_recorded_and_the_others_are_sent(window, engine, smtp_sink):
    smtp_sink.reject["reader000002@example.com"] = (550, "5.1.1 <reader000002@example.com>: User unknown")
    cid = seed_campaign(engine, 5, batch_size=50)
    drain(engine, cid, transport=transport_for(smtp_sink), cfg=config(window=window))
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


def test_an_unreachable_relay_is_recorded_in_one_line_and_nothing_is_lost(window, engine, smtp_sink):
    cid = seed_campaign(engine, 6, batch_size=3)
    port = smtp_sink.port
    smtp_sink.stop()
    outcomes = drain(engine, cid, transport=SmtpTransport.from_url(f"smtp://127.0.0.1:{port}", timeout=2),
                     cfg=config(window=window))
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
    drain(engine, cid, transport=transport_for(smtp_sink), cfg=config(window=window))
    got = received(smtp_sink)
    assert len(got) == 6 and set(got.values()) == {1}
    assert assert_counters_match(engine, cid) == {"sent": 6}


def test_a_campaign_is_compiled_once_and_again_when_its_issue_or_tracking_changes(engine):
    """``prepare_campaign`` keeps the compiled issue while nothing it depends on changed
    (a batch reads only the cache's key), and compiles again after an edit of the issue
    or a change of the list's tracking."""
    from mailer.models import Issue
    from mailer.sending import prepare_campaign
    from subscribers.models import MailingList

    cid = seed_campaign(engine, 2)
    cfg = config()
    with transaction(engine) as s:
        first = prepare_campaign(s, cid, cfg)
        assert prepare_campaign(s, cid, cfg) is first
    with transaction(engine) as s:
        campaign = s.get(Campaign, cid)
        s.get(Issue, campaign.issue_id).updated_at = datetime.now(timezone.utc) + timedelta(seconds=5)
    with transaction(engine) as s:
        edited = prepare_campaign(s, cid, cfg)
        assert edited is not first and prepare_campaign(s, cid, cfg) is edited
    with transaction(engine) as s:
        mlist = s.get(MailingList, s.get(Campaign, cid).list_id)
        mlist.track_opens = not mlist.track_opens
    with transaction(engine) as s:
        tracked = prepare_campaign(s, cid, cfg)
        assert tracked is not edited and tracked.pixel != edited.pixel
