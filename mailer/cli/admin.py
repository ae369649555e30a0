"""``newsletter admin``: dashboard users and API tokens."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from mailer import accounts
from mailer.cli.common import session
from mailer.core.db import MAX_ID

app = typer.Typer(help="Dashboard users and API tokens.", no_args_is_help=True)

PasswordStdin = Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")]


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


@app.command("create-user")
def create_user(
    email: Annotated[str, typer.Argument(help="The editor's address (their sign-in name).")],
    password_stdin: PasswordStdin = False,
) -> None:
    """Create a dashboard user (the password is read from stdin or asked for)."""
    password = _password(password_stdin)
    with session() as s:
        user = accounts.create_user(s, email=email, password=password)
        typer.echo(f"user {user.email} created")


@app.command("set-password")
def set_password(email: str, password_stdin: PasswordStdin = False) -> None:
    """Change a dashboard user's password (signs them out everywhere)."""
    password = _password(password_stdin)
    with session() as s:
        accounts.set_password(s, email=email, password=password)
    typer.echo(f"password of {email} changed")


@app.command("create-token")
def create_token(name: Annotated[str, typer.Argument(help="What the token is for, e.g. ci-deploy.")]) -> None:
    """Create an API token for /api/admin (printed once; only its hash is stored)."""
    with session() as s:
        token = accounts.create_token(s, name=name)
    typer.echo(token.plaintext)


@app.command("revoke-token")
def revoke_token(token_id: Annotated[int, typer.Argument(min=1, max=MAX_ID, help="The token's id.")]) -> None:
    """Revoke an API token by id."""
    with session() as s:
        accounts.revoke_token(s, token_id=token_id)
    typer.echo(f"token {token_id} revoked")
