"""What every command group shares: the database, a session, and how a campaign's
progress is shown in a terminal."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from mailer import campaigns
from mailer.core import logs
from mailer.core.config import Settings, get_settings
from mailer.core.db import MAX_ID, check_connection, engine_for, transaction
from mailer.core.errors import InvalidInput
from mailer.models import CampaignStatus

# A row's id on the command line: a positive BIGINT (a larger one is a usage error).
CampaignId = Annotated[int, typer.Argument(min=1, max=MAX_ID, help="The campaign's id.")]
IssueId = Annotated[int, typer.Argument(min=1, max=MAX_ID, help="The issue's id.")]


def settings() -> Settings:
    return get_settings()


def log_as_a_service() -> None:
    """A long-running command (web, inbound serve and poll) logs its events at
    NEWSLETTER_LOG_LEVEL, like a worker: nobody reads its stdout line by line."""
    logs.configure_from(settings())


def engine() -> Engine:
    """The database engine, after checking it answers (one line naming the setting if not)."""
    found = engine_for(settings().database)
    check_connection(found)
    return found


@contextlib.contextmanager
def session() -> Iterator[Session]:
    """One unit of work for a command: committed when the command's block succeeds."""
    with transaction(engine()) as s:
        yield s


def is_issue_file(ref: str) -> bool:
    """A command's issue argument is a Markdown file when it looks like a path (a
    folder in it, a Markdown file name, or an existing file); otherwise it names an
    issue already saved (its id or slug)."""
    path = Path(ref)
    return "/" in ref or path.suffix.lower() in (".md", ".markdown", ".txt") or path.exists()


def report(campaign_id: int) -> campaigns.CampaignReport:
    with session() as s:
        return campaigns.campaign_report(s, campaign_id)


def latest_campaign_id() -> int:
    with session() as s:
        found = campaigns.list_campaigns(s)
        if not found:
            raise InvalidInput("there are no campaigns yet")
        return found[0].id


def format_report(r: campaigns.CampaignReport) -> str:
    eta = "—" if r.eta_seconds is None else f"{r.eta_seconds:.0f}s"
    return (f"campaign {r.id} ({r.issue} → {r.list}): {r.status}; {r.sent}/{r.total} sent, {r.failed} failed, "
            f"{r.bounced} bounced, {r.skipped} skipped, {r.queued} queued; {r.rate_per_minute:.0f}/min, ETA {eta}"
            + (f"; {r.repeated} sent twice (a try's outcome was lost)" if r.repeated else "")
            + (f"; relay unreachable since {r.relay_down_since}: {r.relay_error}" if r.relay_down_since else "")
            + (f"; paused: {r.pause_reason}" if r.status == CampaignStatus.paused and r.pause_reason else "")
            + (f"; held: {r.pause_reason}" if r.status == CampaignStatus.draft and r.pause_reason else ""))


def held_lines(r: campaigns.CampaignReport) -> list[str]:
    """The pre-flight checks that held a campaign at its time, one line each."""
    lines = []
    for c in (r.held_checks or {}).get("checks", []):
        if c["state"] != "pass":
            lines.append(f"{c['state']:4}  {c['name']}: {c['detail']}")
            lines += [f"      {more}" for more in c.get("lines", [])]
    return lines


def follow(campaign_id: int, *, timeout: float | None = None, interval: float = 0.5) -> campaigns.CampaignReport:
    """Show a live progress bar until the campaign is no longer sending (or scheduled)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    deadline = time.monotonic() + timeout if timeout else None
    current = report(campaign_id)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=False) as bar:
        task = bar.add_task(f"campaign {campaign_id}", total=max(current.total, 1))
        while True:
            current = report(campaign_id)
            done = current.sent + current.failed + current.bounced + current.skipped
            bar.update(task, completed=done, total=max(current.total, 1),
                       description=f"campaign {campaign_id} {current.status}")
            if current.status not in (CampaignStatus.sending, CampaignStatus.scheduled) or (
                    deadline and time.monotonic() > deadline):
                return current
            time.sleep(interval)
