"""Addresses, uniqueness, unsubscribe, suppression and erasure, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st
from sqlalchemy import func, select

from mailer.core.db import transaction
from mailer.core.errors import ConflictError, InvalidInput
from mailer.operations.subscribers import my_data
from subscribers import service
from subscribers.models import Event, Membership, Subscriber, Suppression


def _full(raw: str) -> str | None:
    try:
        result = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError:
        return None
    return f"{result.local_part}@{result.ascii_domain}"


_LABEL = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9-]{0,8}[A-Za-z0-9]?", fullmatch=True) | st.sampled_from(
    ["xn--bcher-kva", "xn--zz", "-x", "x-", "123", "ab--cd", "localhost", "test", "invalid", "a" * 64, "a" * 63, ""])
_LOCAL = st.from_regex(r"[A-Za-z0-9_!#$%&'*+/=?^`{|}~.-]{0,70}", fullmatch=True) | st.sampled_from(
    ["a" * 64, "a" * 65, ".a", "a.", "a..b", "ü", "\"x y\""])


@examples(max_examples=2000, deadline=None)
@given(local=_LOCAL, labels=st.lists(_LABEL, min_size=1, max_size=6), pad=st.sampled_from(["", " ", "\t"]))
def test_the_fast_path_agrees_with_the_full_validator(local, labels, pad):
    """The fast path only ever returns what email-validator returns for the same address
    (and when it declines, ``normalise_email`` asks email-validator itself)."""
    raw = f"{pad}{local}@{'.'.join(labels)}{pad}"
    fast = service._fast_normalise(raw.strip())
    full = _full(raw)
    if fast is not None:
        assert fast == full
    try:
        assert service.normalise_email(raw) == full
    except InvalidInput:
        assert full is None


def test_the_fast_path_takes_the_common_addresses():
    assert service._fast_normalise("Reader.One+news@Mail.Example.COM") == "Reader.One+news@mail.example.com"
    assert service._fast_normalise("a" * 64 + "@example.com") is not None
    # Long domains near the limit, and anything unusual, go to the full validator.
    assert service._fast_normalise("a" * 65 + "@example.com") is None
    assert service._fast_normalise("a@" + ".".join(["b" * 63] * 4)) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Ann@Example.COM ", "Ann@example.com"),
        ("user@Bücher.de", "user@xn--bcher-kva.de"),
        ("user@xn--bcher-kva.de", "user@xn--bcher-kva.de"),
        ("üser@example.com", "üser@example.com"),
        # NFC: a decomposed ü becomes the composed one.
        ("u\u0308ser@example.com", "\u00fcser@example.com"),
    ],
)
def test_normalise_email(raw, expected):
    assert service.normalise_email(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["", "no-at-sign", "a@b@c.com", "ann@example.com\r\nBcc: x@evil.com", "ann@exam\nple.com",
     '"ann smith"@example.com', '"a\x07"@example.com', "ann@", "x" * 400 + "@example.com"],
)
def test_normalise_email_rejects(raw):
    with pytest.raises(InvalidInput) as err:
        service.normalise_email(raw)
    assert "\n" not in str(err.value)


def test_same_address_in_other_case_is_one_subscriber(engine):
    with transaction(engine) as s:
        a = service.add_subscriber(s, email="Ann@Example.com", name="Ann", list_name="weekly")
        b = service.add_subscriber(s, email="ANN@example.COM", name="Ann B", list_name="other",
                                   attributes={"city": "Paris"})
        assert a.id == b.id
    with transaction(engine) as s:
        assert s.scalar(select(func.count()).select_from(Subscriber)) == 1
        sub = s.scalars(select(Subscriber)).one()
        assert (sub.name, sub.attributes, sub.email) == ("Ann B", {"city": "Paris"}, "Ann@example.com")
        assert s.scalar(select(func.count()).select_from(Membership)) == 2


def test_idn_spellings_are_one_subscriber(engine):
    with transaction(engine) as s:
        a = service.add_subscriber(s, email="user@bücher.de")
        b = service.add_subscriber(s, email="USER@XN--BCHER-KVA.DE")
        assert a.id == b.id


def test_suppressed_address_is_refused(engine):
    with transaction(engine) as s:
        service.suppress(s, email="Spam@Trap.example", reason="complaint")
        assert service.is_suppressed(s, "spam@trap.example")
    with transaction(engine) as s, pytest.raises(InvalidInput, match="suppression"):
        service.add_subscriber(s, email="spam@TRAP.example")


def test_unsubscribe_is_idempotent_and_never_silently_undone(engine):
    with transaction(engine) as s:
        sid = service.add_subscriber(s, email="ann@example.com", status="active").id
    with transaction(engine) as s:
        assert service.unsubscribe(s, subscriber_id=sid, origin="admin") is True
    with transaction(engine) as s:
        assert service.unsubscribe(s, subscriber_id=sid, origin="admin") is False
    with transaction(engine) as s:
        sub = s.get(Subscriber, sid)
        assert sub.status == "unsubscribed" and sub.unsubscribed_at is not None
        kinds = s.scalars(select(Event.kind).where(Event.subscriber_id == sid)).all()
        assert kinds.count("unsubscribe") == 1
    with transaction(engine) as s, pytest.raises(ConflictError):
        service.add_subscriber(s, email="ann@example.com", status="active")
    with transaction(engine) as s:
        assert s.get(Subscriber, sid).status == "unsubscribed"


def test_erase_anonymises_and_suppresses(engine):
    with transaction(engine) as s:
        sid = service.add_subscriber(s, email="Ann@example.com", name="Ann", list_name="weekly",
                                     attributes={"city": "Paris"}, status="active").id
    with transaction(engine) as s:
        service.erase(s, subscriber_id=sid)
    with transaction(engine) as s:
        sub = s.get(Subscriber, sid)
        assert sub.email == f"erased-{sid}@invalid" == sub.email_key
        assert (sub.name, sub.attributes, sub.status) == ("", {}, "unsubscribed")
        assert s.scalar(select(func.count()).select_from(Membership)) == 0
        hashes = s.scalars(select(Suppression.email_hash)).all()
        assert hashes == [service.email_hash("ann@example.com")]
        assert "Ann@example.com" not in repr(my_data(s, subscriber_id=sid))
    with transaction(engine) as s, pytest.raises(InvalidInput):
        service.add_subscriber(s, email="ann@example.com")


def test_export_subscriber_data(engine):
    with transaction(engine) as s:
        sid = service.add_subscriber(s, email="ann@example.com", name="Ann", list_name="weekly",
                                     attributes={"city": "Paris"}).id
    with transaction(engine) as s:
        data = my_data(s, subscriber_id=sid)
    assert data["email"] == "ann@example.com" and data["lists"] == ["weekly"]
    assert data["attributes"] == {"city": "Paris"}
    assert [e["kind"] for e in data["events"]] == ["subscribe"]
