"""A real SMTP server (aiosmtpd) for functional tests, and the ``smtp_sink`` fixture.

Load as a pytest plugin (``pytest_plugins = ["tests.support.smtpd"]``). The sink listens on
127.0.0.1 on a free port, keeps every message it accepts, and can be told to refuse a
recipient, to be slow, to require AUTH, to offer STARTTLS or implicit TLS, or to go away
and come back on the same port. aiosmtpd takes about 350 msg/s (FACTS.md): right for
checking behaviour, too slow to measure throughput against.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
import tempfile
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

USER, PASSWORD = "sender", "s3cret pass/word"
# AUTH without TLS is on purpose here (a loopback test server); aiosmtpd warns on every connection.
warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS", module="aiosmtpd")


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    session: int  # which connection brought it (1, 2, ...)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 and localhost (cert path, key path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "sink-cert.pem", folder / "sink-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class _Handler:
    def __init__(self, sink: "SmtpSink"):
        self.sink = sink

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.sink.pipelining:  # RFC 2920; aiosmtpd reads pipelined commands in order anyway
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        # Sessions are counted at their first MAIL: the controller's own start-up probe
        # connects without sending anything, and STARTTLS must not count twice.
        if not getattr(server, "_sink_session", 0):
            with self.sink._lock:
                self.sink.sessions += 1
                server._sink_session = self.sink.sessions
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.sink._lock:
            self.sink.rcpt_times.append(time.monotonic())
        if self.sink.refuse_all is not None:
            code, text = self.sink.refuse_all
            if code == 421:  # RFC 5321 §3.8: "closing transmission channel"
                server.transport.close()
            return f"{code} {text}"
        reply = self.sink.reject.get(address)
        if reply is not None:
            code, text = reply
            return f"{code} {text}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.sink.in_flight += 1
        self.sink.max_in_flight = max(self.sink.max_in_flight, self.sink.in_flight)
        try:
            if self.sink.delay:
                await asyncio.sleep(self.sink.delay)
        finally:
            self.sink.in_flight -= 1
        if self.sink.drop_after_data:
            # The message arrived but the reply never does: "delivery unknown" for the client.
            server.transport.close()
            return "250 never sent"
        content = envelope.original_content or envelope.content
        with self.sink._lock:
            self.sink.messages.append(
                Received(envelope.mail_from, tuple(envelope.rcpt_tos), bytes(content), getattr(server, "_sink_session", 0))
            )
        return "250 2.0.0 OK queued"


def _authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)  # False: aiosmtpd answers 535 itself


class SmtpSink:
    """``messages`` (thread-safe list of ``Received``), ``sessions`` (connections that sent
    MAIL), ``reject`` (recipient -> (code, text) answered at RCPT), ``refuse_all`` ((code,
    text) answered to every RCPT while set: a relay throttling everyone), ``rcpt_times``
    (when each RCPT came), ``delay`` (seconds per message), ``drop_after_data`` (close
    without replying to the message)."""

    def __init__(
        self,
        *,
        auth: bool = False,
        tls: Literal[None, "starttls", "smtps"] = None,
        port: int | None = None,
        cert_folder: Path | None = None,
        pipelining: bool = True,
    ):
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.auth = auth
        self.tls = tls
        self.messages: list[Received] = []
        self.sessions = 0
        self.reject: dict[str, tuple[int, str]] = {}
        self.refuse_all: tuple[int, str] | None = None
        self.pipelining = pipelining  # offered in EHLO, as Postfix and every big relay do
        self.rcpt_times: list[float] = []
        self.delay = 0.0
        self.in_flight = 0  # messages being received right now (over all connections)
        self.max_in_flight = 0
        self.drop_after_data = False
        self._lock = threading.Lock()
        self._controller: Controller | None = None
        self.cert_path: Path | None = None
        self._server_context: ssl.SSLContext | None = None
        if tls:
            folder = cert_folder or Path(tempfile.mkdtemp(prefix="smtp-sink-"))
            self.cert_path, key_path = self_signed_cert(folder)
            self._server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._server_context.load_cert_chain(self.cert_path, key_path)

    @property
    def url(self) -> str:
        scheme = {None: "smtp", "starttls": "smtp+starttls", "smtps": "smtps"}[self.tls]
        user = f"{USER}:{PASSWORD.replace(' ', '%20').replace('/', '%2F')}@" if self.auth else ""
        return f"{scheme}://{user}{self.host}:{self.port}"

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this sink's certificate (and checks the host name)."""
        assert self.cert_path, "the sink has no TLS"
        return ssl.create_default_context(cafile=str(self.cert_path))

    def start(self) -> "SmtpSink":
        """Listen (again) on the same port."""
        if self._controller is not None:
            return self
        kwargs: dict = {}
        if self.tls == "starttls":
            kwargs.update(tls_context=self._server_context, require_starttls=False)
        if self.auth:
            kwargs.update(authenticator=_authenticator, auth_require_tls=False, auth_required=True)
        controller = Controller(
            _Handler(self),
            hostname=self.host,
            port=self.port,
            ssl_context=self._server_context if self.tls == "smtps" else None,
            server_hostname="localhost",
            ready_timeout=10.0,
            **kwargs,
        )
        # The port was just released by stop(); the kernel may need a moment.
        deadline = time.monotonic() + 10
        while True:
            try:
                controller.start()
                break
            except (OSError, RuntimeError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self._controller = controller
        return self

    def stop(self) -> None:
        """Stop listening and drop every open connection."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    @property
    def running(self) -> bool:
        return self._controller is not None

    def count_by_rcpt(self) -> Counter:
        with self._lock:
            return Counter(r for m in self.messages for r in m.rcpt_tos)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait until at least ``count`` messages arrived; return them."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        with self._lock:
            return list(self.messages)

    def __enter__(self) -> "SmtpSink":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def pytest_configure(config):
    config.addinivalue_line("filterwarnings", "ignore:Requiring AUTH while not requiring TLS:UserWarning")


@pytest.fixture
def smtp_sink():
    """A started plain SMTP sink on a free port, stopped after the test."""
    sink = SmtpSink().start()
    try:
        yield sink
    finally:
        stop_quietly(sink)


def stop_quietly(sink: SmtpSink, timeout: float = 10) -> None:
    """Stop a sink without letting a stuck server thread hang the test."""
    stopper = threading.Thread(target=sink.stop, daemon=True)
    stopper.start()
    stopper.join(timeout=timeout)
