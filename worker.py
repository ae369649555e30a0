"""The Celery application and its tasks. Tasks are thin: they load ids, call a plain
function from ``mailer``, and turn a transient error into a retry (STYLE.md).

Run workers with ``newsletter worker`` (or ``celery -A worker worker``); add more on
more machines against the same database and broker to scale out.
"""

from __future__ import annotations

from mailer import dispatch
from mailer.celeryapp import make_celery
from mailer.core.config import get_settings
from mailer.core.errors import TransientDeliveryError

app = make_celery(get_settings())


@app.task(name="newsletter.send_batch", bind=True, acks_late=True, max_retries=None)
def send_batch(self, campaign_id: int) -> None:
    """Send batches of one campaign for up to a minute, then hand over to a new task."""
    try:
        more = dispatch.run_send_task(campaign_id)
    except TransientDeliveryError as err:
        raise self.retry(exc=err, countdown=30) from err
    if more:
        send_batch.delay(campaign_id)


@app.task(name="newsletter.sweep")
def sweep() -> None:
    """Every few seconds (beat): hand out work whose task was lost or whose lease ran out."""
    dispatch.sweep(enqueue=send_batch.delay)


@app.task(name="newsletter.dispatch")
def dispatch_due() -> None:
    """Every minute (beat): start the campaigns whose time has come; record empty slots."""
    dispatch.dispatch_due()
