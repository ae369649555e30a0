"""The long-running processes: Celery workers (and beat), the web app, and one run of
the dispatcher by hand."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from typing import Annotated

import typer

from mailer.celeryapp import QUEUES
from mailer.cli.common import engine, log_as_a_service
from mailer.core.errors import InvalidInput


def worker(
    ctx: typer.Context,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, max=256, help="Worker processes.")] = 2,
    beat: Annotated[bool, typer.Option("--beat", help="Also run the periodic sweep here (one per deployment).")] = False,
    queues: Annotated[str, typer.Option(
        "--queues", help="What to run, comma separated: 'send' (campaigns, the sweep, the dispatcher) and "
                         "'webhooks' (outbound webhooks). Both (the default): two Celery workers side by side, "
                         "so an endpoint that hangs never holds a send slot.")] = "send,webhooks",
    webhook_threads: Annotated[int, typer.Option(
        min=1, max=256, help="Webhooks posted at once (threads of the webhooks worker).")] = 4,
) -> None:
    """Run the Celery workers (extra arguments go to 'celery worker')."""
    names = {q.strip() for q in queues.split(",") if q.strip()}
    if not names or names - set(QUEUES):
        raise InvalidInput(f"--queues takes {', '.join(QUEUES)} (comma separated), not {queues!r}")
    engine()
    celery = [sys.executable, "-m", "celery", "-A", "worker", "worker", "--loglevel=INFO"]
    send = celery + [f"--concurrency={concurrency}", f"--queues={QUEUES['send']}"]
    # Posting a webhook is waiting on a socket: threads, not processes. A node name of its
    # own, as two workers on one host must not share one.
    hooks = celery + ["--pool=threads", f"--concurrency={webhook_threads}", f"--queues={QUEUES['webhooks']}",
                      "--hostname=webhooks@%h"]
    if beat:
        (send if "send" in names else hooks).append("--beat")
    extra = list(ctx.args)
    if names == {"send"}:
        os.execv(sys.executable, send + extra)
    if names == {"webhooks"}:
        os.execv(sys.executable, hooks + extra)
    raise typer.Exit(_side_by_side([send + extra, hooks + extra]))


def _side_by_side(commands: list[list[str]]) -> int:
    """Run the workers together: a signal to this process goes to each (SIGTERM: each
    finishes its tasks and stops), and when one stops the others are stopped too. The
    children have sessions of their own, so a terminal's Ctrl-C reaches them once,
    through here, not twice (a second SIGINT is Celery's cold shutdown); each is told to
    stop if this process dies (Linux's parent-death signal)."""
    # preexec_fn is safe here: this process runs no other thread.
    procs = [subprocess.Popen(cmd, start_new_session=True, preexec_fn=_die_with_parent)  # noqa: PLW1509
             for cmd in commands]

    def forward(signum, _frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
        signal.signal(signum, forward)
    while all(p.poll() is None for p in procs):
        time.sleep(0.2)
    first = next(p for p in procs if p.poll() is not None)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait()
    return first.returncode if first.returncode >= 0 else 128 - first.returncode


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the signals forwarded above still stop them
        pass


def web(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    forwarded_allow_ips: Annotated[str, typer.Option(
        help="Proxies whose X-Forwarded-For is trusted (the client address signup and sign-in limits "
             "count by), comma separated.")] = "127.0.0.1",
) -> None:
    """Serve the web pages and the API."""
    import uvicorn

    engine()
    log_as_a_service()
    # log_config=None: uvicorn's loggers keep no handlers of their own and their lines
    # come out in the one format the command configured (mailer.core.logs).
    uvicorn.run("mailer.web.app:create_app", factory=True, host=host, port=port, proxy_headers=True,
                forwarded_allow_ips=forwarded_allow_ips, log_config=None)


def dispatch() -> None:
    """Start due campaigns now (beat does this every minute), each checked by pre-flight
    again; print what happened."""
    from mailer.operations.schedules import dispatch_due

    engine()
    report = dispatch_due()
    typer.echo(f"started {report.started or 'none'}; held {report.held or 'none'}; "
               f"empty slots {len(report.empty_slots)}")
