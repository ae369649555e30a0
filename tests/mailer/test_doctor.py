"""``mailer.doctor`` against a real DNS server on loopback (dnslib) and a real relay
(aiosmtpd, with STARTTLS and a certificate of its own): every right record passes, each
wrong one is named with the record to publish, and with no DNS it says so and still
gives every record."""

from __future__ import annotations

import ssl

import pytest

from mailer import doctor
from mailer.core.config import get_settings
from mailer.dkim import DkimSigner, load_private_key
from tests.support.dns import Zone, dns_server, right_zone, rsa_pem, signer
from tests.support.services import free_port
from tests.support.smtpd import SmtpSink, stop_quietly


def examine(settings, zone: Zone, relay: SmtpSink | None = None, **kw) -> doctor.Report:
    context = ssl.create_default_context(cafile=str(relay.cert_path)) if relay else None
    with dns_server(zone) as where:
        return doctor.examine(settings, resolver=where, timeout=2, tls_context=context, **kw)


def states(report: doctor.Report) -> dict[str, str]:
    return {f.name: f.state for f in report.findings}


def finding(report: doctor.Report, name: str) -> doctor.Finding:
    return next(f for f in report.findings if f.name == name)


def test_every_right_record_passes(deployment, relay):
    report = examine(deployment, right_zone(deployment), relay)
    assert states(report) == dict.fromkeys(("spf", "dkim", "dmarc", "mx", "alignment", "relay-tls"), "pass"), \
        [f.detail for f in report.findings]
    assert report.ok and report.to_publish == ()
    assert "STARTTLS, certificate valid" in finding(report, "relay-tls").detail


def test_a_missing_dmarc_record_is_named_with_the_record_to_publish(deployment, relay):
    zone = right_zone(deployment)
    zone.remove("_dmarc.example.com", "TXT")
    report = examine(deployment, zone, relay)
    assert [f.name for f in report.findings if not f.ok] == ["dmarc"]
    assert finding(report, "dmarc").detail == "_dmarc.example.com: no DMARC record"
    assert report.to_publish == ('_dmarc.example.com. IN TXT "v=DMARC1; p=none; rua=mailto:postmaster@example.com"',)


def test_spf_without_the_relay_is_named_with_the_record_that_adds_it(deployment, relay):
    zone = right_zone(deployment)
    zone.remove("example.com", "TXT")
    zone.add("example.com", "TXT", "v=spf1 ip4:192.0.2.0/24 include:_spf.example.net -all")
    zone.add("_spf.example.net", "TXT", "v=spf1 ip4:198.51.100.7 -all")
    report = examine(deployment, zone, relay)
    assert [f.name for f in report.findings if not f.ok] == ["spf"]
    assert "does not authorise the relay (127.0.0.1)" in finding(report, "spf").detail
    assert report.to_publish == ('example.com. IN TXT "v=spf1 ip4:192.0.2.0/24 include:_spf.example.net '
                                 'ip4:127.0.0.1 -all"',)


@pytest.mark.parametrize("record", ["v=spf1 include:_spf.example.net -all", "v=spf1 a:relay.example.net ~all",
                                    "v=spf1 mx -all", "v=spf1 ip4:127.0.0.0/8 -all"])
def test_spf_that_authorises_the_relay_through_include_a_mx_or_a_network_passes(deployment, relay, record):
    zone = right_zone(deployment)
    zone.remove("example.com", "TXT")
    zone.add("example.com", "TXT", record)
    zone.add("_spf.example.net", "TXT", "v=spf1 ip4:127.0.0.1 -all")
    zone.add("relay.example.net", "A", "127.0.0.1")
    zone.add("mx.example.com", "A", "127.0.0.1")
    assert finding(examine(deployment, zone, relay), "spf").state == "pass"


def test_two_spf_records_fail(deployment, relay):
    zone = right_zone(deployment)
    zone.add("example.com", "TXT", "v=spf1 -all")
    assert "2 SPF records" in finding(examine(deployment, zone, relay), "spf").detail


def test_a_dkim_record_of_another_key_is_a_mismatch_with_the_right_record_to_publish(deployment, relay, tmp_path):
    zone = right_zone(deployment)
    name = signer(deployment).record_name
    zone.remove(name, "TXT")
    other = DkimSigner("s2026", "example.com", load_private_key(rsa_pem(tmp_path / "other.pem")))
    zone.add(name, "TXT", other.dns_record)
    report = examine(deployment, zone, relay)
    assert [f.name for f in report.findings if not f.ok] == ["dkim"]
    assert "the published key is not the configured key" in finding(report, "dkim").detail
    (line,) = report.to_publish
    assert line.startswith(f"{name}. IN TXT ")
    assert "".join(line.partition(" IN TXT ")[2].replace('" "', "").strip('"').split()) == \
        "".join(signer(deployment).dns_record.split())


def test_a_from_domain_not_aligned_with_dkim_d_is_named(deployment, relay, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_DKIM_DOMAIN", "other.org")
    get_settings.cache_clear()
    settings = get_settings()
    zone = right_zone(deployment)
    found = signer(settings)
    zone.add(found.record_name, "TXT", found.dns_record)
    report = examine(settings, zone, relay)
    assert [f.name for f in report.findings if not f.ok] == ["alignment"]
    assert "DKIM d=other.org is not aligned with the From domain example.com" in finding(report, "alignment").detail


def test_a_relay_without_starttls_or_with_a_certificate_nobody_signed_fails(deployment, monkeypatch, relay):
    report = examine(deployment, right_zone(deployment))  # the system's CAs do not know the relay's certificate
    assert "the certificate does not verify" in finding(report, "relay-tls").detail
    plain = SmtpSink().start()
    try:
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", plain.url)
        get_settings.cache_clear()
        report = examine(get_settings(), right_zone(deployment))
    finally:
        stop_quietly(plain)
    assert finding(report, "relay-tls").detail == f"127.0.0.1:{plain.port} does not offer STARTTLS: messages " \
                                                  "cross the network in the clear"


def test_with_no_dns_it_says_so_and_gives_every_record(deployment, relay):
    report = doctor.examine(deployment, resolver=f"127.0.0.1:{free_port()}", timeout=1,
                            tls_context=ssl.create_default_context(cafile=str(relay.cert_path)))
    assert not report.ok and report.offline.startswith("DNS does not answer (127.0.0.1:")
    published = "\n".join(report.to_publish)
    assert 'example.com. IN TXT "v=spf1 ip4:127.0.0.1 ~all"' in published
    assert f"{signer(deployment).record_name}. IN TXT " in published
    assert "_dmarc.example.com. IN TXT" in published and "example.com. IN MX 10 news.example.com." in published
