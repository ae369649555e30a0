"""``newsletter subscribers``: add, edit, import, export, list, count, unsubscribe, erase."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from mailer.cli.common import engine, session
from mailer.core.config import get_settings
from mailer.core.errors import InvalidInput
from mailer.issues import read_issue_file
from mailer.operations import commit
from mailer.operations import subscribers as ops
from mailer.operations import welcome
from subscribers import service
from subscribers.models import SubscriberStatus

app = typer.Typer(help="Subscribers and lists: add, edit, import, export, list, count, unsubscribe, erase.",
                  no_args_is_help=True)


@app.command("add")
def add(
    email: Annotated[str, typer.Argument(help="The address.")],
    name: Annotated[str, typer.Option("--name", help="Their name.")] = "",
    list_name: Annotated[Optional[str], typer.Option("--list", help="Add to this list (created if needed).")] = None,
    confirmed: Annotated[bool, typer.Option(
        "--confirmed", help="They already confirmed: make them active (and send the list's welcome, if it has one).")
    ] = False,
    tags: Annotated[Optional[list[str]], typer.Option("--tag", help="A tag (repeat for more).")] = None,
    attrs: Annotated[Optional[list[str]], typer.Option("--attr", help="An attribute, key=value (repeat for more).")
                     ] = None,
) -> None:
    """Add one subscriber (pending unless --confirmed), or update the one with that address."""
    attributes = dict(service.parse_attribute(a) for a in attrs or ())
    with session() as s:
        sub = ops.add(s, email=email, name=name, list_name=list_name,
                      status=SubscriberStatus.active if confirmed else SubscriberStatus.pending,
                      tags=tags or (), attributes=attributes)
    greeted = welcome.wake(s, get_settings())
    typer.echo(f"{sub.email}: {sub.status}" + (f", on list {list_name}" if list_name else "")
               + (", welcome queued" if greeted else ""))


@app.command("edit")
def edit(
    email: Annotated[str, typer.Argument(help="The address.")],
    name: Annotated[Optional[str], typer.Option("--name", help="A new name.")] = None,
    status: Annotated[Optional[str], typer.Option(
        "--status", help="'active' (confirm a pending subscriber) or 'unsubscribed'.")] = None,
    tags: Annotated[Optional[list[str]], typer.Option("--tag", help="Add a tag (repeat for more).")] = None,
    untags: Annotated[Optional[list[str]], typer.Option("--untag", help="Remove a tag (repeat for more).")] = None,
    attrs: Annotated[Optional[list[str]], typer.Option("--attr", help="Set an attribute, key=value (repeatable).")
                     ] = None,
    unset: Annotated[Optional[list[str]], typer.Option("--unset-attr", help="Remove an attribute (repeatable).")
                     ] = None,
) -> None:
    """Rename a subscriber, confirm a pending one, or unsubscribe one; add or remove
    tags and attributes. Bad input changes nothing."""
    attributes = dict(service.parse_attribute(a) for a in attrs or ())
    with session() as s:
        sub = ops.edit(s, subscriber_id=ops.find(s, email=email).id, name=name, status=status, tag=tags or (),
                       untag=untags or (), attributes=attributes, unset_attributes=unset or ())
    greeted = welcome.wake(s, get_settings())
    typer.echo(f"{sub.email}: {sub.status}" + (f", name {sub.name!r}" if sub.name else "")
               + (f", tags {', '.join(sub.tags)}" if sub.tags else "")
               + (f", attributes {json.dumps(sub.attributes, ensure_ascii=False, sort_keys=True)}"
                  if sub.attributes else "")
               + (", welcome queued" if greeted else ""))


@app.command("import")
def import_(
    csv_file: Annotated[Path, typer.Argument(help="A UTF-8 CSV file with an 'email' column ('-' for stdin).")],
    list_name: Annotated[str, typer.Option("--list", help="The list to import into (created if needed).")],
    file_format: Annotated[str, typer.Option(
        "--format", help="csv (ours), or a platform's export as it comes: mailchimp, substack, listmonk "
                         "(their statuses, tags and opt-in times; who left there is suppressed here).")] = "csv",
    confirmed: Annotated[bool, typer.Option(
        "--confirmed", help="The people in the file confirmed their subscription: import them as active.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Report what the import would change, and change nothing.")] = False,
) -> None:
    """Import subscribers from CSV, or from a Mailchimp, Substack or listmonk export.
    Bad rows are listed by line number; the rest import. The import is recorded once
    (file, time, source, counts) as the consent evidence."""
    if str(csv_file) == "-":
        report = ops.import_csv(engine(), sys.stdin.buffer, list_name=list_name, confirmed=confirmed,
                                origin="cli", file_name="-", dry_run=dry_run, format=file_format)
    else:
        try:
            stream = open(csv_file, "rb")
        except OSError as err:
            raise InvalidInput(f"cannot read {csv_file}: {err.strerror}") from err
        with stream:
            report = ops.import_csv(engine(), stream, list_name=list_name, confirmed=confirmed, origin="cli",
                                    file_name=csv_file.name, dry_run=dry_run, format=file_format)
    typer.echo(
        ("dry run, nothing changed: would have " if dry_run else "")
        + f"imported {report.imported}, updated {report.updated}, "
        f"skipped {report.skipped_suppressed} suppressed and {report.skipped_existing_status} "
        f"unsubscribed/bounced/complained, suppressed {report.suppressions} marked as gone, "
        f"{report.error_count} bad rows" + (f" (import {report.batch_id})" if report.batch_id else "")
    )
    for line_no, reason in report.errors:
        typer.echo(f"line {line_no}: {reason}")
    if report.errors_not_listed:
        typer.echo(f"... and {report.errors_not_listed} more bad rows")


@app.command("export")
def export(
    list_name: Annotated[Optional[str], typer.Option("--list", help="Only this list.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Export subscribers as CSV (formula-like cells escaped for spreadsheets)."""
    with session() as s:
        if out is None:
            ops.export_csv(s, sys.stdout, list_name=list_name)
            return
        try:
            stream = open(out, "w", encoding="utf-8", newline="")
        except OSError as err:
            raise InvalidInput(f"cannot write {out}: {err.strerror}") from err
        with stream:
            count = ops.export_csv(s, stream, list_name=list_name)
    typer.echo(f"exported {count} subscribers to {out}")


