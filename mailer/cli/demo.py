"""``newsletter demo``: the whole pipeline on the embedded default, no server needed.

Imports the example subscribers, renders and stores the example issue, starts its
campaign, runs a real Celery worker process on the filesystem broker that sends to the
outbox folder, shows progress, and prints a summary. A second run finds the campaign
already sent and sends nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from mailer import campaigns
from mailer.cli.campaign import send_issue
from mailer.cli.common import engine, follow, format_report, session, settings
from mailer.core.config import PROJECT_ROOT, SHIPPED
from mailer.core.errors import ConflictError
from mailer.dispatch import enqueue, sweep
from mailer.migrate import upgrade
from mailer.models import CampaignStatus
from mailer.operations.subscribers import import_csv

EXAMPLES = SHIPPED / "examples"
EXAMPLE_ISSUE = EXAMPLES / "china-ai-weekly-2022-06-14.md"
EXAMPLE_SUBSCRIBERS = EXAMPLES / "subscribers.csv"
DEMO_LIST = "china-ai-weekly"


def start_worker(log_path: Path) -> subprocess.Popen:
    log = open(log_path, "ab")
    cmd = [sys.executable, "-m", "celery", "-A", "worker", "worker", "--pool=solo", "--beat",
           "-s", str(log_path.with_suffix(".schedule")), "--without-gossip", "--without-mingle",
           "--without-heartbeat", "--loglevel=INFO", "-n", f"demo-{os.getpid()}@%h"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def stop_worker(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def demo(
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 300.0,
) -> None:
    """Send the example issue to the example subscribers through a real worker (no server needed).

    Imports examples/subscribers.csv, renders the example issue, starts a Celery worker on
    the embedded broker, sends to the outbox folder and prints a summary. Running it
    again sends nothing twice.
    """
    raise typer.Exit(run_demo(timeout=timeout))


def run_demo(*, timeout: float = 300.0) -> int:
    conf = settings()
    conf.var_dir.mkdir(parents=True, exist_ok=True)
    upgrade(conf.database)
    with open(EXAMPLE_SUBSCRIBERS, encoding="utf-8", newline="") as fh:
        imported = import_csv(engine(), fh, list_name=DEMO_LIST, confirmed=True, origin="demo")
    typer.echo(f"subscribers: {imported.imported} imported, {imported.updated} already there "
               f"(list {DEMO_LIST!r}, from {EXAMPLE_SUBSCRIBERS})")
    where = conf.outbox_dir if not conf.smtp_url else "the SMTP relay"
    try:
        cid = send_issue(EXAMPLE_ISSUE, DEMO_LIST).campaign_id
    except ConflictError:  # an earlier run started it: show where it is
        with session() as s:
            demo_list = campaigns.find_list(s, DEMO_LIST)
            cid = next(c.id for c in campaigns.list_campaigns(s) if c.list_id == demo_list.id)
            current = campaigns.campaign_report(s, cid)
        if current.status != CampaignStatus.sending:
            typer.echo(format_report(current))
            typer.echo(f"campaign {cid} is already {current.status}: nothing was sent again. Messages: {where}")
            return 0
    # Tasks of an interrupted earlier run may be gone with the worker; hand them out again.
    sweep(enqueue=enqueue)
    log_path = conf.var_dir / "demo-worker.log"
    typer.echo(f"starting a Celery worker (log: {log_path})")
    proc = start_worker(log_path)
    try:
        final = follow(cid, timeout=timeout)
    finally:
        stop_worker(proc)
    typer.echo(format_report(final))
    if final.status != CampaignStatus.sent:
        typer.echo(f"error: campaign {cid} did not finish ({final.status}); see {log_path}", err=True)
        return 1
    count = len(list(Path(conf.outbox_dir).glob("*.eml"))) if not conf.smtp_url else final.sent
    typer.echo(f"sent {final.sent}, failed {final.failed}, bounced {final.bounced}, skipped {final.skipped}. "
               f"Messages: {where} ({count} files)")
    return 0
