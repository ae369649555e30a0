"""Our DKIM signatures verify with dkimpy, the reference implementation."""

from __future__ import annotations

import base64
from email.headerregistry import Address

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mailer.core.errors import ConfigurationError
from mailer.dkim import DkimSigner, load_private_key
from mailer.message import Recipient, compile_message


@pytest.fixture(scope="module")
def key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def dns(key):
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == b"s2026._domainkey.example.com." else None

    return lookup


@pytest.fixture(scope="module")
def message() -> bytes:
    template = compile_message(
        subject="Été 🎉 this week, with   extra  spaces",
        from_=Address("Weekly News", addr_spec="news@example.com"),
        html="<p>Hello __NL_NAME__,</p>\n<p>text  with   runs of spaces \t and tabs</p>\n"
        '<a href="__NL_UNSUBSCRIBE_URL__">unsubscribe</a>\n\n\n',
        text="Hello __NL_NAME__,\n\nUnsubscribe: __NL_UNSUBSCRIBE_URL__   \n",
        list_id="weekly.example.com",
        list_name="Weekly News",
        feedback_id="c1:weekly:news:example",
    )
    return template.assemble(
        Recipient(
            email="ana@example.org",
            name="王小明",
            message_id="<1.c1@example.com>",
            unsubscribe_url="https://example.com/u/tok",
            unsubscribe_mailto="mailto:unsubscribe+tok@example.com",
            preferences_url="https://example.com/p/tok",
        )
    )


def test_signature_verifies_with_dkimpy(pem, dns, message):
    signed = DkimSigner("s2026", "example.com", pem).sign(message)
    assert signed.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=s2026;")
    assert signed.endswith(message)
    assert dkim.verify(signed, dnsfunc=dns)


def test_signed_headers_include_one_click_unsubscribe(pem, message):
    signed = DkimSigner("s2026", "example.com", pem).sign(message)
    sig = signed.split(b"\r\n\r\n")[0].decode()
    tags = dict(t.strip().split("=", 1) for t in sig.split(":", 1)[1].replace("\r\n", "").split(";"))
    assert [h.strip() for h in tags["h"].split(":")] == list(DkimSigner.SIGNED_HEADERS)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"unsubscribe</a>", b"unsubscribe</A>"),  # body
        (b"<https://example.com/u/tok>", b"<https://evil.example/u/tok>"),  # List-Unsubscribe
        (b"List-Unsubscribe=One-Click", b"List-Unsubscribe=Two-Clicks"),
        (b"Message-ID: <1.c1", b"Message-ID: <2.c1"),
    ],
)
def test_tampering_breaks_the_signature(pem, dns, message, old, new):
    signed = DkimSigner("s2026", "example.com", pem).sign(message)
    assert old in signed
    assert not dkim.verify(signed.replace(old, new, 1), dnsfunc=dns)


def test_relaxed_canonicalisation_tolerates_refolding(pem, dns, message):
    signed = DkimSigner("s2026", "example.com", pem).sign(message)
    refolded = signed.replace(b"List-Id: Weekly News", b"List-Id:   Weekly\r\n\t News", 1)
    refolded = refolded.replace(b"</a>\r\n", b"</a> \t \r\n", 1)  # trailing whitespace on a body line
    assert dkim.verify(refolded, dnsfunc=dns)


def test_signature_matches_dkimpy_body_hash(pem, message):
    ours = DkimSigner("s2026", "example.com", pem).sign(message, timestamp=1)
    theirs = dkim.sign(message, b"s2026", b"example.com", pem, include_headers=[b"from"],
                      canonicalize=(b"relaxed", b"relaxed"))
    bh = lambda s: s.split(b"bh=")[1].split(b";")[0]  # noqa: E731
    assert bh(ours) == bh(theirs)


def test_load_private_key_inline_path_and_escaped(tmp_path, pem):
    assert load_private_key(pem.decode()) .startswith(b"-----BEGIN")
    assert load_private_key(pem.decode().replace("\n", "\\n")).startswith(b"-----BEGIN")
    path = tmp_path / "dkim.pem"
    path.write_bytes(pem)
    assert load_private_key(str(path)) == pem


@pytest.mark.parametrize("value", ["/nonexistent/dkim.pem", "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----"])
def test_bad_key_is_a_one_line_configuration_error(value):
    with pytest.raises(ConfigurationError) as err:
        load_private_key(value)
    assert "\n" not in str(err.value) and str(err.value).startswith("NEWSLETTER_DKIM_PRIVATE_KEY")


def test_non_rsa_key_is_refused():
    ed = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ConfigurationError, match="RSA"):
        DkimSigner("s", "example.com", ed)
