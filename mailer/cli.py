"""The ``newsletter`` command. Exit codes: 0 ok, 2 bad input or configuration (one line
on stderr, never a traceback), 1 anything unexpected."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer

from mailer.config import get_settings
from mailer.errors import ConfigurationError, InvalidInput, NewsletterError

app = typer.Typer(help="Newsletter delivery: render an issue once, send it to every subscriber exactly once.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  rich_markup_mode=None)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
issue_app = typer.Typer(help="Issues: render and preview.", no_args_is_help=True)
campaign_app = typer.Typer(help="Campaigns: progress, pause, resume, cancel, retry.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(issue_app, name="issue")
app.add_typer(campaign_app, name="campaign")
schedule_app = typer.Typer(help="Weekly schedules of lists.", no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")
admin_app = typer.Typer(help="Dashboard users and API tokens.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")

try:  # the subscriber commands live with the subscribers package
    from subscribers.cli import app as subscribers_app

    app.add_typer(subscribers_app, name="subscribers", help="Subscribers and lists: add, import, export, list.")
except ModuleNotFoundError as err:  # pragma: no cover - only while the package grows
    if err.name != "subscribers.cli":
        raise


def _engine():
    from mailer.db import check_connection, engine_for

    engine = engine_for(get_settings().database)
    check_connection(engine)
    return engine


# --- db -------------------------------------------------------------------------------

@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or update the database schema (safe to run again)."""
    from mailer.migrate import upgrade

    upgrade(get_settings().database)
    typer.echo("database is up to date")


# --- issue ----------------------------------------------------------------------------

def _render(path: Path):
    from mailer.render import render_file

    return render_file(path, get_settings())


def sample_message(rendered, settings) -> bytes:
    """A complete message as a subscriber would receive it, for previews and test sends."""
    from mailer.message import Recipient, compile_message

    template = compile_message(
        subject=rendered.subject, from_=settings.from_address, html=rendered.html, text=rendered.text,
        list_id=f"preview.{settings.sending_domain}", list_name="Preview",
        feedback_id=f"0:0:newsletter:{settings.sending_domain}",
    )
    return template.assemble(Recipient(
        email="reader@example.com", name="Reader", message_id=f"<preview@{settings.sending_domain}>",
        unsubscribe_url=f"{settings.base_url}/u/preview", unsubscribe_mailto=f"mailto:unsubscribe@{settings.sending_domain}",
        preferences_url=f"{settings.base_url}/p/preview",
    ))


@issue_app.command("render")
def issue_render(
    path: Annotated[Path, typer.Argument(help="The issue: Markdown with YAML front matter.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for index.html, index.txt and message.eml.")],
) -> None:
    """Render an issue to HTML, plain text and a sample message; print warnings."""
    from mailer.render import write_render_outputs

    rendered = _render(path)
    files = write_render_outputs(rendered, out, sample_message=sample_message(rendered, get_settings()))
    for warning in rendered.warnings:
        typer.echo(f"warning: {warning}", err=True)
    for f in files:
        typer.echo(str(f))


@issue_app.command("test")
def issue_test(
    path: Annotated[Path, typer.Argument(help="The issue file.")],
    to: Annotated[list[str], typer.Option("--to", help="Address to send the test to (repeat for more).")],
) -> None:
    """Send the real rendered message, marked as a test, to a few addresses."""
    from mailer.testsend import send_test

    results = send_test(_render(path), to, get_settings())
    for r in results:
        typer.echo(f"{r.address}: {r.code} {r.reply}".strip())
    if not all(r.ok for r in results):
        raise typer.Exit(1)


# --- send -----------------------------------------------------------------------------

