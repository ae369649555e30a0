"""Celery configuration from the settings. Results are ignored: delivery state lives in
the application database, not in Celery (FACTS.md: a database result backend is the
slow part of any broker)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from mailer.core import logs
from mailer.core.config import Settings, get_settings

if TYPE_CHECKING:
    from celery import Celery

# Celery and kombu are imported where an app is made, not here: every command and the
# web app import this module (for the queue names, through the code that queues tasks),
# and importing them took ~75 ms of each ``newsletter`` command's start, most of which
# never queue anything.


QUEUE = "newsletter"  # sending, the sweep, the dispatcher: every task but the webhooks'
# Outbound webhooks have a queue of their own, so an endpoint that hangs never stands in
# front of a send task. A worker consumes both unless told otherwise (``newsletter worker
# --queues``); a deployment whose endpoints may be slow runs a worker for each.
HOOKS_QUEUE = "webhooks"
QUEUES = {"send": QUEUE, "webhooks": HOOKS_QUEUE}


def celery_config(settings: Settings) -> dict:
    from kombu import Exchange, Queue

    conf: dict = {
        "broker_url": settings.broker,
        "task_ignore_result": True,
        "result_backend": None,
        # A task is acknowledged after it ran, and a worker lost mid-task re-queues it
        # (Redis). Tasks are idempotent: the batch claim in the database decides who sends.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        # A worker that loses the broker (a Redis restart) goes on with the batch it is
        # sending: cancelling it mid-message would leave a delivery whose fate is unknown.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_default_queue": QUEUE,
        # A worker started without -Q consumes every queue named here.
        # Shaped as Celery creates a missing queue: an exchange of the same name.
        "task_queues": [Queue(name, Exchange(name), routing_key=name) for name in (QUEUE, HOOKS_QUEUE)],
        "task_routes": {"newsletter.deliver_webhook": {"queue": HOOKS_QUEUE}},
        "worker_hijack_root_logger": False,
        "beat_schedule": {
            "sweep": {"task": "newsletter.sweep", "schedule": settings.sweep_seconds},
            "dispatch": {"task": "newsletter.dispatch", "schedule": settings.dispatch_seconds},
            "roll_up": {"task": "newsletter.roll_up", "schedule": ROLL_UP_SECONDS},
            "webhook_sweep": {"task": "newsletter.webhook_sweep", "schedule": settings.sweep_seconds},
        },
        "timezone": "UTC",
    }
    if settings.broker.startswith("filesystem://"):
        folder = settings.broker_folder.resolve()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "processed").mkdir(exist_ok=True)
        (folder / "control").mkdir(exist_ok=True)
        conf["broker_transport_options"] = {
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
        }
    elif settings.broker.startswith(("redis://", "rediss://")):
        # Re-delivery of an unacknowledged task after this long; the database lease
        # recovers crashed batches much sooner, so this is only a backstop.
        conf["broker_transport_options"] = {"visibility_timeout": 3600}
    return conf


# How long a worker keeps trying to hand the next task to a broker that is away (a
# restart): about 20 s. A command or a web request gives up sooner (Celery's default,
# about a second) and says so.
PATIENT_PUBLISH = {"max_retries": 12, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2.0}


# Clicks and opens past NEWSLETTER_TRACKING_DAYS are rolled up once an hour.
ROLL_UP_SECONDS = 3600.0


def make_celery(settings: Settings) -> Celery:
    from celery import Celery

    _connect_signals()
    app = Celery("newsletter")
    app.conf.update(celery_config(settings))
    return app


def preload() -> None:
    """Import Celery and kombu now: for a long-running process that queues tasks (the web
    app), so that its first request that queues one does not wait for the import."""
    import kombu.exceptions  # noqa: F401
    from celery import Celery  # noqa: F401
    from kombu import Queue  # noqa: F401


@functools.cache
def _connect_signals() -> None:
    """Once per process, with the first app (``worker.py`` makes it when a worker or
    beat loads it, before either sets up logging). In a process that only sends tasks
    the receivers are never called."""
    from celery import signals

    signals.setup_logging.connect(_setup_logging, weak=False)
    signals.celeryd_init.connect(_worker_init, weak=False)


# A receiver of setup_logging means Celery configures no logging of its own (and, with
# worker_hijack_root_logger off, never touches the root logger): workers and beat log in
# the format the settings say, like the CLI and the web app. Celery's --loglevel is
# ignored; NEWSLETTER_LOG_LEVEL decides.
def _setup_logging(**_kwargs) -> None:
    logs.configure_from(get_settings())


def _worker_init(instance=None, **_kwargs) -> None:
    import celery.apps.worker as celery_worker

    # Before Celery's own start: its warning about running as root comes next, and would
    # otherwise be printed raw. The startup banner is printed, not logged: in JSON it
    # would be the only lines of the worker's output a log collector cannot parse.
    logs.configure_from(get_settings())
    if get_settings().log_format == "json":
        if instance is not None:
            instance.quiet = True
        # What Celery prints from its signal handlers ("worker: Warm shutdown") goes
        # through this one function, raw: in JSON, it is a JSON line too.
        celery_worker.safe_say = lambda msg, f=None: logs.write_json_line(msg, logger="celery.apps.worker", stream=f)
