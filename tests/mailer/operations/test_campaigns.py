"""The campaign operations themselves: what they change, what they refuse, and what they
ask to queue once committed (``operations.commit`` puts it on the real broker)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from mailer.core.db import transaction
from mailer.core.errors import ConflictError, InvalidInput, NotFound
from mailer.models import CampaignStatus as C
from mailer.operations import Queue, commit
from mailer.operations import campaigns as ops
from mailer.operations import issues as issue_ops
from tests.support.seed import seed_list
from tests.support.web import issue_source

NOW = datetime.now(timezone.utc)


def _issue(engine, settings) -> int:
    with transaction(engine) as s:
        return issue_ops.create_issue(s, source=issue_source(), settings=settings).id


def _tasks(settings) -> int:
    folder = settings.broker_folder
    return sum(1 for f in folder.iterdir() if f.is_file()) if folder.exists() else 0


def test_start_now_freezes_the_audience_and_asks_for_one_task_per_batch(engine, settings):
    issue_id = _issue(engine, settings)
    seed_list(engine, 5)
    with transaction(engine) as s:
        done = ops.schedule_issue(s, issue_ref=issue_id, list_name="weekly", when="now",
                                  settings=settings.model_copy(update={"batch_size": 2}))
        assert (done.status, done.started, done.queue) == (C.sending, 5, (Queue(done.campaign_id, 3),))
        assert _tasks(settings) == 0
        commit(s, done, settings=settings)  # committed first, then queued
    assert _tasks(settings) == 3
    with transaction(engine) as s:
        with pytest.raises(ConflictError, match="is already sending; nothing new was started"):
            ops.schedule_issue(s, issue_ref=issue_id, list_name="weekly", when="now", settings=settings)


def test_scheduling_queues_nothing_and_moving_keeps_one_campaign(engine, settings):
    issue_id = _issue(engine, settings)
    seed_list(engine, 2)
    at, later = NOW + timedelta(days=2), NOW + timedelta(days=3)
    with transaction(engine) as s:
        first = ops.schedule_issue(s, issue_ref="ai-this-week", list_name="weekly", when=at, settings=settings)
        second = ops.schedule_issue(s, issue_ref=issue_id, list_name="weekly", when=later, settings=settings)
    assert first.queue == second.queue == () and first.campaign_id == second.campaign_id
    assert (second.status, second.scheduled_at) == (C.scheduled, later)


def test_pause_resume_cancel_retry_refuse_what_the_state_forbids(engine, settings):
    issue_id = _issue(engine, settings)
    seed_list(engine, 3)
    with transaction(engine) as s:
        cid = ops.schedule_issue(s, issue_ref=issue_id, list_name="weekly", when="now", settings=settings).campaign_id
    with transaction(engine) as s:
        with pytest.raises(ConflictError, match=f"^campaign {cid} is sending; it cannot be resumed$"):
            ops.resume(s, campaign_id=cid)
        assert ops.pause(s, campaign_id=cid) == ops.Changed(cid, C.paused)
        with pytest.raises(ConflictError, match=f"^campaign {cid} is paused; it cannot be paused$"):
            ops.pause(s, campaign_id=cid)
        resumed = ops.resume(s, campaign_id=cid)
        assert (resumed.status, resumed.queue) == (C.sending, (Queue(cid, 1),))
        assert ops.retry(s, campaign_id=cid) == ops.Changed(cid, C.sending)  # nothing failed: nothing to do
        assert ops.cancel(s, campaign_id=cid).status == C.cancelled
        with pytest.raises(ConflictError, match=f"^campaign {cid} was cancelled$"):
            ops.retry(s, campaign_id=cid)
        with pytest.raises(NotFound, match="^no campaign 424242$"):
            ops.pause(s, campaign_id=424242)


@pytest.mark.parametrize("kw, message", [
    ({"at": None, "tz": None, "next_slot": False, "now_flag": False}, "exactly one of"),
    ({"at": "2020-01-01T09:00", "tz": "UTC", "next_slot": False, "now_flag": False}, "is in the past"),
    ({"at": "2099-01-01T09:00", "tz": "Nowhere/City", "next_slot": False, "now_flag": False}, "unknown time zone"),
    ({"at": "2031-03-09T02:30", "tz": "America/New_York", "next_slot": False, "now_flag": False}, "does not exist"),
    ({"at": None, "tz": "Nowhere/City", "next_slot": True, "now_flag": False}, "unknown time zone"),
])
def test_parse_when_refuses_before_anything_is_written(kw, message):
    with pytest.raises(InvalidInput, match=message):
        ops.parse_when(now=NOW, **kw)


def test_stats_count_the_records_and_offer_only_the_allowed_actions(engine, settings):
    issue_id = _issue(engine, settings)
    seed_list(engine, 4)
    with transaction(engine) as s:
        cid = ops.schedule_issue(s, issue_ref=issue_id, list_name="weekly", when="now", settings=settings).campaign_id
        stats = ops.stats(s, cid)
    assert (stats["total"], stats["queued"], stats["sent"], stats["progress"]) == (4, 4, 0, 0.0)
    assert stats["actions"] == ["pause", "cancel"]


def _tagged_list(engine) -> None:
    """Seven active members of 'weekly' and one pending: founding/CN in several mixes."""
    from sqlalchemy import update

    from subscribers import service
    from subscribers.models import Subscriber

    people = [("a", ["founding"], "CN"), ("b", ["founding"], "CN"), ("c", ["founding"], "FR"), ("d", [], "CN"),
              ("e", ["founding", "vip"], "CN"), ("f", ["vip"], "FR"), ("g", [], "FR")]
    with transaction(engine) as s:
        for name, tags, country in people:
            sub = service.add_subscriber(s, email=f"{name}@example.com", status="active", list_name="weekly",
                                         attributes={"country": country})
            s.execute(update(Subscriber).where(Subscriber.id == sub.id).values(tags=tags))
        service.add_subscriber(s, email="pending@example.com", status="pending", list_name="weekly",
                               attributes={"country": "CN"})


def _deliveries(engine, campaign_id: int) -> set[str]:
    from sqlalchemy import select

    from mailer.models import Delivery
    from subscribers.models import Subscriber

    with transaction(engine) as s:
        return set(s.scalars(select(Subscriber.email).join(Delivery, Delivery.subscriber_id == Subscriber.id)
                             .where(Delivery.campaign_id == campaign_id)))


def test_a_campaign_to_a_segment_freezes_exactly_the_segment(engine, settings):
    from mailer.operations import subscribers as subscriber_ops

    issue_id = _issue(engine, settings)
    _tagged_list(engine)
    segment = 'tag:founding AND country = "CN"'
    with transaction(engine) as s:
        size = subscriber_ops.segment_size(s, list_name="weekly", segment=segment)
        done = ops.schedule_issue(s, issue_ref=issue_id, list_name="weekly", when="now", settings=settings,
                                  segment=segment)
    assert size == done.started == 3
    assert _deliveries(engine, done.campaign_id) == {"a@example.com", "b@example.com", "e@example.com"}


def test_a_scheduled_campaign_keeps_its_segment_until_it_starts(engine, settings):
    from mailer import campaigns
    from mailer.operations import subscribers as subscriber_ops

    issue_id = _issue(engine, settings)
    _tagged_list(engine)
    with transaction(engine) as s:
        done = ops.schedule_issue(s, issue_ref=issue_id, list_name="weekly", when=NOW + timedelta(days=1),
                                  settings=settings, segment="tag:vip OR NOT tag:founding")
    with transaction(engine) as s:
        size = subscriber_ops.segment_size(s, list_name="weekly", segment="tag:vip OR NOT tag:founding")
        started = campaigns.start_campaign(s, campaign_id=done.campaign_id, batch_size=2)
    assert started == size == 4
    assert _deliveries(engine, done.campaign_id) == {"d@example.com", "e@example.com", "f@example.com",
                                                      "g@example.com"}


@pytest.mark.parametrize(("segment", "message"), [
    ('tag:founding AND shoe = "42"', "unknown attribute 'shoe' at position 18"),
    ("tag:founding AND", "it ends too soon"),
])
def test_a_bad_segment_is_refused_before_anything_is_scheduled(engine, settings, segment, message):
    from sqlalchemy import func, select

    from mailer.models import Campaign

    issue_id = _issue(engine, settings)
    _tagged_list(engine)
    with pytest.raises(InvalidInput, match=message):
        with transaction(engine) as s:
            ops.schedule_issue(s, issue_ref=issue_id, list_name="weekly", when="now", settings=settings,
                               segment=segment)
    with transaction(engine) as s:
        assert s.scalar(select(func.count()).select_from(Campaign)) == 0


def test_a_segment_nobody_is_in_sends_nothing(engine, settings):
    issue_id = _issue(engine, settings)
    _tagged_list(engine)
    with pytest.raises(InvalidInput, match="no active subscribers in segment 'tag:nobody'"):
        with transaction(engine) as s:
            ops.schedule_issue(s, issue_ref=issue_id, list_name="weekly", when="now", settings=settings,
                               segment="tag:nobody")
