"""Glue between the Celery tasks and the engine: builds the engine's plain config from
the settings, runs batches, and queues tasks. The only module of the send path that
reads settings."""

from __future__ import annotations

import functools
import os
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.exc import InterfaceError, OperationalError

from mailer import engagement, hookdelivery, outbox, queries
from mailer.celeryapp import make_celery
from mailer.core.clock import utcnow
from mailer.core.config import Settings, get_settings
from mailer.core.db import database_error, engine_for, transaction
from mailer.core.errors import ServiceUnavailable
from mailer.dkim import DkimSigner, load_private_key
from mailer.ratelimit import domain_slots_for, limiter_for
from mailer.schedules import DispatchReport, Recheck
from mailer.schedules import dispatch_due as _dispatch_due
from mailer.sending import EngineConfig, drain
from mailer.transports import transport_from_settings

# A task queued for the end of a lease comes a moment after it, when the lease is over.
RECOVERY_MARGIN = timedelta(seconds=1)


@functools.lru_cache(maxsize=1)
def _signers(domain: str | None, rsa: tuple[str | None, str | None], ed: tuple[str | None, str | None]):
    """RSA always (when DKIM is configured), and Ed25519 next to it when configured."""
    signers = []
    if domain and all(rsa):
        signers.append(DkimSigner(rsa[0], domain, load_private_key(rsa[1])))
        if all(ed):
            pem = load_private_key(ed[1], setting="NEWSLETTER_DKIM_ED25519_PRIVATE_KEY", ed25519_key=True)
            signers.append(DkimSigner(ed[0], domain, pem))
    return tuple(signers)


def engine_config(settings: Settings) -> EngineConfig:
    sender = settings.from_address
    return EngineConfig(
        worker=f"{socket.gethostname()}:{os.getpid()}",
        secret_key=settings.secret_key,
        base_url=settings.base_url,
        from_name=sender.display_name,
        from_addr=sender.addr_spec,
        sending_domain=settings.sending_domain,
        lease=timedelta(seconds=settings.lease_seconds),
        max_attempts=settings.max_attempts,
        retry_base_seconds=settings.retry_base_seconds,
        permanent_error_limit=settings.permanent_error_limit,
        window=settings.send_window,
        signers=_signers(settings.dkim_domain, (settings.dkim_selector, settings.dkim_private_key),
                         (settings.dkim_ed25519_selector, settings.dkim_ed25519_private_key)),
    )


@functools.lru_cache(maxsize=1)
def _limiter(rate: float, broker: str, folder: str):
    return limiter_for(rate, broker, Path(folder))


@functools.lru_cache(maxsize=1)
def _domain_slots(limit: int, broker: str, folder: str, ttl: float):
    return domain_slots_for(limit, broker, Path(folder), ttl=ttl)


def domain_slots(settings: Settings):
    """The per-domain cap from ``NEWSLETTER_DOMAIN_CONCURRENCY``. A slot outlives the
    longest SMTP transaction (connect, MAIL, RCPT, DATA, each up to the timeout) before
    it expires on its own."""
    return _domain_slots(settings.domain_concurrency, settings.broker,
                         str((settings.var_dir / "domain-slots").resolve()), 4 * settings.smtp_timeout + 30)


def run_send_task(campaign_id: int, settings: Settings | None = None) -> datetime | None:
    """Send batches of the campaign for a while. Returns when the campaign next has a
    batch to claim (now or before: at once; later: a retry time, or the end of a lease
    that may be a dead worker's), or None when nothing is left to send. A database that
    does not answer is ``ServiceUnavailable`` (the task tries again shortly)."""
    settings = settings or get_settings()
    engine = engine_for(settings.database)
    limiter = _limiter(settings.rate_limit, settings.broker, str((settings.var_dir / "limits").resolve()))
    cfg, slots = engine_config(settings), domain_slots(settings)

    def connection() -> None:
        # Each thread: its own relay connection and its own batches, claimed and sent
        # exactly as a task of its own would (at most one unknown outcome per connection).
        # It holds its batches under a name of its own: a lease guards against another
        # holder, and two threads of one process must not pass for the same one.
        transport = transport_from_settings(settings.smtp_url, settings.outbox_dir, settings.smtp_timeout)
        drain(engine, campaign_id, transport=transport, cfg=replace(cfg, worker=f"{cfg.worker}:{uuid.uuid4().hex[:8]}"),
              limiter=limiter, slots=slots)

    try:
        if settings.smtp_connections == 1:
            connection()
        else:
            with ThreadPoolExecutor(settings.smtp_connections, thread_name_prefix="smtp") as pool:
                for running in [pool.submit(connection) for _ in range(settings.smtp_connections)]:
                    running.result()  # the first error, once every connection has stopped
        with transaction(engine) as s:
            return queries.next_work_at(s, campaign_id=campaign_id, now=utcnow())
    except (OperationalError, InterfaceError) as err:
        raise ServiceUnavailable(database_error(err)) from err