def queue_issue(path: Path, list_name: str, at: datetime | None = None, *, next_slot: bool = False) -> tuple[int, str, int]:
    """Render and store the issue, create its campaign for the list, and start it now,
    or schedule it (at ``at``, or the list's next free weekly slot). Returns (campaign
    id, status, tasks queued). Running it again finds the same campaign and sends
    nothing twice."""
    from mailer import campaigns, schedules
    from mailer.db import transaction
    from mailer.dispatch import enqueue_campaign

    settings = get_settings()
    rendered = _render(path)
    source = path.read_text(encoding="utf-8")
    engine = _engine()
    now = datetime.now(timezone.utc)
    if at is not None and at <= now:
        raise InvalidInput(f"{at.isoformat()} is in the past")
    with transaction(engine) as s:
        mlist = campaigns.find_list(s, list_name)
        issue = campaigns.store_issue(s, slug=rendered.slug, subject=rendered.subject, preheader=rendered.preheader,
                                      source=source, html=rendered.html, text_part=rendered.text,
                                      issue_date=rendered.date)
        started = 0
        if at is not None or next_slot:
            campaign = schedules.schedule_campaign(s, issue_id=issue.id, list_id=mlist.id, at=at, now=now)
        else:
            campaign, _created = campaigns.create_campaign(s, issue_id=issue.id, list_id=mlist.id)
            started = campaigns.start_campaign(s, campaign_id=campaign.id, batch_size=settings.batch_size, now=now)
        cid = campaign.id
    with transaction(engine) as s:
        status = campaigns.get_campaign(s, cid).status
    tasks = enqueue_campaign(cid, -(-started // settings.batch_size)) if started else 0
    return cid, status, tasks


@app.command("send")
def send(
    path: Annotated[Path, typer.Argument(help="The issue file (Markdown with front matter).")],
    list_name: Annotated[str, typer.Option("--list", help="Name of the list to send to.")],
    at: Annotated[Optional[str], typer.Option("--at", help="Send at this time (ISO 8601) instead of now.")] = None,
    tz: Annotated[Optional[str], typer.Option("--tz", help="Time zone for --at without an offset, e.g. Asia/Shanghai.")] = None,
    next_slot: Annotated[bool, typer.Option("--next-slot", help="Queue to the list's next free weekly slot.")] = False,
) -> None:
    """Send an issue to a list now, or schedule it (--at, --next-slot). Workers do the sending."""
    from mailer.schedules import parse_when

    if at and next_slot:
        raise InvalidInput("give --at or --next-slot, not both")
    when = parse_when(at, tz) if at else None
    cid, status, tasks = queue_issue(path, list_name, when, next_slot=next_slot)
    if status == "scheduled":
        from mailer import campaigns
        from mailer.db import transaction

        with transaction(_engine()) as s:
            due = campaigns.get_campaign(s, cid).scheduled_at
        typer.echo(f"campaign {cid} scheduled for {_iso(due)}")
    elif tasks:
        typer.echo(f"campaign {cid} is sending ({tasks} tasks queued); follow it with: newsletter campaign status {cid}")
    else:
        typer.echo(f"campaign {cid} is already {status}; nothing new was queued")


def _iso(value: datetime) -> str:
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()


# --- schedule -------------------------------------------------------------------------

@schedule_app.command("set")
def schedule_set(
    list_name: Annotated[str, typer.Option("--list", help="The list.")],
    day: Annotated[str, typer.Option("--day", help="Weekday, e.g. tuesday.")],
    at: Annotated[str, typer.Option("--time", help="Local time of day, HH:MM.")],
    tz: Annotated[str, typer.Option("--tz", help="IANA time zone, e.g. Asia/Shanghai.")],
) -> None:
    """Set a list's weekly slot (day, local time, time zone)."""
    from mailer import campaigns, schedules
    from mailer.db import transaction

    with transaction(_engine()) as s:
        sch = schedules.set_schedule(s, list_id=campaigns.find_list(s, list_name).id, weekday=day, local_time=at, tz=tz)
        typer.echo(f"{list_name}: every {schedules.WEEKDAYS[sch.weekday]} at {sch.local_time} {sch.timezone}")


@schedule_app.command("show")
def schedule_show(
    list_name: Annotated[str, typer.Option("--list", help="The list.")],
    weeks: Annotated[int, typer.Option("--weeks", min=1, max=104, help="How many weeks ahead.")] = 6,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The coming weekly slots of a list and what goes out in each."""
    from mailer import campaigns, schedules
    from mailer.db import transaction

    with transaction(_engine()) as s:
        mlist = campaigns.find_list(s, list_name)
        if schedules.schedule_for(s, mlist.id) is None:
            raise InvalidInput(f"list {list_name!r} has no weekly schedule; set one with: newsletter schedule set")
        views = schedules.upcoming(s, list_id=mlist.id, now=datetime.now(timezone.utc), weeks=weeks)
    rows = [{"slot_at": v.slot_at.isoformat(), "campaign": v.campaign_id, "issue": v.issue, "status": v.status}
            for v in views]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for r in rows:
        typer.echo(f"{r['slot_at']}  " + (f"campaign {r['campaign']} {r['issue']} ({r['status']})" if r["campaign"]
                                          else "empty"))


@app.command("dispatch")
def dispatch_command() -> None:
    """Start due campaigns now (beat does this every minute); print what happened."""
    from mailer.dispatch import dispatch_due

    _engine()
    report = dispatch_due()
    typer.echo(f"started {report.started or 'none'}; held {report.held or 'none'}; "
               f"empty slots {len(report.empty_slots)}")


# --- campaign -------------------------------------------------------------------------

def _report(cid: int):
    from mailer import campaigns
    from mailer.db import transaction

    with transaction(_engine()) as s:
        return campaigns.campaign_report(s, cid)


def _latest_campaign_id() -> int:
    from mailer import campaigns
    from mailer.db import transaction

    with transaction(_engine()) as s:
        found = campaigns.list_campaigns(s)
        if not found:
            raise InvalidInput("there are no campaigns yet")
        return found[0].id


def format_report(r) -> str:
    eta = "—" if r.eta_seconds is None else f"{r.eta_seconds:.0f}s"
    return (f"campaign {r.id} ({r.issue} → {r.list}): {r.status}; {r.sent}/{r.total} sent, {r.failed} failed, "
            f"{r.bounced} bounced, {r.skipped} skipped, {r.queued} queued; {r.rate_per_minute:.0f}/min, ETA {eta}"
            + (f"; paused: {r.pause_reason}" if r.status == "paused" and r.pause_reason else ""))


def follow(cid: int, *, timeout: float | None = None, interval: float = 0.5) -> object:
    """Show a live progress bar until the campaign is no longer sending."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    deadline = time.monotonic() + timeout if timeout else None
    report = _report(cid)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=False) as bar:
        task = bar.add_task(f"campaign {cid}", total=max(report.total, 1))
        while True:
            report = _report(cid)
            done = report.sent + report.failed + report.bounced + report.skipped
            bar.update(task, completed=done, total=max(report.total, 1),
                       description=f"campaign {cid} {report.status}")
            if report.status not in ("sending", "scheduled") or (deadline and time.monotonic() > deadline):
                return report
            time.sleep(interval)


@campaign_app.command("status")
def campaign_status(
    campaign_id: Annotated[Optional[int], typer.Argument(help="Campaign id (default: the latest).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Live progress bar until it finishes.")] = False,
) -> None:
    """Sent / failed / queued, rate and ETA of a campaign."""
    cid = campaign_id or _latest_campaign_id()
    if as_json:
        typer.echo(json.dumps(_report(cid).as_dict()))
        return
    report = follow(cid) if watch or (sys.stdout.isatty() and _report(cid).status == "sending") else _report(cid)
    typer.echo(format_report(report))


@campaign_app.command("list")
def campaign_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """All campaigns, newest first."""
    from mailer import campaigns
    from mailer.db import transaction

    with transaction(_engine()) as s:
        reports = [campaigns.campaign_report(s, c.id) for c in campaigns.list_campaigns(s)]
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in reports]))
    for r in [] if as_json else reports:
        typer.echo(format_report(r))


