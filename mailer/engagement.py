"""What readers do with a message after it arrived: clicks on tracked links and fetches
of the open pixel (``mailer.tracking``), recorded without holding up the reader.

The redirect answers first and records later: an event goes into an in-process queue,
and one thread per web process writes what has gathered in one statement. A database
that does not answer for a while (a restart, a failover) delays the writes, and the
redirects do not notice; events wait, up to ``limit`` of them, and the oldest are dropped
(and counted in the log) only beyond that.

Privacy: an event names its delivery (and so its subscriber) for
``NEWSLETTER_TRACKING_DAYS`` at most; beat's hourly roll-up then turns it into counts per
campaign, link and verdict, and per hour of the campaign's first 72 (``engagement_count``),
and deletes it. In strict mode
(``NEWSLETTER_TRACKING_STRICT``) that happens as it is written: only counts are kept.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from mailer import machines, queries
from mailer.core.clock import as_utc, utcnow
from mailer.models import EngagementKind

log = logging.getLogger(__name__)
MAX_AGENT = 500


@dataclass(frozen=True)
class Hit:
    """One click (with its link index) or open, as the web process saw it."""

    campaign_id: int
    delivery_id: int
    kind: EngagementKind
    link_index: int | None
    method: str
    user_agent: str
    at: datetime

    def row(self) -> dict:
        values = asdict(self)
        return {"cid": values["campaign_id"], "did": values["delivery_id"], "kind": str(self.kind),
                "link": self.link_index, "method": self.method[:8], "agent": self.user_agent[:MAX_AGENT],
                "at": self.at}


class Recorder:
    """The queue and its writer thread. ``add`` never blocks and never touches the
    database; ``flush`` writes what is queued now (the thread calls it; so may a test or
    a shutdown)."""

    def __init__(self, engine: Engine, *, limit: int = 100_000, retry_seconds: float = 1.0, batch: int = 500,
                 strict: bool = False):
        self.engine, self.limit, self.retry_seconds, self.batch = engine, limit, retry_seconds, batch
        self.strict = strict  # NEWSLETTER_TRACKING_STRICT: only counts are kept, from the start
        self._queue: collections.deque[Hit] = collections.deque()
        self._lock = threading.Lock()
        self._writing = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0

    def add(self, hit: Hit) -> None:
        with self._lock:
            if len(self._queue) >= self.limit:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(hit)
        self._wake.set()

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def flush(self) -> int:
        """Write what is queued, a batch per transaction; returns how many. A database
        error leaves the unwritten events queued, in order, and is raised."""
        written = 0
        # One writer at a time: a flush returns only once what was queued before it is
        # committed, also when the thread had already taken it.
        with self._writing:
            while True:
                with self._lock:
                    taken = [self._queue.popleft() for _ in range(min(self.batch, len(self._queue)))]
                if not taken:
                    return written
                try:
                    with self.engine.begin() as conn:
                        queries.insert_engagement(conn, [h.row() for h in taken])
                        written_for = {h.delivery_id for h in taken}
                        rejudge(conn, written_for)
                        if self.strict:  # judged with what this batch holds, then only counted
                            queries.roll_up_engagement(conn, delivery_ids=sorted(written_for))
                except BaseException:
                    with self._lock:
                        self._queue.extendleft(reversed(taken))
                    raise
                written += len(taken)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="engagement-recorder", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        try:
            self.flush()
        except DBAPIError:
            log.warning("%d click and open events not recorded: the database does not answer", self.pending())

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            try:
                self.flush()
            except DBAPIError as err:
                log.warning("click and open events wait (%d): %s", self.pending(), str(err).splitlines()[0])
                self._stop.wait(self.retry_seconds)
                self._wake.set()
            except Exception:  # noqa: BLE001 - the thread must live on; the events stay queued
                log.exception("click and open events not written")
                self._stop.wait(self.retry_seconds)
                self._wake.set()


def rejudge(conn, delivery_ids) -> None:
    """Judge every event of these deliveries again, now that they have new ones."""
    rows = queries.delivery_engagement(conn, delivery_ids=sorted(delivery_ids))
    by_delivery: dict[int, list] = {}
    for row in rows:
        by_delivery.setdefault(row[0], []).append(row)
    verdicts = []
    for events in by_delivery.values():
        _, sent_at, links, *_ = events[0]
        links = json.loads(links) if isinstance(links, str) else (links or [])
        seen = [machines.Seen(eid, kind, index, method, agent, as_utc(at))
                for _, _, _, eid, kind, index, method, agent, at in events]
        for eid, (machine, reason) in machines.judge(seen, sent_at=as_utc(sent_at), links=len(links)).items():
            verdicts.append({"eid": eid, "machine": machine, "reason": reason})
    queries.judge_engagement(conn, verdicts)


def counts(session, *, campaign_id: int) -> dict:
    """A campaign's clicks and opens: people's (events, and deliveries with one), and
    machines' apart, by reason. Counted from the judged event rows."""
    out = {"human_opens": 0, "human_clicks": 0, "unique_opens": 0, "unique_clicks": 0,
           "machine_opens": 0, "machine_clicks": 0, "machine_reasons": {}}
    for kind, machine, reason, events, deliveries in queries.engagement_counts(session, campaign_id=campaign_id):
        events, deliveries = int(events), int(deliveries)  # PostgreSQL's SUM is a numeric
        if machine:
            out[f"machine_{kind}s"] += events
            out["machine_reasons"][reason] = out["machine_reasons"].get(reason, 0) + events
        elif machine is not None:
            out[f"human_{kind}s"] += events
            out[f"unique_{kind}s"] += deliveries
    return out


def links(session, *, campaign_id: int, targets: list[str]) -> list[dict]:
    """Clicks per link of a campaign, in the issue's order: people's clicks and readers,
    machines' clicks apart."""
    out = [{"index": i, "url": url, "clicks": 0, "readers": 0, "machine_clicks": 0} for i, url in enumerate(targets)]
    for index, machine, events, readers in queries.link_clicks(session, campaign_id=campaign_id):
        events, readers = int(events), int(readers)
        if 0 <= index < len(out):
            if machine:
                out[index]["machine_clicks"] += events
            else:
                out[index]["clicks"] += events
                out[index]["readers"] += readers
    return out


def roll_up(session, *, before: datetime) -> int:
    """Events older than ``before`` become counts without a delivery or a subscriber
    (``queries.roll_up_engagement``); the campaign's and each link's counts stay."""
    return queries.roll_up_engagement(session, before=before)


def hit(*, campaign_id: int, delivery_id: int, kind: EngagementKind, link_index: int | None, method: str,
        user_agent: str) -> Hit:
    return Hit(campaign_id, delivery_id, kind, link_index, method.upper(), user_agent or "", utcnow())
