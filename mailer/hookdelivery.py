"""One attempt of one outbound webhook delivery: claim the row, POST the signed payload
with a short timeout, record what the endpoint answered, and say when to try again.
And the sweep that hands out rows whose task was lost. The Celery tasks
(``worker.deliver_webhook``, ``worker.webhook_sweep``) only call these.

An endpoint is never waited on by anything else: these run on the webhooks queue
(``mailer.celeryapp.HOOKS_QUEUE``), each POST has ``NEWSLETTER_WEBHOOK_TIMEOUT``
seconds, and a failed attempt is retried later by a new task, not by sleeping here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from mailer import hooks, queries
from mailer.core.clock import utcnow
from mailer.core.db import transaction
from mailer.models import WebhookStatus

USER_AGENT = "newsletter-webhooks/1"


@dataclass(frozen=True)
class HookConfig:
    timeout: float = 5.0
    max_attempts: int = 8
    retry_base: float = 30.0
    retry_cap: float = 3600.0

    @property
    def lease(self) -> timedelta:
        # Longer than one POST can take, so a live worker never loses its row; short
        # enough that a dead one's row goes out again soon.
        return timedelta(seconds=self.timeout * 3 + 10)


@dataclass(frozen=True)
class Attempt:
    delivery_id: int
    attempt: int
    status: WebhookStatus
    code: int | None
    error: str
    retry_in: timedelta | None  # when the next attempt is due (status pending), else None


def post(url: str, *, headers: dict[str, str], body: bytes, timeout: float,
         client: httpx.Client | None = None) -> tuple[int | None, str]:
    """POST once: (status code, error text) - the code None when there was no answer.
    Redirects are not followed (a signed request goes where it was registered, only)."""
    # httpx (and the pygments its CLI pulls in, ~0.15 s) is imported by the worker that
    # posts, not by every command that merely can queue a webhook.
    import httpx

    own = client is None
    client = client or httpx.Client(timeout=timeout, follow_redirects=False,
                                    headers={"user-agent": USER_AGENT})
    try:
        with client.stream("POST", url, content=body, headers=headers) as response:
            head = b""
            if not hooks.succeeded(response.status_code):
                for chunk in response.iter_bytes():  # a few hundred bytes of the answer, for the log
                    head += chunk
                    if len(head) >= 300:
                        break
            return response.status_code, " ".join(head[:300].decode("utf-8", "replace").split())
    except httpx.TimeoutException:
        return None, f"no answer within {timeout:g} s"
    except httpx.HTTPError as err:
        return None, " ".join(f"{type(err).__name__}: {err}".split())[:300]
    finally:
        if own:
            client.close()


def deliver(engine: Engine, delivery_id: int, *, cfg: HookConfig, clock: Callable[[], datetime] = utcnow,
            client: httpx.Client | None = None) -> Attempt | None:
    """One attempt at delivering the row, or None when there is nothing to do (already
    delivered or failed, not due, or another worker holds it)."""
    now = clock()
    with transaction(engine) as s:
        claim = queries.claim_webhook(s, delivery_id=delivery_id, now=now, lease_until=now + cfg.lease)
    if claim is None:
        return None
    retry_in = None
    if not claim.enabled:
        status, code, error = WebhookStatus.skipped, None, "the endpoint was disabled before this went out"
    else:
        body = claim.body.encode()
        sent_headers = hooks.headers(claim.secrets, message_id=claim.message_id, timestamp=int(time.time()), body=body)
        code, error = post(claim.url, headers=sent_headers, body=body, timeout=cfg.timeout, client=client)
        if code is not None and hooks.succeeded(code):
            status, error = WebhookStatus.delivered, ""
        elif claim.attempt >= cfg.max_attempts:
            status = WebhookStatus.failed
        else:
            status = WebhookStatus.pending
            retry_in = hooks.retry_delay(claim.attempt, base=cfg.retry_base, cap=cfg.retry_cap)
        if code is not None and not error and status != WebhookStatus.delivered:
            error = f"HTTP {code}"
    done = clock()
    with transaction(engine) as s:
        queries.record_webhook_attempt(s, claim, status=status, code=code, error=error,
                                       next_attempt_at=done + retry_in if retry_in else None, now=done)
    return Attempt(delivery_id, claim.attempt, status, code, error, retry_in)


def sweep(engine: Engine, *, enqueue: Callable[[list[int]], object], now: datetime | None = None) -> list[int]:
    """Queue a task for every pending delivery that is due and held by nobody."""
    with transaction(engine) as s:
        due = queries.due_webhooks(s, now=now or utcnow())
    if due:
        enqueue(due)
    return due
