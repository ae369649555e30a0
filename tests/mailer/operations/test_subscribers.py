"""The subscriber operations: search by pages, edits the editor may and may not make,
and a subscriber's own data with the messages sent to them."""

from __future__ import annotations

import pytest

from mailer.core.db import transaction
from mailer.core.errors import ConflictError, InvalidInput
from mailer.operations import subscribers as ops
from subscribers.models import SubscriberStatus as S
from tests.support.seed import seed_campaign


def test_search_pages_through_everyone_by_id(engine):
    with transaction(engine) as s:
        for i in range(5):
            ops.add(s, email=f"p{i}@example.com", name=f"Person {i}", list_name="weekly")
    with transaction(engine) as s:
        first = ops.search(s, limit=2)
        second = ops.search(s, limit=2, after=first["next_after"])
        last = ops.search(s, limit=2, after=second["next_after"])
        assert [p["email"] for p in first["items"] + second["items"] + last["items"]] == [
            f"p{i}@example.com" for i in range(5)]
        assert last["next_after"] is None
        assert [p["email"] for p in ops.every(s, list_name="weekly")] == [f"p{i}@example.com" for i in range(5)]
        assert ops.search(s, q="person 3")["items"][0]["email"] == "p3@example.com"
        assert ops.search(s, q="%")["items"] == []  # a LIKE wildcard is searched for, not used
        with pytest.raises(InvalidInput, match="unknown status 'asleep'"):
            ops.search(s, status="asleep")


def test_edit_confirms_renames_and_unsubscribes_but_never_brings_back(engine):
    with transaction(engine) as s:
        sid = ops.add(s, email="ann@example.com").id
        assert ops.edit(s, subscriber_id=sid, name="Ann", status=S.active).status == S.active
        assert ops.edit(s, subscriber_id=sid, status=S.unsubscribed).status == S.unsubscribed
        with pytest.raises(ConflictError, match="only their own confirmation can bring them back"):
            ops.edit(s, subscriber_id=sid, status=S.active)
        with pytest.raises(InvalidInput, match="not 'bounced'"):
            ops.edit(s, subscriber_id=sid, status=S.bounced)


def test_my_data_lists_the_messages_sent(engine):
    cid = seed_campaign(engine, 2)
    with transaction(engine) as s:
        sid = ops.find(s, email="reader000001@example.com").id
        data = ops.my_data(s, subscriber_id=sid)
    assert data["email"] == "reader000001@example.com" and data["lists"] == ["weekly"]
    assert data["deliveries"] == [{"campaign_id": cid, "status": "queued", "sent_at": None}]
