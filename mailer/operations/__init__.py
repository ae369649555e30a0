"""The editor's actions, each written once. The ``newsletter`` command (``mailer.cli``),
the admin API and the dashboard (``mailer.web``) only adapt them: they parse their
input, call the operation, commit, and show the result in their own way.

Every operation is a plain function with keyword-only arguments over an open
``Session``. It checks everything it can before its first write and raises the
project's errors (``mailer.core.errors``): ``InvalidInput`` for bad input,
``NotFound`` for an unknown thing, ``ConflictError`` for a state that forbids the
action, each with the one-line message every adapter shows as it is. It never commits;
a refused action therefore changes nothing.

What must happen after the commit (queueing send tasks on the broker: a worker must not
see a task before the campaign it names is committed) comes back in the result's
``queue``; ``commit`` does both, in that order.

  issues.py       save (publishing its local images), update, delete, preview and test-send an issue
  campaigns.py    schedule or start an issue, pause, resume, cancel, retry, reschedule; stats
  report.py       a campaign's report: outcomes, people's opens and clicks (machines apart),
                  per link, the first 72 hours, the list's last campaigns compared
  deliveries.py   who got it and who did not: a campaign's deliveries by status, searched, paged,
                  as CSV; a subscriber's messages and what happened to each
  schedules.py    a list's weekly slot and what goes out in the coming weeks
  subscribers.py  add, edit (tags, attributes), search, import, export, erase; signup and confirmation mail
  welcome.py      a list's welcome mail: its template, and queueing it once for whoever confirms
  segments.py     named segments of a list: save, list with sizes, show, remove
  inbound.py      what comes back, through every channel, handled once: bounces, complaints,
                  auto-replies, mailto unsubscribes; explain; the messages kept unprocessed
  overview.py     the dashboard's totals and growth chart
  streams.py      long CSV downloads as a byte stream with flat memory
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.orm import Session

from mailer import dispatch
from mailer.core.config import Settings
from mailer.core.errors import ServiceUnavailable


@dataclass(frozen=True)
class Queue:
    """Send tasks to queue for a campaign once the change to it is committed: one per
    claimable batch, capped by ``NEWSLETTER_PARALLEL_TASKS``."""

    campaign_id: int
    batches: int


class Queues(Protocol):
    queue: tuple[Queue, ...]


def commit(session: Session, *results: Queues, settings: Settings) -> None:
    """Commit the operation's writes, then queue the tasks its results ask for. A broker
    that does not answer is ``ServiceUnavailable`` saying so: the change itself is
    committed, and beat's sweep queues the campaign's work once the broker is back."""
    session.commit()
    for result in results:
        for q in result.queue:
            try:
                dispatch.enqueue_campaign(q.campaign_id, q.batches, settings)
            except ServiceUnavailable as err:
                raise ServiceUnavailable(f"campaign {q.campaign_id} is saved, but its send tasks could not be queued "
                                         f"(they are, by the periodic sweep, once the broker answers): {err}") from err
