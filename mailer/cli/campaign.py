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
    held_lines,
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
from mailer.models import CampaignStatus, DeliveryStatus
from mailer.operations import campaigns as ops
from mailer.operations import commit
from mailer.operations import deliveries as delivery_ops
from mailer.operations import report as report_ops
from mailer.operations.issues import save_issue
from mailer.operations.preflight import Gate, Preflight, PreflightFailed

app = typer.Typer(help="Campaigns: progress, the report, who got it and who did not, pause, resume, cancel, retry, reschedule.",
                  no_args_is_help=True)


def send(
    ref: Annotated[str, typer.Argument(help="The issue file (Markdown with front matter), or the id or slug of a "
                                            "saved issue.")],
    list_name: Annotated[str, typer.Option("--list", help="Name of the list to send to.")],
    at: Annotated[Optional[str], typer.Option("--at", help="Send at this time (ISO 8601) instead of now.")] = None,
    tz: Annotated[Optional[str], typer.Option("--tz", help="Time zone for --at without an offset, e.g. Asia/Shanghai.")] = None,
    next_slot: Annotated[bool, typer.Option("--next-slot", help="Queue to the list's next free weekly slot.")] = False,
    override_preflight: Annotated[bool, typer.Option(
        "--override-preflight", help="Start (or schedule) even though a pre-flight check failed.")] = False,
    segment: Annotated[Optional[str], typer.Option(
        "--segment", help='Only the part of the list this segment holds: an expression, e.g. '
                          '\'tag:founding AND country = "CN"\', or the name of a saved one (`newsletter segments`); '
                          "see `newsletter subscribers count`.")] = None,
) -> None:
    """Send an issue to a list (or a segment of it) now, or schedule it (--at,
    --next-slot); a file is saved as an issue first. Pre-flight checks the message first
    (size, links, one-click unsubscribe, DKIM, SpamAssassin, complaint rate): a failed
    check refuses it, unless --override-preflight. Workers do the sending. An issue
    already sending or sent to the list is refused."""
    done = send_issue(ref, list_name, at=at, tz=tz, next_slot=next_slot, override_preflight=override_preflight,
                      segment=segment)
    for line in preflight_lines(done.preflight, only_problems=True):
        typer.echo(line, err=True)
    if done.status == CampaignStatus.scheduled:
        typer.echo(f"campaign {done.campaign_id} scheduled for {done.scheduled_at.isoformat()}")
    else:
        typer.echo(f"campaign {done.campaign_id} is sending ({done.started} deliveries queued); follow it with: "
                   f"newsletter campaign status {done.campaign_id}")


def send_issue(ref: str | Path, list_name: str, *, at: str | None = None, tz: str | None = None,
               next_slot: bool = False, override_preflight: bool = False,
               segment: str | None = None) -> ops.Scheduled:
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
                                  gate=Gate(override_preflight, "start anyway with --override-preflight"),
                                  segment=segment)
        commit(s, done, settings=conf)
    return done


def preflight_lines(found: Preflight | None, *, only_problems: bool = False) -> list[str]:
    """One line per check (``only_problems``: the warnings and failures), then the
    rules or links each lists."""
    lines = []
    for c in found.checks if found else ():
        if only_problems and c.state == "pass":
            continue
        lines.append(f"{c.state:4}  {c.name}: {c.detail}")
        lines += [f"      {more}" for more in c.lines]
    if found is not None and found.overridden:
        lines.append("pre-flight failed and was overridden (--override-preflight)")
    return lines


