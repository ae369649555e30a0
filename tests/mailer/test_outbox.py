"""The webhook outbox: each change writes its deliveries in its own transaction (none
for a change rolled back, none for a disabled endpoint or an event type it did not ask
for), from wherever the change is made; and one attempt of a delivery against a real
HTTP server, with what it records."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from mailer import hookdelivery, outbox
from mailer.core.clock import utcnow
from mailer.core.db import transaction
from mailer.models import WebhookDelivery, WebhookStatus
from mailer.operations import subscribers as subs
from mailer.operations import webhooks as ops
from subscribers import service
from subscribers.models import SubscriberStatus as S
from tests.support.seed import seed_campaign


def endpoint(engine, url="http://127.0.0.1:9/hook", events=("all",), enabled=True) -> tuple[int, str]:
    with transaction(engine) as s:
        e = ops.add(s, url=url, events=list(events), enabled=enabled)
        return e.id, e.secret


def rows(engine) -> list[WebhookDelivery]:
    with transaction(engine) as s:
        return list(s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


def types(engine) -> list[str]:
    return [r.event_type for r in rows(engine)]


def test_each_subscriber_change_writes_its_event_in_its_transaction(engine):
    endpoint(engine)
    with transaction(engine) as s:
        sid = subs.add(s, email="ann@example.com", name="Ann", list_name="weekly").id
    with transaction(engine) as s:
        subs.edit(s, subscriber_id=sid, status=S.active)
    with transaction(engine) as s:
        subs.unsubscribe(s, subscriber_id=sid, origin="admin")
        subs.unsubscribe(s, subscriber_id=sid, origin="admin")  # changes nothing: no second event
    assert types(engine) == ["subscriber.subscribed", "subscriber.confirmed", "subscriber.unsubscribed"]
    first = json.loads(rows(engine)[0].body)
    assert first["type"] == "subscriber.subscribed"
    assert first["data"]["subscriber"] == {"id": sid, "email": "ann@example.com", "name": "Ann",
                                           "status": "pending"}
    assert first["data"]["list"] == "weekly" and first["data"]["origin"] == "admin"
    assert all(r.status == WebhookStatus.pending and r.attempts == 0 for r in rows(engine))


def test_a_change_rolled_back_leaves_no_delivery(engine):
    endpoint(engine)
    with pytest.raises(RuntimeError), transaction(engine) as s:
        subs.add(s, email="bob@example.com", list_name="weekly")
        assert len(s.execute(select(WebhookDelivery.id)).all()) == 1  # written, in this transaction
        raise RuntimeError("the change fails after the event")
    assert rows(engine) == []


def test_disabled_endpoints_and_unasked_types_get_nothing(engine):
    endpoint(engine, events=["unsubscribed"])
    off, _ = endpoint(engine, enabled=False)
    with transaction(engine) as s:
        sid = subs.add(s, email="cy@example.com", list_name="weekly").id
        service.unsubscribe(s, subscriber_id=sid, origin="admin")
    assert [(r.event_type, r.endpoint_id != off) for r in rows(engine)] == [("subscriber.unsubscribed", True)]


def test_two_endpoints_get_the_same_event_with_their_own_webhook_ids(engine):
    endpoint(engine)
    endpoint(engine, url="https://crm.example.com/in")
    with transaction(engine) as s:
        subs.add(s, email="dee@example.com", list_name="weekly")
    a, b = rows(engine)
    assert a.event_id == b.event_id and a.body == b.body and a.message_id != b.message_id


def test_a_campaign_start_and_finish_are_events(engine, smtp_sink):
    from mailer.sending import drain
    from tests.support.delivery import config, transport_for

    endpoint(engine, events=["campaign.started", "campaign.finished"])
    cid = seed_campaign(engine, 3)
    assert types(engine) == ["campaign.started"]
    drain(engine, cid, transport=transport_for(smtp_sink), cfg=config())
    assert types(engine) == ["campaign.started", "campaign.finished"]
    finished = json.loads(rows(engine)[1].body)["data"]
    assert finished["campaign"]["id"] == cid and finished["campaign"]["status"] == "sent"
    assert finished["campaign"]["counts"]["sent"] == 3 and finished["issue"]["slug"] == "weekly-1"


def test_the_sweep_finds_what_is_due_and_not_held(engine):
    endpoint(engine)
    with transaction(engine) as s:
        subs.add(s, email="eve@example.com", list_name="weekly")
    queued: list[list[int]] = []
    (row,) = rows(engine)
    assert hookdelivery.sweep(engine, enqueue=queued.append) == [row.id]
    cfg = hookdelivery.HookConfig(timeout=1)
    now = utcnow()
    with transaction(engine) as s:  # a worker holds it: not handed out again until its lease ends
        from mailer import queries
        assert queries.claim_webhook(s, delivery_id=row.id, now=now, lease_until=now + cfg.lease)
        assert queries.claim_webhook(s, delivery_id=row.id, now=now, lease_until=now + cfg.lease) is None
    assert hookdelivery.sweep(engine, enqueue=queued.append) == []
    assert hookdelivery.sweep(engine, enqueue=queued.append, now=now + cfg.lease + timedelta(seconds=1)) == [row.id]


def test_one_attempt_posts_a_signed_payload_and_records_the_answer(engine, receiver):
    _, secret = endpoint(engine, url=receiver.url("/flaky"))
    receiver.script("/flaky", [500, 200])
    with transaction(engine) as s:
        subs.add(s, email="fay@example.com", list_name="weekly")
    (row,) = rows(engine)
    cfg = hookdelivery.HookConfig(timeout=2, retry_base=0, max_attempts=3)
    first = hookdelivery.deliver(engine, row.id, cfg=cfg)
    assert (first.attempt, first.status, first.code) == (1, WebhookStatus.pending, 500)
    (after,) = rows(engine)
    assert (after.status, after.attempts, after.last_code, after.last_error) == ("pending", 1, 500, "ok")
    second = hookdelivery.deliver(engine, row.id, cfg=cfg)
    assert (second.attempt, second.status, second.code) == (2, WebhookStatus.delivered, 200)
    assert hookdelivery.deliver(engine, row.id, cfg=cfg) is None  # delivered: nothing more to do
    got = receiver.got("/flaky")
    assert len(got) == 2 and got[0].headers["webhook-id"] == got[1].headers["webhook-id"] == row.message_id
    assert Webhook(secret).verify(got[1].body, got[1].headers)["data"]["subscriber"]["email"] == "fay@example.com"
    (done,) = rows(engine)
    assert (done.status, done.attempts, done.last_code, done.delivered_at is not None) == ("delivered", 2, 200, True)


def test_attempts_run_out_into_failed_and_a_hanging_endpoint_times_out(engine, receiver):
    endpoint(engine, url=receiver.url("/hang"))
    receiver.script("/hang", ["hang"])
    with transaction(engine) as s:
        subs.add(s, email="gil@example.com", list_name="weekly")
    (row,) = rows(engine)
    cfg = hookdelivery.HookConfig(timeout=0.5, retry_base=0, max_attempts=2)
    first = hookdelivery.deliver(engine, row.id, cfg=cfg)
    assert (first.status, first.code, first.error) == (WebhookStatus.pending, None, "no answer within 0.5 s")
    assert hookdelivery.deliver(engine, row.id, cfg=cfg).status == WebhookStatus.failed
    (done,) = rows(engine)
    assert (done.status, done.attempts) == ("failed", 2)


def test_an_endpoint_disabled_after_the_event_skips_it(engine, receiver):
    eid, _ = endpoint(engine, url=receiver.url())
    with transaction(engine) as s:
        subs.add(s, email="hal@example.com", list_name="weekly")
    with transaction(engine) as s:
        ops.set_enabled(s, endpoint_id=eid, enabled=False)
    (row,) = rows(engine)
    assert hookdelivery.deliver(engine, row.id, cfg=hookdelivery.HookConfig()).status == WebhookStatus.skipped
    assert receiver.got() == []


def test_after_commit_the_rows_are_queued(engine, monkeypatch):
    queued: list[int] = []
    monkeypatch.setattr(outbox, "enqueue", lambda ids: queued.extend(ids))
    endpoint(engine)
    with transaction(engine) as s:
        subs.add(s, email="ivy@example.com", list_name="weekly")
        assert queued == []  # not before the commit: a worker would not see the row
    assert queued == [r.id for r in rows(engine)]


def test_a_bounce_at_smtp_time_on_the_send_path_is_an_event_too(engine, smtp_sink):
    from mailer.sending import drain
    from tests.support.delivery import config, transport_for

    endpoint(engine, events=["bounced"])
    smtp_sink.reject["reader000001@example.com"] = (550, "5.1.1 No such user")
    cid = seed_campaign(engine, 3)
    drain(engine, cid, transport=transport_for(smtp_sink), cfg=config())
    (row,) = rows(engine)
    data = json.loads(row.body)["data"]
    assert row.event_type == "subscriber.bounced" and data["subscriber"]["email"] == "reader000001@example.com"
    assert data["origin"] == "smtp" and data["campaign_id"] == cid and data["detail"]["permanent"] is True


def test_erasing_a_subscriber_erases_the_webhooks_that_name_them(engine):
    endpoint(engine)
    with transaction(engine) as s:
        kept = subs.add(s, email="kim@example.com", list_name="weekly").id
        gone = subs.add(s, email="lou@example.com", list_name="weekly").id
    with transaction(engine) as s:
        subs.erase(s, subscriber_id=gone)
    assert [(r.subscriber_id, "lou@" in r.body) for r in rows(engine)] == [(kept, False)]


def test_a_failed_delivery_is_sent_again_with_the_same_webhook_id(engine, receiver, monkeypatch):
    from mailer.core.errors import ConflictError

    queued: list[int] = []
    monkeypatch.setattr(outbox, "enqueue", lambda ids: queued.extend(ids))
    endpoint(engine, url=receiver.url("/down"))
    receiver.script("/down", [500, 200])
    with transaction(engine) as s:
        subs.add(s, email="max@example.com", list_name="weekly")
    (row,) = rows(engine)
    cfg = hookdelivery.HookConfig(timeout=2, retry_base=0, max_attempts=1)
    assert hookdelivery.deliver(engine, row.id, cfg=cfg).status == WebhookStatus.failed
    queued.clear()
    with transaction(engine) as s:
        ops.redeliver(s, delivery_id=row.id)
        with pytest.raises(ConflictError, match="is pending"):
            ops.redeliver(s, delivery_id=row.id)
    assert queued == [row.id]
    assert hookdelivery.deliver(engine, row.id, cfg=cfg).status == WebhookStatus.delivered
    a, b = receiver.got("/down")
    assert a.headers["webhook-id"] == b.headers["webhook-id"] and a.body == b.body
