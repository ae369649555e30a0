"""The long-running processes: Celery workers (and beat), the web app, and one run of
the dispatcher by hand."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from mailer.cli.common import engine, log_as_a_service


def worker(
    ctx: typer.Context,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, max=256, help="Worker processes.")] = 2,
    beat: Annotated[bool, typer.Option("--beat", help="Also run the periodic sweep here (one per deployment).")] = False,
) -> None:
    """Run a Celery worker (extra arguments go to 'celery worker')."""
    engine()
    cmd = [sys.executable, "-m", "celery", "-A", "worker", "worker", f"--concurrency={concurrency}", "--loglevel=INFO"]
    if beat:
        cmd.append("--beat")
    os.execv(sys.executable, cmd + list(ctx.args))


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
