"""``newsletter doctor``: is the sending domain's DNS what Gmail's and Yahoo's bulk-sender
rules need, and does the relay offer TLS? Each check reads the published records
(dnspython) and compares them with what this deployment sends:

- SPF (TXT at the From domain, which is also the VERP envelope domain): one
  ``v=spf1`` record that authorises the relay's addresses (ip4/ip6, a, mx and include
  followed, at most 10 lookups as RFC 7208 §4.6.4 allows);
- DKIM: the selector's TXT record holds the configured key's public key;
- DMARC: a ``v=DMARC1`` record at ``_dmarc.`` of the From domain;
- MX of the bounce domain (where VERP bounces and complaints come back);
- alignment: the From domain against DKIM ``d=`` and the envelope domain (relaxed:
  the same registered domain);
- the relay: STARTTLS offered (or implicit TLS) and a certificate that verifies.

For each record that fails, and for every record when DNS cannot be reached, the
record to publish, in zone-file form."""

from __future__ import annotations

import ipaddress
import smtplib
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import dns.exception
import dns.resolver

from mailer.core.config import Settings
from mailer.dkim import DkimSigner, load_private_key

SPF_LOOKUP_LIMIT = 10  # RFC 7208 §4.6.4


class DnsUnreachable(Exception):
    """No resolver answered: nothing can be checked."""


@dataclass(frozen=True)
class Finding:
    name: str  # spf, dkim, dmarc, mx, alignment, relay-tls
    ok: bool
    detail: str
    publish: tuple[str, ...] = ()  # zone-file lines that would fix it

    @property
    def state(self) -> str:
        return "pass" if self.ok else "fail"


@dataclass(frozen=True)
class Report:
    findings: tuple[Finding, ...]
    offline: str = ""  # why DNS could not be asked ('' when it could)
    records: tuple[str, ...] = ()  # every record this deployment needs

    @property
    def ok(self) -> bool:
        return not self.offline and all(f.ok for f in self.findings)

    @property
    def to_publish(self) -> tuple[str, ...]:
        if self.offline:
            return self.records
        return tuple(line for f in self.findings if not f.ok for line in f.publish)


class Lookup:
    """TXT, MX, A and AAAA answers from one resolver (``host[:port]``, or the system's)."""

    def __init__(self, resolver: str | None = None, timeout: float = 3.0):
        self.resolver = dns.resolver.Resolver(configure=resolver is None)
        if resolver:
            host, _, port = resolver.rpartition(":") if resolver.count(":") == 1 else (resolver, "", "")
            self.resolver.nameservers = [host or resolver]
            self.resolver.port = int(port) if port else 53
        self.resolver.lifetime = timeout
        self.resolver.timeout = timeout
        self.where = resolver or ", ".join(self.resolver.nameservers) or "the system resolver"

    def _answer(self, name: str, rdtype: str):
        try:
            return list(self.resolver.resolve(name, rdtype, search=False))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.resolver.NoNameservers, dns.exception.Timeout, OSError) as err:
            raise DnsUnreachable(f"DNS does not answer ({self.where}): {' '.join(str(err).split())[:160]}") from err

    def txt(self, name: str) -> list[str]:
        return [b"".join(r.strings).decode("utf-8", "replace") for r in self._answer(name, "TXT")]

    def mx(self, name: str) -> list[str]:
        return [str(r.exchange).rstrip(".") for r in self._answer(name, "MX")]

    def addresses(self, name: str) -> list[str]:
        return [r.address for rdtype in ("A", "AAAA") for r in self._answer(name, rdtype)]


# --- what this deployment needs published ---------------------------------------------

def _txt(name: str, value: str) -> str:
    """A zone-file TXT line, split into 255-character strings (RFC 1035 §3.3.14)."""
    parts = " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))
    return f"{name}. IN TXT {parts}"


def signer_of(settings: Settings) -> DkimSigner | None:
    if not (settings.dkim_selector and settings.dkim_domain and settings.dkim_private_key):
        return None
    return DkimSigner(settings.dkim_selector, settings.dkim_domain, load_private_key(settings.dkim_private_key))


def relay_host(settings: Settings) -> str | None:
    return urlsplit(settings.smtp_url).hostname if settings.smtp_url else None


def spf_record(relay_ips: list[str], relay: str | None = None) -> str:
    """Authorise the relay by its addresses (or, when they are not known, its name)."""
    mechanisms = [f"ip6:{ip}" if ":" in ip else f"ip4:{ip}" for ip in relay_ips]
    if not mechanisms:
        mechanisms = [f"a:{relay}"] if relay else ["mx"]
    return "v=spf1 " + " ".join(mechanisms) + " ~all"


def dmarc_record(domain: str) -> str:
    return f"v=DMARC1; p=none; rua=mailto:postmaster@{domain}"


