"""Clicks and opens as they come in: a click token becomes the redirect to its link's
target, and the click or open is queued for recording (``mailer.engagement``)."""

from __future__ import annotations

import threading
from collections import OrderedDict

from sqlalchemy.engine import Engine

from mailer import engagement, queries
from mailer.core import signing
from mailer.core.db import transaction
from mailer.core.errors import NotFound
from mailer.models import EngagementKind

# Campaigns whose links a web process keeps (they never change once a campaign started).
CACHED_CAMPAIGNS = 1024
NOT_VALID = "this link is not valid"


class Tracker:
    """One per web process: the links of the campaigns clicked lately, and the
    recorder. With a campaign's links known, a click needs no database at all."""

    def __init__(self, engine: Engine, keys: tuple[str, ...], *, strict: bool = False):
        self.engine, self.keys = engine, keys
        self.recorder = engagement.Recorder(engine, strict=strict)
        self._links: OrderedDict[int, tuple[str, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def links_of(self, campaign_id: int) -> tuple[str, ...]:
        with self._lock:
            found = self._links.get(campaign_id)
            if found is not None:
                self._links.move_to_end(campaign_id)
                return found
        with transaction(self.engine) as session:
            links = queries.campaign_links(session, campaign_id=campaign_id)
        if links is None:
            raise NotFound(NOT_VALID)
        with self._lock:
            self._links[campaign_id] = tuple(links)
            while len(self._links) > CACHED_CAMPAIGNS:
                self._links.popitem(last=False)
        return tuple(links)

    def click(self, token: str, *, method: str, user_agent: str) -> str:
        """The target of a click token's link (``NotFound`` for any token that is not
        one of ours, or names no link), and the click queued for recording."""
        try:
            campaign_id, delivery_id, index = signing.read_click_token(self.keys, token)
        except signing.InvalidToken as err:
            raise NotFound(NOT_VALID) from err
        links = self.links_of(campaign_id)
        if index >= len(links):
            raise NotFound(NOT_VALID)
        self._record(campaign_id, delivery_id, EngagementKind.click, index, method, user_agent)
        return links[index]

    def open(self, token: str, *, method: str, user_agent: str) -> None:
        """An open pixel fetched: queued for recording (``NotFound`` for a bad token)."""
        try:
            campaign_id, delivery_id = signing.read_open_token(self.keys, token)
        except signing.InvalidToken as err:
            raise NotFound(NOT_VALID) from err
        self._record(campaign_id, delivery_id, EngagementKind.open, None, method, user_agent)

    def _record(self, campaign_id, delivery_id, kind, index, method, user_agent) -> None:
        self.recorder.start()
        self.recorder.add(engagement.hit(campaign_id=campaign_id, delivery_id=delivery_id, kind=kind,
                                         link_index=index, method=method, user_agent=user_agent))

    def close(self) -> None:
        self.recorder.stop()
