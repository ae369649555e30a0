"""What the provider webhook tests need, made here rather than borrowed: an RSA
certificate of our own served by a local HTTPS server (where an SNS SigningCertURL
points), SNS messages signed with its key the way SNS signs them, Mailgun's HMAC and
SendGrid's ECDSA signatures, and the web app served by uvicorn with the SNS
certificate source pointed at the local server."""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import hmac
import http.server
import ipaddress
import json
import re
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from tests.support.services import free_port

TOPIC = "arn:aws:sns:eu-west-1:123456789012:newsletter-bounces"
MAILGUN_KEY = "key-mailgun-signing-0123456789"
POSTMARK_AUTH = "postmark:hook-pass"


def rsa_certificate(folder: Path) -> tuple[rsa.RSAPrivateKey, Path, Path]:
    """A self-signed RSA-2048 certificate for 127.0.0.1: (key, cert path, key path)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.test.invalid")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "sns-cert.pem", folder / "sns-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return key, cert_path, key_path


@dataclass
class CertificateServer:
    """The local HTTPS server: serves the certificate at ``cert_url`` and records every
    path it is asked for (a SubscribeURL GET shows up there)."""

    key: rsa.RSAPrivateKey
    port: int
    context: ssl.SSLContext  # a client context that trusts the certificate
    requests: list[str] = field(default_factory=list)

    @property
    def cert_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/SimpleNotificationService-test.pem"

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def verifier(self):
        """The SNS certificate source the tests hand the app: this host, this CA."""
        from mailer.webhooks import SnsVerifier, fetch_https

        return SnsVerifier(host=re.compile(r"^127\.0\.0\.1$"),
                           fetch=lambda url: fetch_https(url, timeout=10, context=self.context))

    def sign_sns(self, doc: dict, *, version: str = "2") -> dict:
        """``doc`` with SigningCertURL, SignatureVersion and Signature, as SNS signs."""
        from mailer.webhooks import _SNS_FIELDS

        doc = {**doc, "SignatureVersion": version, "SigningCertURL": doc.get("SigningCertURL", self.cert_url)}
        signed = "".join(f"{k}\n{doc[k]}\n" for k in _SNS_FIELDS[doc["Type"]] if doc.get(k) is not None)
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = self.key.sign(signed.encode(), padding.PKCS1v15(), algorithm)
        return {**doc, "Signature": base64.b64encode(signature).decode()}


@contextlib.contextmanager
def certificate_server(folder: Path) -> Iterator[CertificateServer]:
    key, cert_path, key_path = rsa_certificate(folder)
    pem = cert_path.read_bytes()
    port = free_port()
    served = CertificateServer(key, port, ssl.create_default_context(cafile=str(cert_path)))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            served.requests.append(self.path)
            body = pem if self.path.endswith(".pem") else b"<ConfirmSubscriptionResponse/>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def sns_notification(message: dict, *, topic: str = TOPIC) -> dict:
    return {"Type": "Notification", "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324", "TopicArn": topic,
            "Message": json.dumps(message), "Timestamp": "2026-11-30T10:00:05.000Z",
            "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe"}


def mailgun_signed(event: dict, *, key: str = MAILGUN_KEY, timestamp: str | None = None) -> dict:
    timestamp = timestamp or str(int(time.time()))
    token = "e0b5477167110d68991efc6b9f89f0a11066af27834600e123"
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {"signature": {"timestamp": timestamp, "token": token, "signature": signature}, "event-data": event}


def sendgrid_keys() -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A P-256 key pair; the public half as SendGrid shows it (base64 DER)."""
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, base64.b64encode(der).decode()


def sendgrid_headers(key: ec.EllipticCurvePrivateKey, body: bytes, timestamp: str = "1764496805") -> dict:
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp, "Content-Type": "application/json"}


@contextlib.contextmanager
def serve(app, timeout: float = 15) -> Iterator[str]:
    """``app`` served by uvicorn in a thread on a free port; yields its URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
