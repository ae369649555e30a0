"""A real DNS server (dnslib) on loopback for the tests of ``newsletter doctor``: UDP and
TCP on one free port, answering from a dict of records the test can change; and the
deployment those tests check (a DKIM key, a relay with STARTTLS), as fixtures (load as a
pytest plugin)."""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dnslib import MX, QTYPE, RCODE, RR, TXT, A
from dnslib.server import BaseResolver, DNSServer

from mailer.core.config import get_settings
from mailer.dkim import DkimSigner, load_private_key
from tests.support.smtpd import SmtpSink, stop_quietly


def free_udp_tcp_port() -> int:
    """A port free for both UDP and TCP."""
    while True:
        with socket.socket() as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port


class Zone(BaseResolver):
    """``records``: {(name, "TXT"|"MX"|"A"): [values]}; a TXT value is a str (split into
    255-byte strings as a zone file would) and an MX value is "pref host"."""

    def __init__(self):
        self.records: dict[tuple[str, str], list[str]] = {}

    def add(self, name: str, rdtype: str, *values: str) -> None:
        self.records.setdefault((name.rstrip(".").lower(), rdtype), []).extend(values)

    def remove(self, name: str, rdtype: str) -> None:
        self.records.pop((name.rstrip(".").lower(), rdtype), None)

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        rdtype = QTYPE[request.q.qtype]
        for value in self.records.get((name, rdtype), []):
            if rdtype == "TXT":
                rdata = TXT([value[i:i + 255].encode() for i in range(0, len(value), 255)])
            elif rdtype == "MX":
                pref, host = value.split()
                rdata = MX(host, int(pref))
            else:
                rdata = A(value)
            reply.add_answer(RR(request.q.qname, getattr(QTYPE, rdtype), rdata=rdata, ttl=60))
        if not any(n == name for n, _ in self.records):
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


class _Quiet:
    def log_recv(self, *a): pass
    def log_send(self, *a): pass
    def log_request(self, *a): pass
    def log_reply(self, *a): pass
    def log_truncated(self, *a): pass
    def log_error(self, *a): pass
    def log_data(self, *a): pass


@contextmanager
def dns_server(zone: Zone):
    """Serve ``zone`` on 127.0.0.1:<free port>; yields "127.0.0.1:port"."""
    port = free_udp_tcp_port()
    servers = [DNSServer(zone, address="127.0.0.1", port=port, tcp=tcp, logger=_Quiet()) for tcp in (False, True)]
    for server in servers:
        server.start_thread()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        for server in servers:
            server.stop()
            server.server.server_close()


def rsa_pem(path) -> str:
    """A new 2048-bit RSA private key, written as PEM to ``path``; returns the path."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return str(path)


@pytest.fixture
def relay(tmp_path):
    """An SMTP relay offering STARTTLS with a certificate of its own (``cert_path``)."""
    sink = SmtpSink(tls="starttls", cert_folder=tmp_path).start()
    try:
        yield sink
    finally:
        stop_quietly(sink)


@pytest.fixture
def deployment(monkeypatch, tmp_path, relay):
    """Settings of a deployment sending as news@example.com through the relay, signing
    with selector s2026 of example.com."""
    for key in list(os.environ):
        if key.startswith("NEWSLETTER_"):
            monkeypatch.delenv(key)
    env = {"VAR_DIR": str(tmp_path / "var"), "FROM": "Weekly <news@example.com>",
           "BASE_URL": "https://news.example.com", "SMTP_URL": f"smtp+starttls://127.0.0.1:{relay.port}",
           "DKIM_SELECTOR": "s2026", "DKIM_DOMAIN": "example.com", "DKIM_PRIVATE_KEY": rsa_pem(tmp_path / "dkim.pem")}
    for key, value in env.items():
        monkeypatch.setenv(f"NEWSLETTER_{key}", value)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def signer(settings) -> DkimSigner:
    return DkimSigner(settings.dkim_selector, settings.dkim_domain, load_private_key(settings.dkim_private_key))


def right_zone(settings) -> Zone:
    zone = Zone()
    zone.add("example.com", "TXT", "v=spf1 ip4:127.0.0.1 -all", "google-site-verification=abc")
    zone.add("example.com", "MX", "10 mx.example.com")
    zone.add("_dmarc.example.com", "TXT", "v=DMARC1; p=quarantine; rua=mailto:dmarc@example.com")
    found = signer(settings)
    zone.add(found.record_name, "TXT", found.dns_record)
    return zone
