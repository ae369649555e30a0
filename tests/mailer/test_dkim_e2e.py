"""DKIM end to end: with the NEWSLETTER_DKIM_* settings set, every message the engine
hands to a real SMTP server passes dkimpy's ``dkim.verify``, and the signature covers
the headers RFC 8058 and the mailbox providers ask for (FACTS.md)."""

from __future__ import annotations

import base64
import email
import email.policy
import re

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import text

from mailer.core.config import get_settings
from mailer.core.db import make_engine, transaction
from mailer.dispatch import engine_config
from mailer.sending import drain
from mailer.transports.smtp import SmtpTransport
from tests.support.seed import seed_campaign

pytestmark = pytest.mark.timeout(120)

SELECTOR, DOMAIN = "nl2026", "example.com"
MUST_BE_SIGNED = {"from", "to", "subject", "date", "message-id", "list-unsubscribe", "list-unsubscribe-post",
                  "list-id", "feedback-id"}


@pytest.fixture(scope="module")
def key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def dkim_settings(settings, monkeypatch, tmp_path, key):
    pem_path = tmp_path / "dkim.pem"
    pem_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    monkeypatch.setenv("NEWSLETTER_DKIM_SELECTOR", SELECTOR)
    monkeypatch.setenv("NEWSLETTER_DKIM_DOMAIN", DOMAIN)
    monkeypatch.setenv("NEWSLETTER_DKIM_PRIVATE_KEY", str(pem_path))
    get_settings.cache_clear()
    return get_settings()


def dns_for(key):
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode() else None

    return lookup


def signed_header_names(message: bytes) -> set[str]:
    msg = email.message_from_bytes(message, policy=email.policy.compat32)
    tags = "".join(msg["DKIM-Signature"].split())
    h = re.search(r"(?:^|;)h=([^;]+)", tags).group(1)
    return {name.lower() for name in h.split(":")}


def test_engine_messages_pass_dkim_verify_and_sign_the_list_headers(dkim_settings, smtp_sink, key):
    """Every message verifies and goes to its own recipient; one that cannot be built (a
    non-ASCII address, in the middle of a window) fails alone."""
    cfg = engine_config(dkim_settings)
    assert cfg.signers, "the DKIM settings build a signer"
    engine = make_engine(dkim_settings.database)
    try:
        cid = seed_campaign(engine, 13, batch_size=5)
        with transaction(engine) as s:
            s.execute(text("UPDATE subscriber SET email = 'josé@example.com' WHERE email = 'reader000007@example.com'"))
        drain(engine, cid, transport=SmtpTransport.from_url(f"smtp://127.0.0.1:{smtp_sink.port}", timeout=10),
              cfg=cfg)
        with transaction(engine) as s:
            failed = s.execute(text("SELECT d.last_reply FROM delivery d JOIN subscriber s ON s.id = d.subscriber_id "
                                    "WHERE d.status = 'failed'")).scalars().all()
    finally:
        engine.dispose()
    assert len(failed) == 1 and "not a plain ASCII address" in failed[0]
    assert len(smtp_sink.messages) == 12
    lookup = dns_for(key)
    for received in smtp_sink.messages:
        assert dkim.verify(received.content, dnsfunc=lookup), received.rcpt_tos
        to = email.message_from_bytes(received.content, policy=email.policy.default)["To"].addresses[0].addr_spec
        assert [to] == list(received.rcpt_tos)
        assert MUST_BE_SIGNED <= signed_header_names(received.content)
    # A changed List-Unsubscribe (the header RFC 8058 §4 needs covered) breaks the signature.
    tampered = smtp_sink.messages[0].content.replace(b"List-Unsubscribe: <https://", b"List-Unsubscribe: <http://", 1)
    assert tampered != smtp_sink.messages[0].content
    assert not dkim.verify(tampered, dnsfunc=lookup)


def test_engine_messages_with_ed25519_next_to_rsa_carry_two_signatures_that_verify(dkim_settings, smtp_sink, key,
                                                                                   monkeypatch, tmp_path):
    """RFC 8463 dual signing through the engine: each message gets an Ed25519 signature
    on top of the RSA one (both made from the same header section), and dkimpy checks
    each."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    ed = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "ed.pem").write_bytes(ed.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    monkeypatch.setenv("NEWSLETTER_DKIM_ED25519_SELECTOR", "ed2026")
    monkeypatch.setenv("NEWSLETTER_DKIM_ED25519_PRIVATE_KEY", str(tmp_path / "ed.pem"))
    get_settings.cache_clear()
    cfg = engine_config(get_settings())
    assert len(cfg.signers) == 2
    engine = make_engine(dkim_settings.database)
    try:
        cid = seed_campaign(engine, 6, batch_size=4)
        drain(engine, cid, transport=SmtpTransport.from_url(f"smtp://127.0.0.1:{smtp_sink.port}", timeout=10),
              cfg=cfg)
    finally:
        engine.dispose()
    raw = ed.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    rsa_lookup = dns_for(key)

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        if name == f"ed2026._domainkey.{DOMAIN}.".encode():
            return b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw)
        return rsa_lookup(name, timeout)

    assert len(smtp_sink.messages) == 6
    for received in smtp_sink.messages:
        content = received.content
        assert content.count(b"DKIM-Signature:") == 2
        assert content.index(b"a=ed25519-sha256") < content.index(b"a=rsa-sha256")
        verifier = dkim.DKIM(content)
        assert verifier.verify(idx=0, dnsfunc=lookup) and verifier.verify(idx=1, dnsfunc=lookup), received.rcpt_tos


def test_without_dkim_settings_nothing_is_signed(settings, smtp_sink):
    cfg = engine_config(settings)
    assert cfg.signers == ()
    engine = make_engine(settings.database)
    try:
        cid = seed_campaign(engine, 2)
        drain(engine, cid, transport=SmtpTransport.from_url(f"smtp://127.0.0.1:{smtp_sink.port}", timeout=10),
              cfg=cfg)
    finally:
        engine.dispose()
    assert all(b"DKIM-Signature" not in m.content for m in smtp_sink.messages)


def test_a_welcome_mail_is_signed_like_an_issue(dkim_settings, smtp_sink, key):
    """The welcome goes through the same engine: signed, the same headers covered."""
    from mailer.core.db import transaction
    from mailer.operations import subscribers as ops
    from mailer.operations import welcome
    from subscribers import service

    engine = make_engine(dkim_settings.database)
    try:
        with transaction(engine) as s:
            service.ensure_list(s, "weekly")
            shown = welcome.set_welcome(s, list_name="weekly", settings=dkim_settings,
                                        source="---\nsubject: Welcome\n---\n\nGlad you are here.\n")
            ops.add(s, email="ann@example.com", name="Ann", list_name="weekly", status="active")
        drain(engine, shown.campaign_id, cfg=engine_config(dkim_settings),
              transport=SmtpTransport.from_url(f"smtp://127.0.0.1:{smtp_sink.port}", timeout=10))
    finally:
        engine.dispose()
    assert [m.rcpt_tos for m in smtp_sink.messages] == [("ann@example.com",)]
    content = smtp_sink.messages[0].content
    assert b"Subject: Welcome" in content
    assert dkim.verify(content, dnsfunc=dns_for(key))
    assert MUST_BE_SIGNED <= signed_header_names(content)
