"""``newsletter webhooks``: outbound webhook endpoints and their delivery log
(``mailer.operations.webhooks``)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mailer.cli.common import session
from mailer.core.db import MAX_ID
from mailer.hooks import EventType
from mailer.operations import webhooks as ops

app = typer.Typer(help="Outbound webhooks: endpoints that hear of subscribes, unsubscribes, bounces, campaigns.",
                  no_args_is_help=True)
EndpointId = Annotated[int, typer.Argument(min=1, max=MAX_ID, help="The endpoint's id (see 'webhooks list').")]
EVENTS = ", ".join(t.value for t in EventType)


@app.command("add")
def add(
    url: Annotated[str, typer.Argument(help="Where to POST the events: an http:// or https:// URL.")],
    event: Annotated[list[str], typer.Option("--event", "-e", help=f"An event type (repeat for more): {EVENTS}; "
                                             "or the short name (subscribed, started...), or 'all'.")],
    description: Annotated[str, typer.Option(help="A note for whoever reads the list.")] = "",
    disabled: Annotated[bool, typer.Option("--disabled", help="Register it turned off.")] = False,
) -> None:
    """Register an endpoint; prints its signing secret (shown only now)."""
    with session() as s:
        shown = ops.describe(ops.add(s, url=url, events=event, description=description, enabled=not disabled),
                             with_secret=True)
    typer.echo(f"endpoint {shown['id']}: {shown['url']} ({', '.join(shown['events'])})"
               + ("; disabled" if disabled else ""))
    typer.echo(f"secret: {shown['secret']}  (verify the webhook-signature header with it; it is not shown again)")


@app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False) -> None:
    """The endpoints, with the event types each gets."""
    with session() as s:
        found = [ops.describe(e) for e in ops.endpoints(s)]
    if as_json:
        typer.echo(json.dumps(found))
        return
    if not found:
        typer.echo("no webhook endpoints")
    for e in found:
        typer.echo(f"{e['id']}  {'on ' if e['enabled'] else 'off'}  {e['url']}  {', '.join(e['events'])}"
                   + (f"  (previous secret valid until {e['previous_secret_valid_until']})"
                      if e["previous_secret_valid_until"] else "")
                   + (f"  - {e['description']}" if e["description"] else ""))


@app.command("remove")
def remove(endpoint_id: EndpointId) -> None:
    """Remove an endpoint and its delivery log."""
    with session() as s:
        ops.remove(s, endpoint_id=endpoint_id)
    typer.echo(f"endpoint {endpoint_id} removed")


@app.command("disable")
def disable(endpoint_id: EndpointId) -> None:
    """Stop sending to an endpoint (what waits for it is skipped)."""
    with session() as s:
        ops.set_enabled(s, endpoint_id=endpoint_id, enabled=False)
    typer.echo(f"endpoint {endpoint_id} disabled")


@app.command("enable")
def enable(endpoint_id: EndpointId) -> None:
    """Send to an endpoint again, from the next event on."""
    with session() as s:
        ops.set_enabled(s, endpoint_id=endpoint_id, enabled=True)
    typer.echo(f"endpoint {endpoint_id} enabled")


@app.command("rotate-secret")
def rotate_secret(
    endpoint_id: EndpointId,
    grace_hours: Annotated[float, typer.Option(min=0, max=720, help="How long the old secret keeps signing too.")]
    = ops.DEFAULT_GRACE_HOURS,
) -> None:
    """A new signing secret; messages carry both signatures during the grace period."""
    with session() as s:
        shown = ops.describe(ops.rotate_secret(s, endpoint_id=endpoint_id, grace_hours=grace_hours), with_secret=True)
    typer.echo(f"endpoint {endpoint_id}: new secret: {shown['secret']}")
    typer.echo(f"the previous one signs too until {shown['previous_secret_valid_until']}"
               if shown["previous_secret_valid_until"] else "the previous one no longer signs")


@app.command("deliveries")
def deliveries(
    endpoint: Annotated[int | None, typer.Option(min=1, max=MAX_ID, help="Only this endpoint's.")] = None,
    status: Annotated[str | None, typer.Option(help="pending, delivered, failed or skipped.")] = None,
    event: Annotated[str | None, typer.Option(help="Only this event type.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=ops.MAX_PAGE, help="How many, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (with each payload) for scripts.")] = False,
) -> None:
    """The delivery log: each event sent to each endpoint, its status and attempts."""
    with session() as s:
        page = ops.deliveries(s, endpoint_id=endpoint, status=status, event=event, limit=limit, with_payload=as_json)
    if as_json:
        typer.echo(json.dumps(page["items"]))
        return
    if not page["items"]:
        typer.echo("no webhook deliveries")
    for d in page["items"]:
        typer.echo(f"{d['id']}  {d['created_at'][:19]}  {d['event']}  → endpoint {d['endpoint_id']}  {d['status']}"
                   f"  attempts {d['attempts']}"
                   + (f"  last {d['last_code']}" if d["last_code"] is not None else "")
                   + (f"  {d['last_error']}" if d["last_error"] and d["status"] != "delivered" else "")
                   + (f"  next {d['next_attempt_at'][:19]}" if d["next_attempt_at"] else ""))


@app.command("redeliver")
def redeliver(delivery_id: Annotated[int, typer.Argument(min=1, max=MAX_ID, help="The delivery's id (see 'deliveries').")]
              ) -> None:
    """Send a failed or skipped delivery again (the same webhook-id, fresh attempts)."""
    with session() as s:
        d = ops.redeliver(s, delivery_id=delivery_id)
        event, endpoint = d.event_type, d.endpoint_id
    typer.echo(f"delivery {delivery_id} ({event} → endpoint {endpoint}) queued again")
