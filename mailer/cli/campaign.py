"""``newsletter send`` and ``newsletter campaign``: give an issue to a list, then follow,
pause, resume, cancel, retry or move its campaign."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from mailer.cli.common import (
    CampaignId,
    follow,
    format_report,
    is_issue_file,
    latest_campaign_id,
    report,
    session,
    settings,
)
from mailer.core.clock import utcnow
from mailer.core.db import MAX_ID
from mailer.core.errors import InvalidInput
from mailer.issues import read_issue_file
from mailer.models import CampaignStatus
from mailer.operations import campaigns as ops
from mailer.operations import commit
from mailer.operations.issues import save_issue

app = typer.Typer(help="Campaigns: progress, pause, resume, cancel, retry, reschedule.", no_args_is_help=True)


def send(
    ref: Annotated[str, typer.Argument(help="The issue file (Markdown with front matter), or the id or slug of a "
                                            "saved issue.")],
    list_name: Annotated[str, typer.Option("--list", help="Name of the list to send to.")],
    at: Annotated[Optional[str], typer.Option("--at", help="Send at this time (ISO 8601) instead of now.")] = None,
    tz: Annotated[Optional[str], typer.Option("--tz", help="Time zone for --at without an offset, e.g. Asia/Shanghai.")] = None,
    next_slot: Annotated[bool, typer.Option("--next-slot", help="Queue to the list's next free weekly slot.")] = False,
    segment: Annotated[Optional[str], typer.Option(
        "--segment", help='Only the part of the list this segment holds, e.g. \'tag:founding AND country = "CN"\' '
                          "(see `newsletter subscribers count`).")] = None,
) -> None:
    """Send an issue to a list (or a segment of it) now, or schedule it (--at,
    --next-slot); a file is saved as an issue first. Workers do the sending. An issue
    already sending or sent to the list is refused."""
    done = send_issue(ref, list_name, at=at, tz=tz, next_slot=next_slot, segment=segment)
    if done.status == CampaignStatus.scheduled:
        typer.echo(f"campaign {done.campaign_id} scheduled for {done.scheduled_at.isoformat()}")
    else:
        typer.echo(f"campaign {done.campaign_id} is sending ({done.started} deliveries queued); follow it with: "
                   f"newsletter campaign status {done.campaign_id}")


def send_issue(ref: str | Path, list_name: str, *, at: str | None = None, tz: str | None = None,
               next_slot: bool = False, segment: str | None = None) -> ops.Scheduled:
    """``newsletter send``: a file is saved as an issue (found by its slug when it was
    saved before); the issue is given to the list; send tasks queued after the commit."""
    if at and next_slot:
        raise InvalidInput("give --at or --next-slot, not both")
    conf = settings()
    now = utcnow()
    when = ops.parse_when(at=at, tz=tz, next_slot=next_slot, now_flag=not (at or next_slot), now=now)
    ref = str(ref)
    source = read_issue_file(ref) if is_issue_file(ref) else None
    with session() as s:
        if source is not None:
            ref = save_issue(s, source=source, settings=conf, filename=Path(ref).name, folder=Path(ref).parent).id
        done = ops.schedule_issue(s, issue_ref=ref, list_name=list_name, when=when, settings=conf, now=now,
                                  segment=segment)
        commit(s, done, settings=conf)
    return done


@app.command("status")
def campaign_status(
    campaign_id: Annotated[Optional[int], typer.Argument(min=1, max=MAX_ID,
                                                         help="Campaign id (default: the latest).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Live progress bar until it finishes.")] = False,
) -> None:
    """Sent / failed / queued, rate and ETA of a campaign."""
    cid = campaign_id or latest_campaign_id()
    if as_json:
        typer.echo(json.dumps(report(cid).as_dict()))
        return
    current = report(cid)
    if watch or (sys.stdout.isatty() and current.status == CampaignStatus.sending):
        current = follow(cid)
    typer.echo(format_report(current))


@app.command("list")
def campaign_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False) -> None:
    """All campaigns, newest first."""
    from mailer import campaigns

    with session() as s:
        reports = [campaigns.campaign_report(s, c.id) for c in campaigns.list_campaigns(s)]
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in reports]))
        return
    for r in reports:
        typer.echo(format_report(r))


def _act(action: str, campaign_id: int) -> ops.Changed:
    conf = settings()
    with session() as s:
        done = ops.ACTIONS[action](s, campaign_id=campaign_id)
        commit(s, done, settings=conf)
    return done


def _state_command(action: str):
    def command(campaign_id: CampaignId) -> None:
        typer.echo(f"campaign {campaign_id}: {_act(action, campaign_id).status}")

    command.__name__ = f"campaign_{action}"
    return command


for _action, _help in (("pause", "Stop sending at the next message; resume later."),
                       ("resume", "Send to exactly the deliveries not yet sent."),
                       ("cancel", "Stop for good; unsent deliveries are recorded as skipped.")):
    app.command(_action, help=_help)(_state_command(_action))


@app.command("retry")
def campaign_retry(campaign_id: CampaignId) -> None:
    """Queue the failed deliveries of a campaign again."""
    typer.echo(f"campaign {campaign_id}: {_act('retry', campaign_id).requeued} failed deliveries queued again")


@app.command("reschedule")
def campaign_reschedule(
    campaign_id: CampaignId,
    at: Annotated[str, typer.Option("--at", help="New time (ISO 8601).")],
    tz: Annotated[Optional[str], typer.Option("--tz", help="Time zone for --at without an offset.")] = None,
) -> None:
    """Move a draft or scheduled campaign to another time."""
    with session() as s:
        ops.reschedule(s, campaign_id=campaign_id, at=at, tz=tz)
        due = ops.stats(s, campaign_id)["scheduled_at"]
    typer.echo(f"campaign {campaign_id} scheduled for {due}")
