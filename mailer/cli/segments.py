"""``newsletter segments``: save, list, show and remove named segments of a list."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from mailer.cli.common import session
from mailer.operations import segments as ops

app = typer.Typer(help="Named segments of a list: save one, list them, show one's size, remove one.",
                  no_args_is_help=True)


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Its name: lower-case letters, digits, _ and -.")],
    expression: Annotated[str, typer.Argument(help='The expression, e.g. \'tag:founding AND country = "CN"\'.')],
    list_name: Annotated[str, typer.Option("--list", help="The list it is a segment of.")],
) -> None:
    """Save a segment under a name (or change the expression of the one of that name).
    Then `send ISSUE --list L --segment NAME` sends to it."""
    with session() as s:
        saved, created = ops.save(s, name=name, expression=expression, list_name=list_name)
    typer.echo(f"segment {saved['name']} {'saved' if created else 'changed'}: {saved['expression']} "
               f"({saved['size']} active on list {saved['list']})")


@app.command("list")
def list_(
    list_name: Annotated[Optional[str], typer.Option("--list", help="Only this list's.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """The saved segments, with how many active subscribers each holds now."""
    with session() as s:
        for seg in ops.list_all(s, list_name=list_name):
            typer.echo(json.dumps(seg, ensure_ascii=False) if as_json
                       else f"{seg['name']}\t{seg['list']}\t{seg['size']}\t{seg['expression']}")


@app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="The segment's name.")],
    as_json: Annotated[bool, typer.Option("--json", help="As JSON.")] = False,
) -> None:
    """A saved segment: its expression, and its size (the audience a campaign to it would have now)."""
    with session() as s:
        seg = ops.show(s, name=name)
    typer.echo(json.dumps(seg, ensure_ascii=False) if as_json else
               f"segment {seg['name']} of list {seg['list']}: {seg['expression']}\nsize: {seg['size']}")


@app.command("remove")
def remove(name: Annotated[str, typer.Argument(help="The segment's name.")]) -> None:
    """Forget a saved segment (campaigns already sent to it keep their expression)."""
    with session() as s:
        ops.remove(s, name=name)
    typer.echo(f"segment {name.strip()} removed")