def _change(action: str, cid: int) -> None:
    from mailer import campaigns
    from mailer.db import transaction
    from mailer.dispatch import enqueue_campaign

    with transaction(_engine()) as s:
        fn = {"pause": campaigns.pause_campaign, "resume": campaigns.resume_campaign,
              "cancel": campaigns.cancel_campaign}[action]
        changed = fn(s, campaign_id=cid)
        status = campaigns.get_campaign(s, cid).status
    if changed and action == "resume":
        enqueue_campaign(cid, 1_000_000)
    typer.echo(f"campaign {cid}: {status}" + ("" if changed else f" (cannot {action} a {status} campaign)"))
    if not changed:
        raise typer.Exit(2)


@campaign_app.command("pause")
def campaign_pause(campaign_id: int) -> None:
    """Stop sending at the next message; resume later."""
    _change("pause", campaign_id)


@campaign_app.command("resume")
def campaign_resume(campaign_id: int) -> None:
    """Send to exactly the deliveries not yet sent."""
    _change("resume", campaign_id)


@campaign_app.command("cancel")
def campaign_cancel(campaign_id: int) -> None:
    """Stop for good; unsent deliveries are recorded as skipped."""
    _change("cancel", campaign_id)


@campaign_app.command("reschedule")
def campaign_reschedule(
    campaign_id: int,
    at: Annotated[str, typer.Option("--at", help="New time (ISO 8601).")],
    tz: Annotated[Optional[str], typer.Option("--tz", help="Time zone for --at without an offset.")] = None,
) -> None:
    """Move a draft or scheduled campaign to another time."""
    from mailer import schedules
    from mailer.db import transaction

    when = schedules.parse_when(at, tz)
    with transaction(_engine()) as s:
        c = schedules.reschedule(s, campaign_id=campaign_id, at=when, now=datetime.now(timezone.utc))
        typer.echo(f"campaign {c.id} scheduled for {_iso(c.scheduled_at)}")


@campaign_app.command("retry")
def campaign_retry(campaign_id: int) -> None:
    """Queue the failed deliveries of a campaign again."""
    from mailer import campaigns
    from mailer.db import transaction
    from mailer.dispatch import enqueue_campaign

    with transaction(_engine()) as s:
        n = campaigns.retry_failed(s, campaign_id=campaign_id)
    if n:
        enqueue_campaign(campaign_id, n)
    typer.echo(f"campaign {campaign_id}: {n} failed deliveries queued again")


