"""Tokens: pure code, no database."""

from __future__ import annotations

import pytest

from mailer.core import signing
from subscribers import links


def test_round_trip_short_and_opaque():
    t = signing.unsubscribe_token("secret", 42, 7)
    assert signing.read_unsubscribe_token(["secret"], t) == (42, 7)
    assert signing.read_unsubscribe_token(["secret"], signing.unsubscribe_token("secret", 42, None)) == (42, None)
    assert len(t) < 60 and "=" not in t and t.isalnum()
    # Neighbouring ids give unrelated tokens: nothing to enumerate.
    a, b = signing.unsubscribe_token("secret", 1, None), signing.unsubscribe_token("secret", 2, None)
    assert sum(x == y for x, y in zip(a, b)) < len(a) // 2
    # Case-insensitive (a mail system may change the case of a local part).
    assert signing.read_unsubscribe_token(["secret"], t.upper()) == (42, 7)


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-1], lambda t: t[1:], lambda t: t + "a", lambda t: "", lambda t: t.replace(t[5], "z" if t[5] != "z" else "y"),
    lambda t: "!" * len(t), lambda t: t[:20],
])
def test_tampered_tokens_are_refused(mangle):
    t = signing.unsubscribe_token("secret", 42, 7)
    with pytest.raises(signing.InvalidToken):
        signing.read_unsubscribe_token(["secret"], mangle(t))


def test_rotation_and_foreign_keys():
    t = signing.unsubscribe_token("old", 5, None)
    assert signing.read_unsubscribe_token(["new", "old"], t) == (5, None)
    with pytest.raises(signing.InvalidToken):
        signing.read_unsubscribe_token(["new"], t)


def test_purposes_do_not_mix():
    u = signing.unsubscribe_token("secret", 5, None)
    c = signing.confirm_token("secret", 5, 3)
    with pytest.raises(signing.InvalidToken):
        signing.read_confirm_token(["secret"], u)
    with pytest.raises(signing.InvalidToken):
        signing.read_unsubscribe_token(["secret"], c)


def test_confirmation_tokens_expire():
    c = signing.confirm_token("secret", 5, 3, now=1_000_000)
    assert signing.read_confirm_token(["secret"], c, now=1_000_000 + 3600)[:2] == (5, 3)
    with pytest.raises(signing.InvalidToken, match="expired"):
        signing.read_confirm_token(["secret"], c, now=1_000_000 + signing.CONFIRM_MAX_AGE + 1)


def test_urls():
    assert links.unsubscribe_url("https://x.example", "abc") == "https://x.example/u/abc"
    assert links.preferences_url("https://x.example", "abc") == "https://x.example/p/abc"
    assert links.unsubscribe_mailto("abc", "x.example") == "mailto:unsubscribe+abc@x.example"
