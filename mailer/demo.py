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

import typer

from mailer.config import PROJECT_ROOT, get_settings

EXAMPLES = PROJECT_ROOT / "examples"
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


def run_demo(*, timeout: float = 300.0) -> int:
    from mailer.cli import _engine, follow, format_report, queue_issue
    from mailer.db import transaction
    from mailer.dispatch import enqueue, sweep
    from mailer.migrate import upgrade
    from subscribers.csvio import import_csv

    settings = get_settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database)
    engine = _engine()
    with open(EXAMPLE_SUBSCRIBERS, encoding="utf-8", newline="") as fh:
        report = import_csv(engine, fh, list_name=DEMO_LIST, confirmed=True, origin="demo")
    typer.echo(f"subscribers: {report.imported} imported, {report.updated} already there "
               f"(list {DEMO_LIST!r}, from {EXAMPLE_SUBSCRIBERS.relative_to(PROJECT_ROOT)})")
    cid, status, _tasks = queue_issue(EXAMPLE_ISSUE, DEMO_LIST)
    where = settings.outbox_dir if not settings.smtp_url else "the SMTP relay"
    if status != "sending":
        with transaction(engine) as s:
            from mailer.campaigns import campaign_report

            typer.echo(format_report(campaign_report(s, cid)))
        typer.echo(f"campaign {cid} is already {status}: nothing was sent again. Messages: {where}")
        return 0
    # Tasks of an interrupted earlier run may be gone with the worker; hand them out again.
    sweep(enqueue=enqueue)
    log_path = settings.var_dir / "demo-worker.log"
    typer.echo(f"starting a Celery worker (log: {log_path})")
    proc = start_worker(log_path)
    try:
        final = follow(cid, timeout=timeout)
    finally:
        stop_worker(proc)
    typer.echo(format_report(final))
    if final.status != "sent":
        typer.echo(f"error: campaign {cid} did not finish ({final.status}); see {log_path}", err=True)
        return 1
    count = len(list(Path(settings.outbox_dir).glob("*.eml"))) if not settings.smtp_url else final.sent
    typer.echo(f"sent {final.sent}, failed {final.failed}, bounced {final.bounced}, skipped {final.skipped}. "
               f"Messages: {where} ({count} files)")
    return 0