@app.command("preflight")
def campaign_preflight(
    ref: Annotated[str, typer.Argument(help="The id or slug of a saved issue.")],
    list_name: Annotated[str, typer.Option("--list", help="Name of the list it would go to.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Run the checks a start runs, changing nothing; exit 2 when one fails."""
    with session() as s:
        found = ops.preflight_issue(s, issue_ref=ref, list_name=list_name, settings=settings())
        s.rollback()
    if as_json:
        typer.echo(json.dumps(found.as_dict()))
    else:
        for line in preflight_lines(found):
            typer.echo(line)
    if not found.passed:
        raise PreflightFailed(found, "send with --override-preflight to start anyway")


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
    for line in held_lines(current):
        typer.echo(line)


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


for _action, _help in (("pause", "Stop sending within a few messages (at the next send window); resume later."),
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


@app.command("deliveries")
def campaign_deliveries(
    campaign_id: CampaignId,
    status: Annotated[str, typer.Option("--status", help="attention (failed, bounced or skipped: the default), "
                                                         "failed, bounced, skipped, queued (still to go), "
                                                         "repeated (sent twice) or sent.")] = "attention",
    search: Annotated[str, typer.Option("--search", help="Only addresses or relay replies containing this.")] = "",
    as_csv: Annotated[bool, typer.Option("--csv", help="Every matching delivery as CSV on stdout.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One page as JSON for scripts (next_after: the next "
                                                         "page's --after).")] = False,
    after: Annotated[int, typer.Option("--after", min=0, max=MAX_ID,
                                       help="Start after this delivery id (the previous page's last).")] = 0,
    limit: Annotated[int, typer.Option("--limit", min=1, max=delivery_ops.MAX_PAGE,
                                       help="Deliveries per page.")] = 50,
) -> None:
    """Who got it and who did not: a campaign's deliveries by status, with the address,
    attempts, the relay's last reply and when; one page, or all of them with --csv."""
    if as_csv and as_json:
        raise InvalidInput("give --csv or --json, not both")
    with session() as s:
        if as_csv:
            delivery_ops.export_csv(s, sys.stdout, campaign_id=campaign_id, status=status, q=search)
            return
        page = delivery_ops.list_deliveries(s, campaign_id=campaign_id, status=status, q=search, after=after,
                                            limit=limit)
    if as_json:
        typer.echo(json.dumps(page))
        return
    for d in page["items"]:
        # The relay's reply starts with its code; a delivery never tried has neither.
        reply = " ".join(d["last_reply"].split()) or str(d["last_code"] or "")
        typer.echo(f"{d['email']}\t{d['status']}\t{d['attempts']} attempts"
                   + (f", sent {d['repeats'] + 1} times" if d["repeats"] else "")
                   + f"\t{(d['at'] or '')[:19]}\t{reply}".rstrip())
    shown = len(page["items"])
    more = f"; next page: --after {page['next_after']}" if page["next_after"] else ""
    retry = f"; retry the failed ones: newsletter campaign retry {campaign_id}" if page["retryable"] else ""
    typer.echo(f"{shown} {page['status']} deliveries of campaign {campaign_id}{more}{retry}", err=True)


def _pct(rate: float) -> str:
    return f"{rate * 100:.1f}%"


def report_lines(r: dict) -> list[str]:
    """The report as a terminal shows it: a few aligned tables, people's numbers first."""
    lines = [f"campaign {r['campaign_id']}: {r['issue']} ({r['subject']}) to {r['list']}, {r['status']}"
             + (f", started {r['started_at'][:16]}" if r["started_at"] else "")]
    D = DeliveryStatus
    rows = [("delivered", r["delivered"], ""),
            ("bounced hard", r[D.bounced]["hard"], _pct(r["rates"]["bounce_rate"])),
            ("bounced soft", r[D.bounced]["soft"], ""),
            (D.failed, r[D.failed], ""), (D.skipped, r[D.skipped], ""), ("still queued", r[D.queued], ""),
            ("complaints", r["complaints"], _pct(r["rates"]["complaint_rate"])),
            ("unsubscribes", r["unsubscribes"], _pct(r["rates"]["unsubscribe_rate"])),
            ("opened (people)", r["opens"]["people"], _pct(r["opens"]["rate"])),
            ("opens (people, all)", r["opens"]["total"], ""),
            ("clicked (people)", r["clicks"]["people"], _pct(r["clicks"]["rate"])),
            ("clicks (people, all)", r["clicks"]["total"], ""),
            ("machine opens", r["machines"]["opens"], ""), ("machine clicks", r["machines"]["clicks"], "")]
    lines += [f"  {name:<22}{value:>8}  {rate}".rstrip() for name, value, rate in rows]
    if r["machines"]["reasons"]:
        lines.append("machines, by reason:")
        lines += [f"  {n:>6}  {reason}" for reason, n in r["machines"]["reasons"].items()]
    if r["links"]:
        lines.append("clicks per link:   people  readers  machines  link")
        lines += [f"  {i['index'] + 1:>3}.{i['clicks']:>18}{i['readers']:>9}{i['machine_clicks']:>10}  {i['url']}"
                  for i in r["links"]]
    active = [h for h in r["hours"] if h["opens"] or h["clicks"]]
    if active:
        lines.append("first 72 hours (people):  hour  opens  clicks")
        lines += [f"  {h['hour']:>28}{h['opens']:>7}{h['clicks']:>8}" for h in active]
    if r["compared"]:
        lines.append("the list's last campaigns:  delivered  opened  clicked  unsubscribed  complaints  bounced")
        for c in r["compared"]:
            mark = "*" if c["campaign_id"] == r["campaign_id"] else " "
            lines.append(f" {mark}{c['campaign_id']:>5} {c['issue'][:20]:<20}{c['delivered']:>11}"
                         f"{_pct(c['open_rate']):>8}{_pct(c['click_rate']):>9}{_pct(c['unsubscribe_rate']):>14}"
                         f"{_pct(c['complaint_rate']):>12}{_pct(c['bounce_rate']):>9}")
    return lines


@app.command("report")
def campaign_report(
    campaign_id: CampaignId,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    compare: Annotated[int, typer.Option("--compare", min=0, max=report_ops.MAX_COMPARED,
                                         help="Compare with this many of the list's last campaigns.")]
    = report_ops.COMPARED,
) -> None:
    """What happened after sending: delivered, bounced (hard, soft), complaints,
    unsubscribes, people's opens and clicks with rates (machines apart, by reason), clicks
    per link, the first 72 hours hour by hour, and the list's last campaigns compared."""
    with session() as s:
        found = report_ops.report(s, campaign_id=campaign_id, compare=compare)
    if as_json:
        typer.echo(json.dumps(found))
        return
    for line in report_lines(found):
        typer.echo(line)
