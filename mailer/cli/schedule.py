"""``newsletter schedule``: a list's weekly slot, and the coming weeks."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mailer.cli.common import session
from mailer.models import SlotOutcome
from mailer.operations import schedules as ops

app = typer.Typer(help="Weekly schedules of lists.", no_args_is_help=True)


@app.command("set")
def schedule_set(
    list_name: Annotated[str, typer.Option("--list", help="The list.")],
    day: Annotated[str, typer.Option("--day", help="Weekday, e.g. tuesday.")],
    at: Annotated[str, typer.Option("--time", help="Local time of day, HH:MM.")],
    tz: Annotated[str, typer.Option("--tz", help="IANA time zone, e.g. Asia/Shanghai.")],
) -> None:
    """Set a list's weekly slot (day, local time, time zone)."""
    with session() as s:
        view = ops.set_weekly_slot(s, list_name=list_name, weekday=day, time=at, tz=tz)
    sch = view["schedule"]
    typer.echo(f"{view['list']}: every {sch['weekday']} at {sch['local_time']} {sch['timezone']}")


@app.command("show")
def schedule_show(
    list_name: Annotated[str, typer.Option("--list", help="The list.")],
    weeks: Annotated[int, typer.Option("--weeks", min=1, max=104, help="How many weeks ahead.")] = 6,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """The coming weekly slots of a list and what goes out in each."""
    with session() as s:
        view = ops.schedule_view(s, list_name=list_name, weeks=weeks, require=True)
    rows = [{"slot_at": v["slot_at"], "campaign": v["campaign_id"], "issue": v["issue"], "status": v["status"]}
            for v in view["upcoming"]]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for r in rows:
        typer.echo(f"{r['slot_at']}  " + (f"campaign {r['campaign']} {r['issue']} ({r['status']})" if r["campaign"]
                                          else SlotOutcome.empty))
