"""``newsletter subscribers ...``: add, import, export, list, unsubscribe, erase.

Mounted by ``mailer.cli`` (``app.add_typer(subscribers.cli.app, name="subscribers")``),
which turns an ``InvalidInput`` into one line on stderr and exit code 2. Also
``inbound_command``, run by ``newsletter inbound`` as an MTA pipe for the
``mailto:unsubscribe+TOKEN@domain`` address of the List-Unsubscribe header.
"""

from __future__ import annotations

import json
import os
import sys
from email import policy
from email.parser import BytesParser
from email.utils import getaddresses
from pathlib import Path
from typing import Annotated, BinaryIO, Optional

import typer
from sqlalchemy import select

from mailer.config import get_settings
from mailer.db import engine_for, transaction
from mailer.errors import InvalidInput, NotFound
from subscribers import csvio, service, tokens
from subscribers.models import Membership, Subscriber, SubscriberStatus

app = typer.Typer(help="Subscribers: add, import, export, list, unsubscribe, erase.", no_args_is_help=True)


def _engine():
    return engine_for(get_settings().database)


@app.command("add")
def add(
    email: Annotated[str, typer.Argument(help="The address.")],
    name: Annotated[str, typer.Option("--name", help="Their name.")] = "",
    list_name: Annotated[Optional[str], typer.Option("--list", help="Add to this list (created if needed).")] = None,
    confirmed: Annotated[bool, typer.Option("--confirmed", help="They already confirmed: make them active.")] = False,
) -> None:
    """Add one subscriber (pending unless --confirmed), or update the one with that address."""
    with transaction(_engine()) as session:
        s = service.add_subscriber(session, email=email, name=name, list_name=list_name,
                                   status="active" if confirmed else "pending", origin="admin")
        typer.echo(f"{s.email}: {s.status}" + (f", on list {list_name}" if list_name else ""))


