"""The ``newsletter`` command: one module per command group, each a thin adapter over
``mailer.operations``. Exit codes: 0 ok, 2 bad input or configuration (one line on
stderr, never a traceback), 1 anything unexpected. The errors are mapped once, in
``main``.

  common.py       the database, a session, progress shown in a terminal
  db.py           newsletter db upgrade
  issue.py        newsletter issue render|test|create|update|delete|list
  campaign.py     newsletter send; newsletter campaign status|list|pause|resume|cancel|retry|reschedule
  schedule.py     newsletter schedule set|show
  subscribers.py  newsletter subscribers add|edit|import|export|list|count|tracking|welcome|unsubscribe|erase
  segments.py     newsletter segments add|list|show|remove
  admin.py        newsletter admin create-user|set-password|create-token|revoke-token
  inbound.py      newsletter inbound (an MTA pipe) and inbound explain|list|show|serve|poll
  webhooks.py     newsletter webhooks add|list|enable|disable|rotate-secret|remove|deliveries|redeliver
  processes.py    newsletter worker|web|dispatch
  ops.py          newsletter doctor|status
  demo.py         newsletter demo
"""

from __future__ import annotations

import sys

import typer
from sqlalchemy.exc import InterfaceError, OperationalError, ProgrammingError

from mailer.cli import (
    admin,
    campaign,
    db,
    demo,
    inbound,
    issue,
    ops,
    processes,
    schedule,
    segments,
    subscribers,
    webhooks,
)
from mailer.core import logs
from mailer.core.config import get_settings
from mailer.core.db import database_error, schema_missing
from mailer.core.errors import ConfigurationError, InvalidInput, NewsletterError, ServiceUnavailable

app = typer.Typer(help="Newsletter delivery: render an issue once, send it to every subscriber exactly once.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  rich_markup_mode=None)
app.add_typer(db.app, name="db")
app.add_typer(issue.app, name="issue")
app.add_typer(campaign.app, name="campaign")
app.add_typer(schedule.app, name="schedule")
app.add_typer(subscribers.app, name="subscribers")
app.add_typer(segments.app, name="segments")
app.add_typer(admin.app, name="admin")
app.add_typer(inbound.app, name="inbound")
app.add_typer(webhooks.app, name="webhooks")
app.command("send")(campaign.send)
app.command("dispatch")(processes.dispatch)
app.command("worker", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(processes.worker)
app.command("web")(processes.web)
app.command("demo")(demo.demo)
app.command("doctor")(ops.doctor)
app.command("status")(ops.status)


def main() -> None:
    try:
        # Logs go to stderr (NEWSLETTER_LOG_FORMAT), the command's output to stdout. A
        # one-shot command already says what it did: its stderr stays the one line of an
        # error, so only warnings and errors are logged; the commands that run as
        # services log at NEWSLETTER_LOG_LEVEL (common.log_as_a_service). A bad setting
        # is the usual one line, exit 2.
        logs.configure_from(get_settings(), floor="WARNING")
        rv = app(standalone_mode=False)
    except (InvalidInput, ConfigurationError, ServiceUnavailable) as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except (OperationalError, InterfaceError) as err:  # the database went away in the middle of a command
        typer.echo(f"error: {database_error(err)}", err=True)
        sys.exit(2)
    except ProgrammingError as err:
        if not schema_missing(err):
            raise  # a statement of ours is wrong: a bug, shown as one
        typer.echo(f"error: {database_error(err)}", err=True)  # never migrated (or by an older version)
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
