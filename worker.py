"""The Celery application and its tasks. Tasks are thin: they load ids, call a plain
function from ``mailer``, and turn a transient error into a retry (STYLE.md).

Run workers with ``newsletter worker`` (or ``celery -A worker worker``); add more on
more machines against the same database and broker to scale out.
"""

from __future__ import annotations

from mailer import dispatch, health
from mailer.celeryapp import PATIENT_PUBLISH, make_celery
from mailer.core.config import get_settings
from mailer.core.errors import ServiceUnavailable, TransientDeliveryError
from mailer.operations import schedules

app = make_celery(get_settings())


@app.task(name="newsletter.send_batch", bind=True, acks_late=True, max_retries=None)
def send_batch(self, campaign_id: int) -> None:
    """Send batches of one campaign for up to a minute, then hand over to the next task:
    at once when there is more to claim, or when a retry time or a lease comes up."""
    try:
        when = dispatch.run_send_task(campaign_id)
    except ServiceUnavailable as err:  # the database went away: it comes back soon
        raise self.retry(exc=err, countdown=5) from err
    except TransientDeliveryError as err:
        raise self.retry(exc=err, countdown=30) from err
    if when is None:  # the campaign may have finished: its webhook was written on the send path's connection
        dispatch.sweep_webhooks()
    dispatch.follow_up(
        campaign_id, when,
        now_task=lambda: send_batch.apply_async(args=[campaign_id], retry_policy=PATIENT_PUBLISH),
        later_task=lambda at: send_batch.apply_async(args=[campaign_id], eta=at, retry_policy=PATIENT_PUBLISH))


@app.task(name="newsletter.sweep")
def sweep() -> None:
    """Every few seconds (beat): hand out work whose task was lost or whose lease ran out."""
    dispatch.sweep(enqueue=send_batch.delay)
    health.note_beat(get_settings(), "sweep")


@app.task(name="newsletter.roll_up")
def roll_up() -> None:
    """Every hour (beat): clicks and opens older than NEWSLETTER_TRACKING_DAYS become counts."""
    dispatch.roll_up_engagement()


@app.task(name="newsletter.dispatch")
def dispatch_due() -> None:
    """Every minute (beat): start the campaigns whose time has come (pre-flight checked
    again), hold the ones that now fail it or were missed long ago; record empty slots."""
    schedules.dispatch_due()
    health.note_beat(get_settings(), "dispatch")


@app.task(name="newsletter.deliver_webhook", bind=True, acks_late=True, max_retries=None)
def deliver_webhook(self, delivery_id: int) -> None:
    """One attempt of an outbound webhook (on the webhooks queue); a failed one comes
    back after its backoff, until NEWSLETTER_WEBHOOK_MAX_ATTEMPTS."""
    try:
        attempt = dispatch.deliver_webhook(delivery_id)
    except ServiceUnavailable as err:
        raise self.retry(exc=err, countdown=5) from err
    if attempt is not None and attempt.retry_in is not None:
        raise self.retry(countdown=attempt.retry_in.total_seconds())


@app.task(name="newsletter.webhook_sweep")
def webhook_sweep() -> None:
    """Every few seconds (beat): queue webhook deliveries whose task was lost or never queued."""
    dispatch.sweep_webhooks()
