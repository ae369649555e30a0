"""The guarded statements of ``mailer.queries`` under concurrency, on both databases."""

from __future__ import annotations

import threading

import pytest

from mailer import queries
from mailer.core.db import transaction
from mailer.models import ATTENTION
from mailer.models import CampaignStatus as C
from mailer.models import DeliveryStatus as D
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


@pytest.mark.parametrize("statuses", [ATTENTION, (D.failed,), (D.skipped, D.bounced)], ids=["all", "one", "two"])
def test_the_deliveries_an_editor_looks_for_are_read_from_the_partial_index(engine, statuses):
    """``campaign_deliveries`` for failed, bounced or skipped deliveries is planned on
    ``ix_delivery_attention`` (the few that did not get it), on both databases."""
    from sqlalchemy import event

    cid = seed_campaign(engine, 30, batch_size=10)
    seen: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if "FROM delivery d JOIN subscriber" in statement:
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        with transaction(engine) as s:
            assert queries.campaign_deliveries(s, campaign_id=cid, statuses=statuses) == []
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    ((statement, parameters),) = seen
    with engine.connect() as conn:
        cursor = conn.connection.cursor()
        if engine.dialect.name == "postgresql":
            cursor.execute("SET enable_seqscan = off")  # a 30-row table would be read whole
            cursor.execute("EXPLAIN " + statement, parameters)
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
        plan = " ".join(str(row) for row in cursor.fetchall())
    assert "ix_delivery_attention" in plan, plan
