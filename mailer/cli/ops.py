"""``newsletter doctor``: the sending domain's DNS and the relay's TLS, checked against
what this deployment sends (``mailer.doctor``)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Annotated, Optional

import typer

from mailer import doctor as checks
from mailer.cli.common import settings
from mailer.core.errors import ConfigurationError, ServiceUnavailable


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
