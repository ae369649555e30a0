"""The guarded statements of ``mailer.queries`` under concurrency, on both databases."""

from __future__ import annotations

import threading

from mailer import queries
from mailer.core.db import transaction
from mailer.models import CampaignStatus as C
from tests.support.seed import seed_campaign


def test_transition_campaign_changes_a_campaign_once_however_many_try(engine):
    cid = seed_campaign(engine, 3, start=False)
    barrier, wins = threading.Barrier(6), []

    def start():
        barrier.wait()
        with transaction(engine) as s:
            if queries.transition_campaign(s, campaign_id=cid, from_=[C.draft], to=C.sending):
                wins.append(threading.get_ident())

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(wins) == 1
    with transaction(engine) as s:
        assert not queries.transition_campaign(s, campaign_id=cid, from_=[C.draft], to=C.cancelled)
        assert queries.transition_campaign(s, campaign_id=cid, from_=[C.sending], to=C.paused, pause_reason="x")


def test_insert_campaign_twice_is_one_campaign(engine):
    cid = seed_campaign(engine, 1, start=False)
    with transaction(engine) as s:
        from mailer.models import Campaign

        c = s.get(Campaign, cid)
        again, created = queries.insert_campaign(s, issue_id=c.issue_id, list_id=c.list_id, scheduled_at=None,
                                                 now=c.created_at)
    assert (again, created) == (cid, False)