@app.command("list")
def list_(
    list_name: Annotated[Optional[str], typer.Option("--list", help="Only this list.")] = None,
    status: Annotated[Optional[str], typer.Option("--status", help="Only this status.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line (tags and attributes too).")
                       ] = False,
    segment: Annotated[str, typer.Option(
        "--segment", help='Only those the expression holds, e.g. \'tag:founding AND country = "CN"\'.')] = "",
) -> None:
    """List subscribers."""
    with session() as s:
        for sub in ops.every(s, status=status, list_name=list_name, segment=segment):
            if as_json:
                typer.echo(json.dumps(sub, ensure_ascii=False))
            else:
                typer.echo(f"{sub['email']}\t{sub['status']}\t{sub['name']}")


@app.command("tracking")
def tracking(
    list_name: Annotated[str, typer.Option("--list", help="The list.")],
    clicks: Annotated[Optional[bool], typer.Option("--clicks/--no-clicks",
                                                   help="Send its links through the click redirect.")] = None,
    opens: Annotated[Optional[bool], typer.Option("--opens/--no-opens", help="Add the open pixel.")] = None,
) -> None:
    """Click and open tracking of a list, each on or off (both off unless turned on);
    without an option, shows them. Applies to campaigns started from now on."""
    with session() as s:
        state = ops.set_tracking(s, list_name=list_name, clicks=clicks, opens=opens)
    on_off = lambda v: "on" if v else "off"  # noqa: E731
    typer.echo(f"list {state['list']}: click tracking {on_off(state['clicks'])}, open tracking {on_off(state['opens'])}")


@app.command("welcome")
def welcome_(
    list_name: Annotated[str, typer.Option("--list", help="The list.")],
    file: Annotated[Optional[Path], typer.Option(
        "--file", help="The welcome in Markdown, with front matter like an issue's ('subject: ...').")] = None,
    latest_link: Annotated[bool, typer.Option(
        "--latest-link", help="End it with a link to the latest issue in the archive.")] = False,
    remove: Annotated[bool, typer.Option(
        "--remove", help="No welcome for this list any more (those not yet sent are cancelled).")] = False,
) -> None:
    """The mail a list sends, once, to each subscriber who confirms (through their link,
    or an editor's confirmation or --confirmed add; never to a bulk import). Without
    --file or --remove, shows it and how many went out."""
    conf = get_settings()
    if file is not None and remove:
        raise InvalidInput("give --file or --remove, not both")
    with session() as s:
        if file is None and not remove:
            shown = welcome.show_welcome(s, list_name=list_name)
        else:
            source = None if remove else read_issue_file(file)
            shown = welcome.set_welcome(s, list_name=list_name, source=source, settings=conf,
                                        latest_link=latest_link)
            commit(s, shown, settings=conf)
    if not shown.enabled:
        typer.echo(f"list {shown.list}: no welcome mail" + (f" ({shown.sent} were sent)" if shown.sent else ""))
        return
    typer.echo(f"list {shown.list}: welcome {shown.subject!r}; sent {shown.sent}, queued {shown.queued}, "
               f"skipped {shown.skipped}")


@app.command("count")
def count(
    list_name: Annotated[str, typer.Option("--list", help="The list.")],
    segment: Annotated[str, typer.Option(
        "--segment", help='A segment expression, e.g. \'tag:founding AND country = "CN"\' (none: the whole list).')
    ] = "",
) -> None:
    """How many active subscribers of a list a segment holds: a campaign's audience."""
    with session() as s:
        typer.echo(ops.segment_size(s, list_name=list_name, segment=segment))


@app.command("unsubscribe")
def unsubscribe(email: Annotated[str, typer.Argument(help="The address.")]) -> None:
    """Unsubscribe someone (they get no more mail, queued ones included)."""
    with session() as s:
        sub = ops.find(s, email=email)
        changed = ops.unsubscribe(s, subscriber_id=sub.id, origin="admin")
        typer.echo(f"{sub.email}: unsubscribed" if changed else f"{sub.email}: already {sub.status}")


@app.command("erase")
def erase(email: Annotated[str, typer.Argument(help="The address.")]) -> None:
    """Erase someone's personal data (GDPR). Their address stays only as a suppression hash."""
    with session() as s:
        sub = ops.find(s, email=email)
        ops.erase(s, subscriber_id=sub.id)
        typer.echo(f"erased subscriber {sub.id}")
