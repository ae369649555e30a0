"""``newsletter db``: the database schema."""

from __future__ import annotations

import typer

from mailer.cli.common import settings
from mailer.migrate import upgrade

app = typer.Typer(help="Database schema.", no_args_is_help=True)


@app.command("upgrade")
def db_upgrade() -> None:
    """Create or update the database schema (safe to run again)."""
    upgrade(settings().database)
    typer.echo("database is up to date")
