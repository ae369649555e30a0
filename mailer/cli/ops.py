"""``newsletter doctor``: the sending domain's DNS and the relay's TLS, checked against
what this deployment sends (``mailer.doctor``); ``newsletter status``: the services,
the workers, beat and the campaigns in flight, as they are now (``mailer.health``)."""

from __future__ import annotations

import json
import ssl
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from mailer import health
from mailer.campaigns import campaigns_in_flight
from mailer.cli.common import settings
from mailer.core.clock import utcnow
from mailer.core.db import engine_for, transaction
from mailer.core.errors import ConfigurationError, ServiceUnavailable
from mailer.models import COUNTED
from mailer.operations import webhooks


def doctor(
    resolver: Annotated[Optional[str], typer.Option(
        "--resolver", help="The DNS server to ask, HOST or HOST:PORT (default: NEWSLETTER_DNS_RESOLVER, "
                           "else the system's).")] = None,
    mx_host: Annotated[Optional[str], typer.Option(
        "--mx-host", help="The host the bounce domain's MX should name in the records to publish "
                          "(default: NEWSLETTER_BASE_URL's host).")] = None,
    ca_file: Annotated[Optional[Path], typer.Option(
        "--ca-file", help="Trust this CA (PEM) for the relay's certificate, besides the system's.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, max=60, help="Seconds per DNS or SMTP answer.")] = 3.0,
) -> None:
    """Check SPF, DKIM, DMARC and MX of the sending and bounce domain, the alignment of
    From, DKIM d= and the envelope, and the relay's STARTTLS and certificate; print the
    records to publish for what is missing. Exit 2 when something fails, or when DNS
    does not answer (the records to publish are printed all the same)."""
    from mailer import doctor as checks  # dnspython: only this command needs it (~0.1 s)

    conf = settings()
    context = None
    if ca_file is not None:
        try:
            context = ssl.create_default_context()
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as err:
            raise ConfigurationError(f"--ca-file: cannot read {str(ca_file)!r}: {err}") from err
    report = checks.examine(conf, resolver=resolver or conf.dns_resolver, mx_host=mx_host, timeout=timeout,
                            tls_context=context)
    for f in report.findings:
        typer.echo(f"{f.state:4}  {f.name}: {f.detail}")
    if report.to_publish:
        typer.echo("records to publish:" if not report.offline else "records to publish (not checked):")
        for line in report.to_publish:
            typer.echo(f"  {line}")
    if report.offline:
        raise ServiceUnavailable(f"{report.offline}; the records above were not checked")
    failed = [f.name for f in report.findings if not f.ok]
    if failed:
        raise ConfigurationError(f"doctor: {len(failed)} problem(s): {', '.join(failed)}")


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    timeout: Annotated[Optional[float], typer.Option(
        "--timeout", min=0.1, max=60, help="Seconds to wait for each service and for the workers' answers "
                                           "(default: NEWSLETTER_HEALTH_TIMEOUT).")] = None,
) -> None:
    """The database, the broker and the relay (answering or not), the workers that answer
    a ping, when beat last ran its sweep and its dispatcher, the campaigns in flight, and
    the outbound webhooks waiting to go out (and given up).
    Exit 2 (one line) when a service does not answer or no worker does."""
    conf = settings()
    ready = health.readiness(conf, timeout=timeout)
    up = {c.service: c.ok for c in ready.checks}
    workers = health.workers_seen(conf, timeout=timeout) if up["broker"] else []
    beat = health.beat_last_runs(conf, timeout=timeout) if up["broker"] else dict.fromkeys(health.BEAT_TASKS)
    campaigns, hooks = [], None
    if up["database"]:
        with transaction(engine_for(conf.database)) as s:
            campaigns = [{"id": c.id, "status": c.status, "total": c.total,
                          **{str(state): getattr(c, state) for state in COUNTED}} for c in campaigns_in_flight(s)]
            hooks = webhooks.backlog(s)
    if as_json:
        typer.echo(json.dumps({"services": ready.as_dict(), "workers": workers,
                               "beat": {k: v.isoformat() if v else None for k, v in beat.items()},
                               "campaigns": campaigns,
                               "webhooks": hooks and {"waiting": hooks.waiting, "failed": hooks.failed,
                                                      "oldest_waiting": hooks.oldest_waiting and
                                                      hooks.oldest_waiting.isoformat()}}))
    else:
        for c in ready.checks:
            typer.echo(f"{c.service}: {c.detail}")
        typer.echo(f"workers: {', '.join(workers) if workers else 'none answered'}")
        for task, at in beat.items():
            typer.echo(f"beat {task}: {_ago(at) if at else 'never seen'}")
        for c in campaigns:
            counts = ", ".join(f"{c[state]} {state}" for state in COUNTED)
            typer.echo(f"campaign {c['id']}: {c['status']}, {sum(c[state] for state in COUNTED)} of {c['total']} "
                       f"done ({counts})")
        if not campaigns:
            typer.echo("campaigns in flight: none")
        if hooks is not None:
            oldest = f", the oldest written {_ago(hooks.oldest_waiting)}" if hooks.oldest_waiting else ""
            typer.echo(f"webhooks: {hooks.waiting} waiting{oldest}; {hooks.failed} given up")
    problems = [c.service for c in ready.down] + ([] if workers else ["no worker answered"])
    if problems:
        raise ServiceUnavailable(f"status: {', '.join(problems)}")


def _ago(at: datetime) -> str:
    seconds = max(0, int((utcnow() - at).total_seconds()))
    return f"{seconds} s ago ({at.replace(microsecond=0).isoformat()})"