@app.command("import")
def import_(
    csv_file: Annotated[Path, typer.Argument(help="A UTF-8 CSV file with an 'email' column ('-' for stdin).")],
    list_name: Annotated[str, typer.Option("--list", help="The list to import into (created if needed).")],
    confirmed: Annotated[bool, typer.Option(
        "--confirmed", help="The people in the file confirmed their subscription: import them as active.")] = False,
) -> None:
    """Import subscribers from CSV. Bad rows are listed by line number; the rest import."""
    if str(csv_file) == "-":
        report = csvio.import_csv(_engine(), sys.stdin.buffer, list_name=list_name, confirmed=confirmed)
    else:
        try:
            stream = open(csv_file, "rb")
        except OSError as err:
            raise InvalidInput(f"cannot read {csv_file}: {err.strerror}") from err
        with stream:
            report = csvio.import_csv(_engine(), stream, list_name=list_name, confirmed=confirmed)
    typer.echo(
        f"imported {report.imported}, updated {report.updated}, "
        f"skipped {report.skipped_suppressed} suppressed and {report.skipped_existing_status} "
        f"unsubscribed/bounced/complained, {report.error_count} bad rows"
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
    with transaction(_engine()) as session:
        if out is None:
            count = csvio.export_csv(session, sys.stdout, list_name=list_name)
        else:
            try:
                stream = open(out, "w", encoding="utf-8", newline="")
            except OSError as err:
                raise InvalidInput(f"cannot write {out}: {err.strerror}") from err
            with stream:
                count = csvio.export_csv(session, stream, list_name=list_name)
            typer.echo(f"exported {count} subscribers to {out}")


@app.command("list")
def list_(
    list_name: Annotated[Optional[str], typer.Option("--list", help="Only this list.")] = None,
    status: Annotated[Optional[str], typer.Option("--status", help="Only this status.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List subscribers."""
    if status is not None and status not in {s.value for s in SubscriberStatus}:
        raise InvalidInput(f"unknown status {status!r}; one of {', '.join(s.value for s in SubscriberStatus)}")
    with transaction(_engine()) as session:
        query = select(Subscriber.id, Subscriber.email, Subscriber.name, Subscriber.status, Subscriber.created_at)
        if list_name is not None:
            mailing_list = service.find_list(session, list_name)
            query = query.join(Membership, Membership.subscriber_id == Subscriber.id).where(
                Membership.list_id == mailing_list.id)
        if status is not None:
            query = query.where(Subscriber.status == status)
        for sid, email, name, st, created in session.execute(query.order_by(Subscriber.id)
                                                              .execution_options(yield_per=1000)):
            if as_json:
                typer.echo(json.dumps({"id": sid, "email": email, "name": name, "status": st,
                                       "created_at": created.isoformat() if created else None},
                                      ensure_ascii=False))
            else:
                typer.echo(f"{email}\t{st}\t{name}")


def _find(session, email: str) -> Subscriber:
    found = service.find_subscriber(session, email)
    if found is None:
        raise NotFound(f"no subscriber {service.normalise_email(email)}")
    return found


@app.command("unsubscribe")
def unsubscribe(email: Annotated[str, typer.Argument(help="The address.")]) -> None:
    """Unsubscribe someone (they get no more mail, queued ones included)."""
    with transaction(_engine()) as session:
        s = _find(session, email)
        changed = service.unsubscribe(session, subscriber_id=s.id, origin="admin")
        typer.echo(f"{s.email}: unsubscribed" if changed else f"{s.email}: already {s.status}")


@app.command("erase")
def erase(email: Annotated[str, typer.Argument(help="The address.")]) -> None:
    """Erase someone's personal data (GDPR). Their address stays only as a suppression hash."""
    with transaction(_engine()) as session:
        s = _find(session, email)
        service.erase(session, subscriber_id=s.id)
        typer.echo(f"erased subscriber {s.id}")


UNSUBSCRIBE_PREFIX = "unsubscribe+"
# Where an MTA pipe puts the envelope recipient (Postfix local(8), Exim, procmail-style).
RECIPIENT_ENV = ("ORIGINAL_RECIPIENT", "RECIPIENT", "LOCAL_PART_SUFFIX")


def _token_candidates(message, environ) -> list[str]:
    addresses = [environ[k] for k in RECIPIENT_ENV if environ.get(k)]
    for header in ("Delivered-To", "X-Original-To", "Envelope-To", "To", "Cc"):
        addresses.extend(str(v) for v in message.get_all(header, []))
    found = []
    for _, addr in getaddresses(addresses):
        local = addr.rsplit("@", 1)[0] if "@" in addr else addr
        if local.lower().startswith(UNSUBSCRIBE_PREFIX):
            found.append(local[len(UNSUBSCRIBE_PREFIX):])
    return found


def inbound_command(stdin: BinaryIO | None = None, environ: dict[str, str] | None = None) -> str:
    """Read one RFC 5322 message (stdin by default, as an MTA pipe delivers it) sent to
    ``unsubscribe+TOKEN@domain`` and unsubscribe that subscriber (origin "mailto").
    Returns (and prints) one line. No such address or a bad token: ``InvalidInput``."""
    stream = stdin if stdin is not None else sys.stdin.buffer
    message = BytesParser(policy=policy.compat32).parse(stream, headersonly=True)
    candidates = _token_candidates(message, os.environ if environ is None else environ)
    if not candidates:
        raise InvalidInput("no unsubscribe+TOKEN recipient in the message")
    settings = get_settings()
    secrets = tokens.secrets_from_settings(settings)
    last_error: InvalidInput | None = None
    for token in candidates:
        try:
            subscriber_id, campaign_id = tokens.read_unsubscribe_token(secrets, token)
        except tokens.InvalidToken as err:
            last_error = err
            continue
        with transaction(engine_for(settings.database)) as session:
            try:
                changed = service.unsubscribe(session, subscriber_id=subscriber_id, campaign_id=campaign_id,
                                              origin="mailto")
            except NotFound as err:
                raise InvalidInput("the unsubscribe address is not valid") from err
        line = "unsubscribed" if changed else "already unsubscribed"
        typer.echo(line)
        return line
    raise InvalidInput("the unsubscribe address is not valid") from last_error
