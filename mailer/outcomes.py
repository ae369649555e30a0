"""What one attempt at a delivery came to, and what happens next: pure values.

The send loop (``mailer.sending``) asks ``decide`` what a classified SMTP reply
(``mailer.replies.classify``) means for a delivery, and carries the result as an
``Outcome`` until it is recorded, in the same transaction that marks the next window
(``mailer.queries.record_and_mark_window``, ``record_results``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from mailer.models import DeliveryStatus
from mailer.replies import Kind, Verdict


class RetryRules(Protocol):
    max_attempts: int
    retry_base_seconds: float


@dataclass(frozen=True, slots=True)
class Decision:
    status: DeliveryStatus  # sent, failed, bounced, or queued again for a retry
    next_attempt_at: datetime | None = None

    @property
    def retry(self) -> bool:
        return self.status == DeliveryStatus.queued


def retry_at(now: datetime, attempts: int, rules: RetryRules) -> datetime:
    """Exponential backoff: base, 2 × base, 4 × base ... after the 1st, 2nd, 3rd attempt."""
    return now + timedelta(seconds=rules.retry_base_seconds * (2 ** max(0, attempts - 1)))


def decide(verdict: Verdict, attempts: int, rules: RetryRules, now: datetime) -> Decision:
    """The fate of a delivery after its ``attempts``-th attempt got ``verdict``.

    Accepted: sent. Transient (4xx, no reply): again later, until ``max_attempts``, then
    failed. Permanent: bounced when the address itself is bad (the subscriber is then
    suppressed), failed otherwise (a policy block is the sender's problem, not theirs)."""
    if verdict.kind == Kind.sent:
        return Decision(DeliveryStatus.sent)
    if verdict.kind == Kind.transient:
        if attempts >= rules.max_attempts:
            return Decision(DeliveryStatus.failed)
        return Decision(DeliveryStatus.queued, retry_at(now, attempts, rules))
    return Decision(DeliveryStatus.bounced if verdict.suppress else DeliveryStatus.failed)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt's result for one delivery, as it will be recorded."""

    delivery_id: int
    status: DeliveryStatus
    reply: str
    at: datetime
    marked_at: datetime  # when this try was marked: the record only lands on that same mark
    code: int | None = None
    message_id: str = ""
    next_attempt_at: datetime | None = None
    # False when the relay could not be reached at all: the try gives its attempt back.
    counts_attempt: bool = True
    # A permanent "no such mailbox": the subscriber is marked bounced with the record.
    suppress_subscriber: int | None = None
