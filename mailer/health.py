"""Is this deployment able to work right now? The services every process depends on —
the database, the broker and, when one is configured, the SMTP relay — asked with short
timeouts, all at once, so an answer (``/readyz``, ``newsletter status``) comes within
seconds even when a host is unreachable rather than refusing connections.

Each check uses a connection of its own, never a pooled one: a pool could hand out a
connection that looked fine before the server went away, and a check must not wait
behind the sending engine's connections."""

from __future__ import annotations

import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy.engine import make_url

from mailer.celeryapp import QUEUE, make_celery
from mailer.core.config import Settings
from mailer.transports.smtp import SmtpTransport


@dataclass(frozen=True)
class Check:
    service: str  # "database", "broker", "relay"
    ok: bool
    detail: str  # "ok", or one line saying what is wrong


@dataclass(frozen=True)
class Readiness:
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def down(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    def summary(self) -> str:
        """One line: "every service answers", or "not ready: broker: ...; relay: ..."."""
        if self.ok:
            return "every service answers"
        return "not ready: " + "; ".join(f"{c.service}: {c.detail}" for c in self.down)

    def as_dict(self) -> dict[str, str]:
        return {c.service: c.detail for c in self.checks}


def _line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300] or type(err).__name__


def check_database(url: str, timeout: float) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        # mode=rw: a missing file is "down", never a new empty database made by the check.
        path = parsed.database or ""
        if not path or path == ":memory:":
            return
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=timeout)
        try:
            conn.execute("SELECT 1").fetchone()
        finally:
            conn.close()
        return
    import psycopg

    # connect_timeout covers an unreachable host; statement_timeout a server that
    # accepts connections but cannot run a query (in recovery, out of disk).
    dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, connect_timeout=max(1, round(timeout)),
                         options=f"-c statement_timeout={int(timeout * 1000)}") as conn:
        conn.execute("SELECT 1").fetchone()


def check_broker(url: str, folder: os.PathLike, timeout: float) -> None:
    if url.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
    elif url.startswith("filesystem://"):
        # Made the same way the Celery app makes it (mailer.celeryapp) when first configured.
        os.makedirs(folder, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise OSError(f"the broker folder {os.fspath(folder)} is not writable")
    # memory:// lives in the process: always there.


def check_relay(url: str, timeout: float) -> None:
    """Connect, EHLO, STARTTLS and AUTH as the workers do; send nothing."""
    transport = SmtpTransport.from_url(url, timeout=timeout)
    transport.open()
    transport.close()


def _probe(service: str, fn, *args) -> Check:
    try:
        fn(*args)
    except Exception as err:  # noqa: BLE001 - whatever the failure, the service is down
        return Check(service, False, _line(err))
    return Check(service, True, "ok")


def readiness(settings: Settings, *, timeout: float | None = None) -> Readiness:
    """Ask every service at once; one that has not answered within ``timeout`` seconds
    (``NEWSLETTER_HEALTH_TIMEOUT``) is down."""
    timeout = settings.health_timeout if timeout is None else timeout
    probes = {"database": (check_database, settings.database, timeout),
              "broker": (check_broker, settings.broker, settings.broker_folder, timeout)}
    if settings.smtp_url:
        probes["relay"] = (check_relay, settings.smtp_url, timeout)
    pool = ThreadPoolExecutor(max_workers=len(probes), thread_name_prefix="readiness")
    futures = {service: pool.submit(_probe, service, *probe) for service, probe in probes.items()}
    # A little over the timeout: each probe's own timeout fires first; this catches one
    # stuck where no timeout reaches (a DNS lookup, a TLS handshake's read).
    wait(futures.values(), timeout=timeout + 1)
    pool.shutdown(wait=False, cancel_futures=True)
    checks = tuple(f.result() if f.done() else Check(service, False, f"no answer within {timeout:g} s")
                   for service, f in futures.items())
    return Readiness(checks)


def broker_queue_length(settings: Settings, *, timeout: float | None = None) -> int:
    """Tasks waiting on the broker's queue: the Redis list's length, or the message files
    in the broker folder. ``OSError`` or a Redis error when the broker does not answer."""
    timeout = settings.health_timeout if timeout is None else timeout
    if settings.broker.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(settings.broker, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return int(client.llen(QUEUE))
        finally:
            client.close()
    if settings.broker.startswith("filesystem://"):
        folder = settings.broker_folder
        if not folder.is_dir():
            return 0
        return sum(1 for entry in os.scandir(folder) if entry.is_file() and entry.name.endswith(f".{QUEUE}.msg"))
    return 0


# --- what `newsletter status` adds: the workers and beat ---------------------------------

BEAT_TASKS = ("sweep", "dispatch")
_BEAT_KEY = "newsletter:beat:{}"


def note_beat(settings: Settings, task: str) -> None:
    """Beat ran ``task`` now: kept on the broker (a Redis key, or a file in the broker
    folder), which every process of the deployment shares. Never fails the task."""
    stamp = str(time.time())
    try:
        if settings.broker.startswith(("redis://", "rediss://")):
            import redis

            client = redis.Redis.from_url(settings.broker, socket_connect_timeout=2, socket_timeout=2)
            try:
                client.set(_BEAT_KEY.format(task), stamp)
            finally:
                client.close()
        elif settings.broker.startswith("filesystem://"):
            folder = settings.broker_folder / "beat"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / task).write_text(stamp)
    except Exception:  # noqa: BLE001 - a note for operators must not stop the sweep
        return


def beat_last_runs(settings: Settings, *, timeout: float | None = None) -> dict[str, datetime | None]:
    """When beat last ran each periodic task (None: never, as far as the broker knows)."""
    timeout = settings.health_timeout if timeout is None else timeout
    stamps: dict[str, str | None] = dict.fromkeys(BEAT_TASKS)
    if settings.broker.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(settings.broker, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            for task in BEAT_TASKS:
                value = client.get(_BEAT_KEY.format(task))
                stamps[task] = value.decode() if value else None
        finally:
            client.close()
    elif settings.broker.startswith("filesystem://"):
        for task in BEAT_TASKS:
            path = settings.broker_folder / "beat" / task
            stamps[task] = path.read_text() if path.is_file() else None
    return {task: datetime.fromtimestamp(float(v), timezone.utc) if v else None for task, v in stamps.items()}


def workers_seen(settings: Settings, *, timeout: float | None = None) -> list[str]:
    """The Celery workers that answer a ping (Celery's remote control) within ``timeout``."""
    timeout = settings.health_timeout if timeout is None else timeout
    app = make_celery(settings)
    try:
        replies = app.control.inspect(timeout=timeout).ping() or {}
    finally:
        app.close()
    return sorted(replies)
