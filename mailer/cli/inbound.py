"""``newsletter inbound``: what comes back. With no subcommand, one message on stdin, as
an MTA pipe feeds it; ``explain`` says what would be recorded, changing nothing;
``serve`` is the SMTP/LMTP listener, ``poll`` the bounce-mailbox poller; ``list`` and
``show`` are the messages kept as unprocessed."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from mailer.channels.mailbox import MailboxError, parse_mailbox, poll
from mailer.cli.common import engine, log_as_a_service, session, settings
from mailer.core.errors import InvalidInput
from mailer.operations import inbound as op
from mailer.reports import Channel

# sysexits.h EX_TEMPFAIL: Postfix pipe(8), Exim and Sendmail keep the message and try
# again later; any other failure would bounce the bounce.
EX_TEMPFAIL = 75

app = typer.Typer(help="What comes back: bounces, complaints, auto-replies and mailto unsubscribes. With no "
                       "command: record one message read from stdin, as an MTA pipe hands it over (exit 0 once "
                       "recorded, 75 when it could not be and the MTA should try again).",
                  no_args_is_help=False, invoke_without_command=True)


@app.callback(invoke_without_command=True)
def pipe(ctx: typer.Context) -> None:
    """With no subcommand: record one message read from stdin, as an MTA pipe hands it
    over (a bounce or complaint to a VERP address, an RFC 3464 / RFC 5965 report, a
    mailto unsubscribe). A message that is not understood is kept as unprocessed. Exit
    0 once something is recorded; 75 (EX_TEMPFAIL, the MTA tries again) when it could
    not be."""
    if ctx.invoked_subcommand is not None:
        return
    raw = sys.stdin.buffer.read()
    if not raw.strip():
        raise InvalidInput("no message on stdin")
    try:
        engine()
        result = op.receive(raw, environ=os.environ, settings=settings(), channel=Channel.pipe)
    except Exception as err:  # anything that kept it from being recorded is temporary for the MTA
        typer.echo(f"error: the message was not recorded (the MTA will try again): {' '.join(str(err).split())}",
                   err=True)
        raise typer.Exit(EX_TEMPFAIL) from err
    typer.echo(result.line)


def _read(source: str) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read()
    path = Path(source)
    if not path.is_file():
        raise InvalidInput(f"no such file: {source}")
    return path.read_bytes()


@app.command("explain")
def explain(
    source: Annotated[str, typer.Argument(help="A message file (an .eml), or - to read stdin.")],
    as_json: Annotated[bool, typer.Option("--json", help='Print {"kind": ..., "recipients": [...]}.')] = False,
) -> None:
    """What the service would record for a message, changing nothing: its kind (bounce,
    complaint, auto-reply, unsubscribe, unknown) and each recipient with its status,
    the diagnostic, whether the address would be suppressed ("permanent": a hard bounce
    or a complaint; not a 5.7.x policy block or a full mailbox) and the delivery it
    would be tied to."""
    raw = _read(source)
    engine()
    if as_json:
        typer.echo(json.dumps(op.explain(raw, settings=settings(), environ={})))
    else:
        for line in op.explain_lines(raw, settings=settings(), environ={}):
            typer.echo(line)


@app.command("list")
def list_kept(
    include_ignored: Annotated[bool, typer.Option("--all", help="Also the ignored ones (auto-replies...).")] = False,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.", min=1)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON list.")] = False,
) -> None:
    """The inbound messages kept as unprocessed, with the reason, newest first."""
    with session() as s:
        rows = op.kept(s, include_ignored=include_ignored, limit=limit)
        total = op.unprocessed_count(s)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for r in rows:
        typer.echo(f"#{r['id']}  {r['received_at'][:19]}  {r['channel']:<8} {r['status']:<11} {r['kind']:<11} "
                   f"{r['size']:>7} B  {r['reason']}")
    typer.echo(f"{total} unprocessed")


@app.command("show")
def show(message_id: Annotated[int, typer.Argument(help="The number that 'inbound list' shows.")]) -> None:
    """Write a kept message's raw bytes to stdout (as kept: at most NEWSLETTER_INBOUND_MAX_BYTES)."""
    with session() as s:
        raw = op.kept_raw(s, message_id=message_id)
    sys.stdout.buffer.write(raw)
    sys.stdout.buffer.flush()


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 2525,
    lmtp: Annotated[bool, typer.Option("--lmtp/--smtp", help="Speak LMTP (RFC 2033) or SMTP.")] = True,
) -> None:
    """Listen for mail to the bounce domain (SMTP for its MX, or LMTP behind a local
    MTA) and record each message; other recipients are refused."""
    engine()
    log_as_a_service()
    from mailer.channels.listener import InboundServer  # aiosmtpd: only this command needs it

    server = InboundServer(settings(), host=host, port=port, lmtp=lmtp)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server.start()
    except Exception as err:  # the port is taken, or not ours to bind
        raise InvalidInput(f"cannot listen on {host}:{port}: {' '.join(str(err).split())}") from err
    typer.echo(f"{'LMTP' if lmtp else 'SMTP'} on {host}:{port} for {', '.join(settings().inbound_domain_list)}",
               err=True)
    try:
        stop.wait()
    finally:
        server.stop()


@app.command("poll")
def poll_mailbox(
    url: Annotated[str | None, typer.Argument(
        help="imaps://user:password@host/FOLDER or pop3s://user:password@host (default: NEWSLETTER_BOUNCE_MAILBOX).",
        show_default=False)] = None,
    every: Annotated[float, typer.Option(help="Poll again every this many seconds; 0: once.", min=0)] = 0,
    delete: Annotated[bool, typer.Option("--delete", help="IMAP: delete handled messages, not only mark them seen.")]
    = False,
) -> None:
    """Read a bounce mailbox and record every new message: IMAP marks each one \\Seen
    once recorded, POP3 deletes it. A message that could not be recorded is left for the
    next poll."""
    current = settings()
    mailbox = parse_mailbox(url or current.bounce_mailbox or "")
    engine()
    log_as_a_service()

    def handle(raw: bytes, channel: Channel) -> None:
        op.receive(raw, settings=current, channel=channel)

    while True:
        try:
            result = poll(mailbox, handle, delete=delete)
        except MailboxError as err:
            if not every:
                raise
            typer.echo(f"error: {err}", err=True)
        else:
            typer.echo(f"{mailbox}: {result.line}", err=bool(every))
            if not every and result.left:
                raise typer.Exit(1)
        if not every:
            return
        time.sleep(every)