def mx_line(domain: str, mx_host: str) -> str:
    return f"{domain}. IN MX 10 {mx_host}."


def _registered(domain: str) -> str:
    # Relaxed alignment compares organisational domains; the last two labels stand in
    # for the public-suffix lookup (wrong for example.co.uk, which then looks stricter).
    return ".".join(domain.lower().rstrip(".").split(".")[-2:])


# --- the checks --------------------------------------------------------------------

def _spf_authorises(lookup: Lookup, domain: str, ips: set, seen: list[str]) -> bool:
    """Whether the SPF record of ``domain`` (following include/redirect) has a
    mechanism matching any of ``ips``; ``seen`` counts the lookups."""
    records = [r for r in lookup.txt(domain) if r.lower().startswith("v=spf1")]
    if len(records) != 1:
        return False
    terms = records[0].split()[1:]
    for term in terms:
        mech = term.lstrip("+?~-").lower()
        if term.startswith(("-", "~", "?")):
            continue  # a mechanism that does not pass
        kind, _, arg = mech.partition(":")
        arg = arg.split("/")[0] if kind in ("a", "mx") else arg
        if kind == "all":
            return True  # "+all" lets anyone send: it authorises the relay too (and everyone else)
        if kind in ("ip4", "ip6"):
            try:
                network = ipaddress.ip_network(arg, strict=False)
            except ValueError:
                continue  # a broken mechanism matches nothing
            if any(ip in network for ip in ips if ip.version == network.version):
                return True
            continue
        if kind in ("a", "mx", "include") or kind.startswith("redirect="):
            seen.append(term)
            if len(seen) > SPF_LOOKUP_LIMIT:
                return False
        if kind == "a" and {ipaddress.ip_address(a) for a in lookup.addresses(arg or domain)} & ips:
            return True
        if kind == "mx" and any({ipaddress.ip_address(a) for a in lookup.addresses(host)} & ips
                                for host in lookup.mx(arg or domain)):
            return True
        if kind == "include" and arg and _spf_authorises(lookup, arg, ips, seen):
            return True
        if kind.startswith("redirect="):
            return _spf_authorises(lookup, kind.partition("=")[2], ips, seen)
    return False


def _with_relay(record: str, relay_ips: list[str]) -> str:
    """The published record with the relay's addresses added before its ``all``."""
    terms = record.split()
    added = spf_record(relay_ips).split()[1:-1]
    at = next((i for i, t in enumerate(terms) if t.lstrip("+?~-").lower() in ("all",) or t.startswith("redirect=")),
              len(terms))
    return " ".join(terms[:at] + added + terms[at:])


def check_spf(lookup: Lookup, domain: str, relay_ips: list[str]) -> Finding:
    records = [r for r in lookup.txt(domain) if r.lower().startswith("v=spf1")]
    publish = (_txt(domain, spf_record(relay_ips)),)
    if not records:
        return Finding("spf", False, f"{domain}: no SPF record", publish)
    if len(records) > 1:
        return Finding("spf", False, f"{domain}: {len(records)} SPF records (RFC 7208 allows one): "
                       + " | ".join(records), publish)
    if relay_ips:
        ips = {ipaddress.ip_address(ip) for ip in relay_ips}
        if not _spf_authorises(lookup, domain, ips, []):
            return Finding("spf", False, f"{domain}: {records[0]!r} does not authorise the relay "
                           f"({', '.join(relay_ips)})", (_txt(domain, _with_relay(records[0], relay_ips)),))
    return Finding("spf", True, f"{domain}: {records[0]}")


def check_dkim(lookup: Lookup, signer: DkimSigner | None) -> Finding:
    if signer is None:
        return Finding("dkim", False, "no DKIM key configured (NEWSLETTER_DKIM_SELECTOR, _DOMAIN, _PRIVATE_KEY): "
                       "Gmail and Yahoo require DKIM")
    publish = (_txt(signer.record_name, signer.dns_record),)
    want = _tags(signer.dns_record).get("p")
    found = [r for r in lookup.txt(signer.record_name) if "p=" in r]
    if not found:
        return Finding("dkim", False, f"{signer.record_name}: no DKIM record", publish)
    if not any(_tags(r).get("p") == want for r in found):
        return Finding("dkim", False, f"{signer.record_name}: the published key is not the configured key "
                       "(NEWSLETTER_DKIM_PRIVATE_KEY)", publish)
    return Finding("dkim", True, f"{signer.record_name}: the configured key")


def _tags(record: str) -> dict[str, str]:
    return {k.strip().lower(): "".join(v.split()) for k, _, v in
            (t.partition("=") for t in record.split(";")) if k.strip()}