def follow_up(campaign_id: int, when: datetime | None, *, now_task: Callable[[], object],
              later_task: Callable[[datetime], object], settings: Settings | None = None) -> None:
    """After a send task: queue the next one at once when there is work to claim now;
    when the next work comes later (a retry time, the lease of a worker that may have
    died), queue one task for then, unless one is already waiting. So a campaign keeps
    moving as long as any worker lives, with or without beat's sweep."""
    if when is None:
        return
    now = utcnow()
    if when <= now:
        now_task()
        return
    with transaction(engine_for((settings or get_settings()).database)) as s:
        if not queries.claim_recovery(s, campaign_id=campaign_id, at=when, now=now):
            return
    later_task(when + RECOVERY_MARGIN)


def sweep(*, enqueue: Callable[[int], object], settings: Settings | None = None) -> dict[int, int]:
    """Queue tasks for every sending campaign that has batches ready to claim: pending
    ones (new, or due for a retry) and claimed ones whose lease ran out (their worker
    died). This, not the broker, is what recovers from a lost task or a crash."""
    settings = settings or get_settings()
    with transaction(engine_for(settings.database)) as s:
        work = queries.claimable_work(s, now=utcnow(), idle_only=True)
    queued = {}
    for campaign_id, ready in work:
        queued[campaign_id] = min(ready, settings.parallel_tasks)
        for _ in range(queued[campaign_id]):
            enqueue(campaign_id)
    return queued


def hook_config(settings: Settings) -> hookdelivery.HookConfig:
    return hookdelivery.HookConfig(timeout=settings.webhook_timeout, max_attempts=settings.webhook_max_attempts,
                                   retry_base=settings.webhook_retry_seconds)


def deliver_webhook(delivery_id: int, settings: Settings | None = None) -> hookdelivery.Attempt | None:
    """One attempt of one webhook delivery (``mailer.hookdelivery.deliver``); a database
    that does not answer is ``ServiceUnavailable``."""
    settings = settings or get_settings()
    try:
        return hookdelivery.deliver(engine_for(settings.database), delivery_id, cfg=hook_config(settings))
    except (OperationalError, InterfaceError) as err:
        raise ServiceUnavailable(database_error(err)) from err


def sweep_webhooks(settings: Settings | None = None) -> list[int]:
    """Queue the webhook deliveries that are due and whose task was lost or never queued."""
    settings = settings or get_settings()
    return hookdelivery.sweep(engine_for(settings.database), enqueue=outbox.enqueue)


def roll_up_engagement(settings: Settings | None = None, *, now: datetime | None = None) -> int:
    """Beat's hourly roll-up of clicks and opens past the retention window
    (``engagement.roll_up``); returns how many events became counts."""
    settings = settings or get_settings()
    cutoff = (now or utcnow()) - timedelta(days=settings.tracking_days)
    with transaction(engine_for(settings.database)) as s:
        return engagement.roll_up(s, before=cutoff)


@functools.lru_cache(maxsize=4)
def _producer(broker: str, var_dir: str):
    """A Celery app used only to send tasks by name, so callers (CLI, web) need not
    import the worker module."""
    return make_celery(get_settings())


def enqueue(campaign_id: int, settings: Settings | None = None) -> None:
    """Put one send task of the campaign on the broker; ``ServiceUnavailable`` (one line
    naming the setting) when the broker does not take it, after Celery's own retries."""
    from kombu.exceptions import KombuError  # with the producer (mailer.celeryapp: not at import)

    settings = settings or get_settings()
    try:
        _producer(settings.broker, str(settings.var_dir.resolve())).send_task("newsletter.send_batch",
                                                                              args=[campaign_id])
    except (KombuError, OSError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ServiceUnavailable(f"the broker does not answer (NEWSLETTER_BROKER_URL): {reason}") from err


def enqueue_campaign(campaign_id: int, batches: int, settings: Settings | None = None) -> int:
    """Queue the first tasks of a campaign that just started, resumed or is retrying:
    one per claimable batch, at most ``NEWSLETTER_PARALLEL_TASKS``, at least one."""
    settings = settings or get_settings()
    n = max(1, min(batches, settings.parallel_tasks))
    for _ in range(n):
        enqueue(campaign_id, settings)
    return n


def dispatch_due(settings: Settings | None = None, *, now=None, preflight: Recheck | None = None) -> DispatchReport:
    """Run the scheduler once: start due campaigns (each once, however many run this),
    hold long-missed ones for the editor, and the ones ``preflight`` now fails
    (``mailer.operations.schedules.dispatch_due`` passes it), record empty weekly slots."""
    settings = settings or get_settings()
    return _dispatch_due(
        engine_for(settings.database), now=now or utcnow(),
        missed_limit=timedelta(hours=settings.missed_limit_hours), batch_size=settings.batch_size,
        enqueue=lambda cid, batches: enqueue_campaign(cid, batches, settings), preflight=preflight,
    )
