"""What a classified reply means for a delivery (``mailer.outcomes.decide``): pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest

from mailer.models import DeliveryStatus as D
from mailer.outcomes import decide, retry_at
from mailer.replies import classify

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


@dataclass
class Rules:
    max_attempts: int = 3
    retry_base_seconds: float = 30.0


@pytest.mark.parametrize("code, reply, attempts, status, retry_in", [
    (250, "2.0.0 ok", 1, D.sent, None),
    (451, "4.3.0 try again later", 1, D.queued, 30),
    (451, "4.3.0 try again later", 2, D.queued, 60),
    (451, "4.3.0 try again later", 3, D.failed, None),  # the last attempt
    (None, "connection lost after the message was sent", 1, D.queued, 30),
    (550, "5.1.1 No such user", 1, D.bounced, None),  # the address is bad: suppress it
    (550, "5.7.1 Message rejected as spam", 1, D.failed, None),  # the sender's problem, not the address's
    (552, "mailbox full", 1, D.queued, 30),  # RFC 5321 §4.5.3.1.10: a bare 552 is temporary
])
def test_decide(code, reply, attempts, status, retry_in):
    decision = decide(classify(code, reply), attempts, Rules(), NOW)
    assert decision.status == status
    assert decision.next_attempt_at == (NOW + timedelta(seconds=retry_in) if retry_in else None)
    assert decision.retry == (status == D.queued)


def test_retry_backs_off_exponentially():
    assert [retry_at(NOW, n, Rules(retry_base_seconds=10)) - NOW for n in (1, 2, 3, 4)] == [
        timedelta(seconds=s) for s in (10, 20, 40, 80)]