def check_dmarc(lookup: Lookup, domain: str) -> Finding:
    name = f"_dmarc.{domain}"
    found = [r for r in lookup.txt(name) if r.replace(" ", "").lower().startswith("v=dmarc1")]
    if not found:
        return Finding("dmarc", False, f"{name}: no DMARC record", (_txt(name, dmarc_record(domain)),))
    return Finding("dmarc", True, f"{name}: {found[0]}")


def check_mx(lookup: Lookup, domain: str, mx_host: str) -> Finding:
    found = lookup.mx(domain)
    if not found:
        return Finding("mx", False, f"{domain}: no MX record: bounces and complaints to the VERP address have "
                       "nowhere to go", (mx_line(domain, mx_host),))
    return Finding("mx", True, f"{domain}: {', '.join(found)}")


def check_alignment(from_domain: str, dkim_domain: str | None, envelope_domain: str) -> Finding:
    problems = []
    if dkim_domain and _registered(dkim_domain) != _registered(from_domain):
        problems.append(f"DKIM d={dkim_domain} is not aligned with the From domain {from_domain}")
    if _registered(envelope_domain) != _registered(from_domain):
        problems.append(f"the envelope domain {envelope_domain} is not aligned with the From domain {from_domain}")
    if problems:
        return Finding("alignment", False, "; ".join(problems) + ": DMARC fails unless one of them aligns; set "
                       "NEWSLETTER_DKIM_DOMAIN (or NEWSLETTER_FROM) to the same domain")
    aligned = ", ".join(x for x in (f"DKIM d={dkim_domain}" if dkim_domain else "",
                                    f"envelope {envelope_domain}") if x)
    return Finding("alignment", True, f"From {from_domain} aligned with {aligned}")


def check_relay_tls(smtp_url: str | None, timeout: float, context: ssl.SSLContext | None = None) -> Finding:
    if not smtp_url:
        return Finding("relay-tls", False, "no relay (NEWSLETTER_SMTP_URL): messages go to the outbox folder")
    parts = urlsplit(smtp_url)
    host = parts.hostname or ""
    port = parts.port or {"smtps": 465, "smtp+starttls": 587}.get(parts.scheme, 25)
    context = context or ssl.create_default_context()
    try:
        if parts.scheme == "smtps":
            conn = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        else:
            conn = smtplib.SMTP(host, port, timeout=timeout)
            conn.ehlo()
            if not conn.has_extn("starttls"):
                conn.close()
                return Finding("relay-tls", False, f"{host}:{port} does not offer STARTTLS: messages cross the "
                               "network in the clear")
            conn.starttls(context=context)
        cert = conn.sock.getpeercert() if conn.sock else None
        conn.close()
    except ssl.SSLCertVerificationError as err:
        return Finding("relay-tls", False, f"{host}:{port}: the certificate does not verify: "
                       f"{err.verify_message or err}")
    except (OSError, smtplib.SMTPException) as err:
        return Finding("relay-tls", False, f"{host}:{port}: cannot check TLS: {' '.join(str(err).split())}")
    subject = dict(x[0] for x in (cert or {}).get("subject", ()))
    how = "implicit TLS" if parts.scheme == "smtps" else "STARTTLS"
    return Finding("relay-tls", True, f"{host}:{port}: {how}, certificate valid for {subject.get('commonName', host)}")


def _relay_ips(lookup: Lookup, host: str | None) -> list[str]:
    return _literal_ip(host) or (lookup.addresses(host) if host else [])


def examine(settings: Settings, *, resolver: str | None = None, mx_host: str | None = None, timeout: float = 3.0,
            tls_context: ssl.SSLContext | None = None) -> Report:
    domain = settings.sending_domain.lower()
    signer = signer_of(settings)
    mx_host = mx_host or urlsplit(settings.base_url).hostname or f"mx.{domain}"
    lookup = Lookup(resolver, timeout)
    host = relay_host(settings)
    tls = check_relay_tls(settings.smtp_url, timeout, tls_context)
    alignment = check_alignment(domain, signer.domain if signer else None, domain)
    offline_records = [_txt(domain, spf_record(_literal_ip(host), host)),
                       _txt(f"_dmarc.{domain}", dmarc_record(domain)), mx_line(domain, mx_host)]
    if signer:
        offline_records.insert(1, _txt(signer.record_name, signer.dns_record))
    try:
        relay_ips = _relay_ips(lookup, host)
        findings = (check_spf(lookup, domain, relay_ips), check_dkim(lookup, signer), check_dmarc(lookup, domain),
                    check_mx(lookup, domain, mx_host), alignment, tls)
    except DnsUnreachable as err:
        return Report((alignment, tls), offline=str(err), records=tuple(offline_records))
    return Report(findings, records=tuple(offline_records))


def _literal_ip(host: str | None) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))] if host else []
    except ValueError:
        return []
