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


def _template(**kw):
    from mailer.dkim import relaxed_piece

    return compile_message(
        subject="Spaces  and\ttabs", from_=Address("Weekly News", addr_spec="news@example.com"),
        html="<p>Hi __NL_NAME__,</p>\n<p>runs  of   spaces \t and tabs   </p>\n<p>end</p>\n\n\n",
        text="Hi __NL_NAME__,\n\nline with trailing spaces   \n\n\nUnsubscribe: __NL_UNSUBSCRIBE_URL__\n\n",
        list_id="weekly.example.com", list_name="Weekly News", feedback_id="1:2:news:example",
        body_canon=relaxed_piece, **kw)


@pytest.mark.parametrize("name", ["Ann", "Ann  Lee  ", "王  小明", "", "x" * 300 + "  " + "y" * 90])
def test_the_body_hash_from_precomputed_pieces_equals_the_whole_bodys(name):
    """The static body is canonicalised once per issue; the hash made from it and the
    recipient's values is the one dkimpy computes over the whole message."""
    import hashlib

    from mailer.dkim import _relaxed_body

    message, body_hash = _template().assemble_for_signing(Recipient(
        email="ana@example.org", name=name, message_id="<1.c1@example.com>",
        unsubscribe_url="https://example.com/u/tok  ", preferences_url="https://example.com/p/tok"))
    body = message.partition(b"\r\n\r\n")[2]
    assert body_hash == hashlib.sha256(_relaxed_body(body)).digest()


def test_a_signature_from_the_precomputed_body_hash_verifies(pem, dns):
    message, body_hash = _template().assemble_for_signing(Recipient(
        email="ana@example.org", name="Ann  Lee", message_id="<1.c1@example.com>",
        unsubscribe_url="https://example.com/u/tok"))
    signed = DkimSigner("s2026", "example.com", pem).sign(message, body_hash=body_hash)
    assert dkim.verify(signed, dnsfunc=dns)
    tampered = signed.replace(b"<p>end</p>", b"<p>End</p>")
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_ed25519_next_to_rsa_both_verify(pem, key):
    """RFC 8463: an ed25519-sha256 signature beside the RSA one; dkimpy checks each."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    ed = ed25519.Ed25519PrivateKey.generate()
    ed_pem = ed.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    raw = ed.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    records = {b"s2026._domainkey.example.com.": b"v=DKIM1; k=rsa; p=" + base64.b64encode(der),
               b"ed2026._domainkey.example.com.": b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw)}
    message, body_hash = _template().assemble_for_signing(Recipient(
        email="ana@example.org", name="Ann", message_id="<1.c1@example.com>",
        unsubscribe_url="https://example.com/u/tok"))
    for signer in (DkimSigner("s2026", "example.com", pem), DkimSigner("ed2026", "example.com", ed_pem)):
        message = signer.sign(message, body_hash=body_hash)
    assert message.count(b"DKIM-Signature:") == 2 and b"a=ed25519-sha256" in message
    lookup = lambda name, timeout=5: records.get(name)  # noqa: E731
    verifier = dkim.DKIM(message)
    assert verifier.verify(idx=0, dnsfunc=lookup) and verifier.verify(idx=1, dnsfunc=lookup)


def test_signatures_made_from_the_header_section_equal_signing_one_after_the_other(pem):
    """What the engine does (``DkimSigner.header`` per signer, the body copied once)
    gives the bytes of signing the whole message with each signer in turn."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    ed_pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    signers = (DkimSigner("s2026", "example.com", pem), DkimSigner("ed2026", "example.com", ed_pem))
    message, body_hash = _template().assemble_for_signing(Recipient(
        email="ana@example.org", name="Ann", message_id="<1.c1@example.com>",
        unsubscribe_url="https://example.com/u/tok"))
    one_by_one = message
    for signer in signers:
        one_by_one = signer.sign(one_by_one, body_hash=body_hash, timestamp=1)
    head = message[:message.find(b"\r\n\r\n")]
    together = b"".join([*(s.header(head, body_hash, timestamp=1) for s in reversed(signers)), message])
    assert together == one_by_one and together.count(b"DKIM-Signature:") == 2


def test_a_signer_cannot_sign_dkim_signature_headers(pem):
    with pytest.raises(ConfigurationError, match="DKIM-Signature"):
        DkimSigner("s2026", "example.com", pem, signed_headers=("from", "DKIM-Signature"))


def test_an_ed25519_key_where_rsa_is_expected_is_one_line(tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ed25519

    path = tmp_path / "ed.pem"
    path.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(ConfigurationError, match="an RSA key is needed"):
        load_private_key(str(path))
    assert load_private_key(str(path), ed25519_key=True).startswith(b"-----BEGIN")
