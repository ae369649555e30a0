"""``newsletter inbound``: what an MTA pipe feeds (one message on stdin)."""

from __future__ import annotations

import os
import sys

import typer

from mailer.cli.common import engine, settings
from mailer.operations.inbound import receive


def inbound() -> None:
    """Process one message from stdin, as an MTA pipe would: a bounce or complaint
    (VERP address, RFC 3464 / RFC 5965 report) or a mailto unsubscribe."""
    raw = sys.stdin.buffer.read()
    engine()  # one line naming the setting when the database does not answer
    typer.echo(receive(raw, environ=os.environ, settings=settings()))