# --- admin ----------------------------------------------------------------------------

@admin_app.command("create-user")
def admin_create_user(
    email: Annotated[str, typer.Argument(help="The editor's address (their sign-in name).")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
) -> None:
    """Create a dashboard user (the password is read from stdin or asked for)."""
    from mailer import accounts
    from mailer.db import transaction

    password = sys.stdin.readline().rstrip("\n") if password_stdin else typer.prompt(
        "Password", hide_input=True, confirmation_prompt=True)
    with transaction(_engine()) as s:
        user = accounts.create_user(s, email=email, password=password)
        typer.echo(f"user {user.email} created")


@admin_app.command("set-password")
def admin_set_password(
    email: str,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
) -> None:
    """Change a dashboard user's password (signs them out everywhere)."""
    from mailer import accounts
    from mailer.db import transaction

    password = sys.stdin.readline().rstrip("\n") if password_stdin else typer.prompt(
        "Password", hide_input=True, confirmation_prompt=True)
    with transaction(_engine()) as s:
        accounts.set_password(s, email=email, password=password)
    typer.echo(f"password of {email} changed")


@admin_app.command("create-token")
def admin_create_token(name: Annotated[str, typer.Argument(help="What the token is for, e.g. ci-deploy.")]) -> None:
    """Create an API token for /api/admin (printed once; only its hash is stored)."""
    from mailer import accounts
    from mailer.db import transaction

    with transaction(_engine()) as s:
        token = accounts.create_token(s, name=name)
    typer.echo(token.plaintext)


@admin_app.command("revoke-token")
def admin_revoke_token(token_id: int) -> None:
    """Revoke an API token by id."""
    from mailer import accounts
    from mailer.db import transaction

    with transaction(_engine()) as s:
        accounts.revoke_token(s, token_id=token_id)
    typer.echo(f"token {token_id} revoked")


# --- processes ------------------------------------------------------------------------

@app.command("worker", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(
    ctx: typer.Context,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="Worker processes.")] = 2,
    beat: Annotated[bool, typer.Option("--beat", help="Also run the periodic sweep here (one per deployment).")] = False,
) -> None:
    """Run a Celery worker (extra arguments go to 'celery worker')."""
    _engine()
    cmd = [sys.executable, "-m", "celery", "-A", "worker", "worker", f"--concurrency={concurrency}", "--loglevel=INFO"]
    if beat:
        cmd.append("--beat")
    os.execv(sys.executable, cmd + list(ctx.args))


@app.command("web")
def web(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    forwarded_allow_ips: Annotated[str, typer.Option(
        help="Proxies whose X-Forwarded-For is trusted (the client address signup and sign-in limits "
             "count by), comma separated.")] = "127.0.0.1",
) -> None:
    """Serve the web pages and the API."""
    import uvicorn

    _engine()
    uvicorn.run("mailer.web.app:create_app", factory=True, host=host, port=port, proxy_headers=True,
                forwarded_allow_ips=forwarded_allow_ips)


@app.command("inbound")
def inbound() -> None:
    """Process one message from stdin, as an MTA pipe would: a bounce or complaint
    (VERP address, RFC 3464 / RFC 5965 report) or a mailto unsubscribe."""
    import io

    from mailer.bounces import handle_inbound, is_bounce
    from subscribers.cli import inbound_command
    from subscribers.tokens import secrets_from_settings

    raw = sys.stdin.buffer.read()
    if is_bounce(raw, os.environ):
        typer.echo(handle_inbound(_engine(), raw, secret_keys=secrets_from_settings(get_settings()),
                                  environ=os.environ))
    else:
        inbound_command(io.BytesIO(raw))


@app.command("demo")
def demo(
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 300.0,
) -> None:
    """Send the example issue to the example subscribers through a real worker (no server needed).

    Imports examples/subscribers.csv, renders the example issue, starts a Celery worker on
    the embedded broker, sends to the outbox folder and prints a summary. Running it
    again sends nothing twice.
    """
    from mailer.demo import run_demo

    raise typer.Exit(run_demo(timeout=timeout))


def main() -> None:
    try:
        rv = app(standalone_mode=False)
    except (InvalidInput, ConfigurationError) as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except typer.Exit as err:
        sys.exit(err.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except typer.TyperException as err:
        # A usage error (unknown command or option, a campaign id that is not a number):
        # one line, like every other user error. (typer bundles its own click, so these
        # are not click.ClickException.)
        message = err.format_message() if hasattr(err, "format_message") else str(err)
        if type(err).__name__ == "NoArgsIsHelpError":  # a bare group: its help, as written
            typer.echo(message, err=True)
        else:
            typer.echo(f"error: {' '.join(message.split())} (see --help)", err=True)
        sys.exit(getattr(err, "exit_code", 2))
    except NewsletterError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
