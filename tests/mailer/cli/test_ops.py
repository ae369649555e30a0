"""``newsletter doctor`` as an operator runs it: a real process against a DNS server on
loopback (its address from NEWSLETTER_DNS_RESOLVER or --resolver) and a relay with
STARTTLS; exit 0 when everything is right, 2 with one line and the records to publish
when not, or when no DNS answers."""

from __future__ import annotations

from tests.support.cli import assert_one_line_error, cli
from tests.support.dns import dns_server, right_zone
from tests.support.services import free_port


def test_doctor_passes_a_right_deployment(deployment, relay, monkeypatch):
    with dns_server(right_zone(deployment)) as where:
        monkeypatch.setenv("NEWSLETTER_DNS_RESOLVER", where)
        result = cli("doctor", "--ca-file", relay.cert_path, "--timeout", "2")
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["pass"] * 6
    assert "records to publish" not in result.stdout


def test_doctor_names_what_is_wrong_and_prints_the_record_to_publish(deployment, relay):
    zone = right_zone(deployment)
    zone.remove("_dmarc.example.com", "TXT")
    zone.remove("example.com", "MX")
    with dns_server(zone) as where:
        result = cli("doctor", "--resolver", where, "--ca-file", relay.cert_path, "--mx-host", "inbound.example.com")
    assert_one_line_error(result, "doctor: 2 problem(s): dmarc, mx")
    assert "fail  dmarc: _dmarc.example.com: no DMARC record" in result.stdout
    assert result.stdout.splitlines()[-3:] == [
        "records to publish:",
        '  _dmarc.example.com. IN TXT "v=DMARC1; p=none; rua=mailto:postmaster@example.com"',
        "  example.com. IN MX 10 inbound.example.com.",
    ]


def test_doctor_offline_is_one_line_and_still_prints_the_records(deployment, relay):
    result = cli("doctor", "--resolver", f"127.0.0.1:{free_port()}", "--timeout", "1", "--ca-file", relay.cert_path)
    line = assert_one_line_error(result, "DNS does not answer (127.0.0.1:", "the records above were not checked")
    assert line.startswith("error: ")
    assert "records to publish (not checked):" in result.stdout
    assert "s2026._domainkey.example.com. IN TXT" in result.stdout and "_dmarc.example.com. IN TXT" in result.stdout


def test_doctor_with_an_unreadable_ca_file_is_one_line(deployment, tmp_path):
    assert_one_line_error(cli("doctor", "--ca-file", tmp_path / "missing.pem"), "--ca-file: cannot read")
