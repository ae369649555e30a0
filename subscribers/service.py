"""What can happen to a subscriber: plain functions over an open ``Session``.

Every function takes keyword-only arguments after the session and leaves committing to
the caller (``mailer.core.db.transaction``). None of them sends mail.

Addresses are normalised once, here: the local part as given (email-validator's Unicode
NFC normalisation), the domain lower-cased and IDNA-encoded to ASCII, so
``user@Bücher.de`` and ``user@xn--bcher-kva.de`` are the same subscriber and the domain
can be handed to any SMTP server without SMTPUTF8. ``email_key`` is that, lower-cased:
the unique key that makes ``Ann@example.com`` and ``ann@example.com`` one person.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer.core.clock import utcnow
from mailer.core.db import insert_for
from mailer.core.errors import ConflictError, InvalidInput, NotFound
from subscribers.models import (
    GONE,
    MAILABLE,
    Event,
    EventKind,
    MailingList,
    Membership,
    Subscriber,
    SubscriberStatus,
    Suppression,
    SuppressionReason,
)

S = SubscriberStatus

UNSUBSCRIBE_ORIGINS = frozenset({"one-click", "page", "mailto", "admin", "preferences"})
MAX_NAME = 200
MAX_LIST_NAME = 100


# The fast path of ``normalise_email``: an ASCII dot-atom local part (email-validator's
# own DOT_ATOM_TEXT, which it accepts as it is) at a domain the full validator already
# accepted. A million-row import spends ~45 us per row in the full validator and ~2 us
# here; anything else (Unicode, quotes, an unusual domain, an error to explain) still
# goes through the full validator, so both paths accept and return exactly the same.
_ATEXT = r"a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~"
_FAST_ADDRESS = re.compile(rf"([{_ATEXT}]{{1,64}}(?:\.[{_ATEXT}]+)*)@([A-Za-z0-9.-]{{1,253}})\Z")
_MAX_ADDRESS = 254  # email-validator's limit, in UTF-8 bytes, of every form of the address
_CONTROL = re.compile("[\x00-\x1f\x7f]")


@functools.lru_cache(maxsize=65536)
def _domain(domain: str) -> tuple[str, int] | None:
    """The full validator's verdict on an address at ``domain``: its ASCII form and the
    longest of its forms in bytes (for the length limit), or None if it is refused."""
    try:
        result = validate_email(f"a@{domain}", check_deliverability=False)
    except EmailNotValidError:
        return None
    return result.ascii_domain, max(len(result.ascii_domain), len(result.domain.encode("utf-8")))


def _fast_normalise(value: str) -> str | None:
    match = _FAST_ADDRESS.match(value)
    if match is None:
        return None
    local, domain = match.groups()
    if len(local) > 64:
        return None
    checked = _domain(domain.lower())
    if checked is None or len(local) + 1 + checked[1] > _MAX_ADDRESS:
        return None
    return f"{local}@{checked[0]}"


def normalise_email(raw: str) -> str:
    """The canonical form of an address, or ``InvalidInput`` with one line saying why."""
    if not isinstance(raw, str):
        raise InvalidInput("an email address must be text")
    value = raw.strip()
    fast = _fast_normalise(value)
    if fast is not None:
        return fast
    if not value:
        raise InvalidInput("an email address is required")
    # Header injection: a CR or LF (or any control character) has no business in an
    # address that will end up in a To: header.
    if _CONTROL.search(value):
        raise InvalidInput(f"not an email address: {value!r} contains a control character")
    if len(value) > 320:
        raise InvalidInput("not an email address: longer than 320 characters")
    try:
        # allow_quoted_local stays False: quoted local parts ("a b"@x) are legal in
        # RFC 5322 but nobody subscribes with them, and they are how injection starts.
        result = validate_email(value, check_deliverability=False)
    except EmailNotValidError as err:
        raise InvalidInput(f"not an email address: {value!r}: {err}") from err
    return f"{result.local_part}@{result.ascii_domain}"


def email_key(email: str) -> str:
    return email.lower()


def email_hash(email: str) -> str:
    """The suppression key: sha256 of the normalised, lower-cased address. Addresses that
    do not normalise (a bounce report's odd recipient) are hashed stripped and lower-cased."""
    try:
        key = email_key(normalise_email(email))
    except InvalidInput:
        key = email.strip().lower()
    return hash_key(key)


def hash_key(key: str) -> str:
    """``email_hash`` of an address already normalised and lower-cased (an ``email_key``)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def clean_name(raw: str | None) -> str:
    name = (raw or "").strip()
    if _CONTROL.search(name):
        raise InvalidInput("a name cannot contain control characters or line breaks")
    if len(name) > MAX_NAME:
        raise InvalidInput(f"a name is at most {MAX_NAME} characters")
    return name


def ensure_list(session: Session, name: str) -> MailingList:
    """The list called ``name``, created if it does not exist (safe if two do it at once)."""
    name = (name or "").strip()
    if not name:
        raise InvalidInput("a list name is required")
    if len(name) > MAX_LIST_NAME or any(ord(c) < 32 for c in name):
        raise InvalidInput(f"not a list name: {name!r}")
    found = session.scalar(select(MailingList).where(MailingList.name == name))
    if found is not None:
        return found
    insert = insert_for(session)
    session.execute(
        insert(MailingList).values(name=name, description="", created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["name"])
    )
    return session.scalars(select(MailingList).where(MailingList.name == name)).one()


def find_list(session: Session, name: str) -> MailingList:
    found = session.scalar(select(MailingList).where(MailingList.name == name))
    if found is None:
        raise NotFound(f"no list called {name!r}")
    return found


def find_subscriber(session: Session, email: str) -> Subscriber | None:
    return session.scalar(select(Subscriber).where(Subscriber.email_key == email_key(normalise_email(email))))


def get_subscriber(session: Session, subscriber_id: int) -> Subscriber:
    found = session.get(Subscriber, subscriber_id)
    if found is None:
        raise NotFound(f"no subscriber {subscriber_id}")
    return found


def add_membership(session: Session, *, list_id: int, subscriber_id: int) -> None:
    insert = insert_for(session)
    session.execute(
        insert(Membership).values(list_id=list_id, subscriber_id=subscriber_id, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["list_id", "subscriber_id"])
    )


def record_event(session: Session, *, kind: str, origin: str, subscriber_id: int | None,
                 campaign_id: int | None = None, detail: dict[str, Any] | None = None) -> None:
    session.add(Event(kind=EventKind(kind), origin=origin, subscriber_id=subscriber_id,
                      campaign_id=campaign_id, detail=detail or {}))


def add_subscriber(
    session: Session,
    *,
    email: str,
    name: str = "",
    list_name: str | None = None,
    status: str = SubscriberStatus.pending,
    attributes: dict[str, Any] | None = None,
    origin: str = "admin",
) -> Subscriber:
    """Add a subscriber, or update the one with the same address (case-insensitively).

    A suppressed address is refused. An existing subscriber keeps whatever it had that is
    not given again; ``status="active"`` promotes a pending one. A subscriber who
    unsubscribed, bounced or complained is never brought back this way
    (``ConflictError``): only their own fresh confirmation does that.
    """
    if status not in MAILABLE:
        raise InvalidInput(f"a new subscriber is 'pending' or 'active', not {str(status)!r}")
    address = normalise_email(email)
    key = email_key(address)
    name = clean_name(name)
    if is_suppressed(session, address):
        raise InvalidInput(f"{address} is on the suppression list and cannot be added")
    mailing_list = ensure_list(session, list_name) if list_name else None
    now = utcnow()

    subscriber = session.scalar(select(Subscriber).where(Subscriber.email_key == key))
    if subscriber is None:
        subscriber = Subscriber(
            email=address, email_key=key, name=name, status=status, attributes=dict(attributes or {}),
            created_at=now, updated_at=now, confirmed_at=now if status == S.active else None,
        )
        try:
            with session.begin_nested():
                session.add(subscriber)
                session.flush()
        except IntegrityError as err:  # added by someone else a moment ago
            raise ConflictError(f"{address} was added at the same time by someone else; try again") from err
        record_event(session, kind=EventKind.subscribe, origin=origin, subscriber_id=subscriber.id,
                     detail={"list": list_name or "", "status": status})
    else:
        if subscriber.status in GONE:
            raise ConflictError(
                f"{subscriber.email} is {subscriber.status}; only their own confirmation can bring them back"
            )
        if name:
            subscriber.name = name
        if attributes:
            subscriber.attributes = {**(subscriber.attributes or {}), **attributes}
        if status == S.active and subscriber.status == S.pending:
            subscriber.status = S.active
            subscriber.confirmed_at = now
            record_event(session, kind=EventKind.confirm, origin=origin, subscriber_id=subscriber.id)
        subscriber.updated_at = now
    if mailing_list is not None:
        add_membership(session, list_id=mailing_list.id, subscriber_id=subscriber.id)
    session.flush()
    return subscriber


def confirm_subscriber(session: Session, *, subscriber_id: int, list_id: int | None, origin: str,
                       requested_at: datetime | None = None) -> bool:
    """The subscriber proved they own the address: make them active (from any status,
    this is the one way back after an unsubscribe) and add them to the list.

    A confirmation requested before the latest unsubscribe is stale and refused, so an
    old link cannot undo a later unsubscribe. Returns False when nothing changed.
    """
    subscriber = get_subscriber(session, subscriber_id)
    if is_suppressed(session, subscriber.email):
        raise ConflictError("this address cannot be subscribed")
    if requested_at is not None and subscriber.unsubscribed_at is not None:
        if subscriber.unsubscribed_at > requested_at:
            raise ConflictError("this confirmation link was superseded by a later unsubscribe")
    changed = False
    if subscriber.status != S.active:
        now = utcnow()
        subscriber.status = S.active
        subscriber.confirmed_at = now
        subscriber.updated_at = now
        record_event(session, kind=EventKind.confirm, origin=origin, subscriber_id=subscriber.id,
                     detail={"list_id": list_id} if list_id else {})
        changed = True
    if list_id:
        if session.get(MailingList, list_id) is None:
            raise NotFound("that list no longer exists")
        before = session.get(Membership, (list_id, subscriber.id))
        if before is None:
            add_membership(session, list_id=list_id, subscriber_id=subscriber.id)
            changed = True
    session.flush()
    return changed


def unsubscribe(session: Session, *, subscriber_id: int, campaign_id: int | None = None, origin: str) -> bool:
    """Stop all mail to a subscriber. Idempotent: True only for the call that changed it.

    One guarded UPDATE, so two one-click POSTs arriving together record one event. The
    delivery engine re-reads ``subscriber.status`` right before each send, so queued
    deliveries of running campaigns are skipped without touching them here.
    A bounced or complained subscriber already gets nothing and keeps that status.
    """
    if origin not in UNSUBSCRIBE_ORIGINS:
        raise InvalidInput(f"unknown unsubscribe origin {origin!r}")
    now = utcnow()
    result = session.execute(
        update(Subscriber)
        .where(Subscriber.id == subscriber_id, Subscriber.status.in_(sorted(MAILABLE)))
        .values(status=S.unsubscribed, unsubscribed_at=now, updated_at=now)
        .execution_options(synchronize_session="fetch")
    )
    if result.rowcount != 1:
        if session.get(Subscriber, subscriber_id) is None:
            raise NotFound(f"no subscriber {subscriber_id}")
        return False
    record_event(session, kind=EventKind.unsubscribe, origin=origin, subscriber_id=subscriber_id, campaign_id=campaign_id)
    session.flush()
    return True


def is_suppressed(session: Session, email: str) -> bool:
    return session.scalar(select(Suppression.id).where(Suppression.email_hash == email_hash(email))) is not None


# A suppression reason, and the status it leaves a still-mailable subscriber in: the
# sending engine reads only ``subscriber.status``, so suppressing must change it too.
STATUS_FOR_REASON = {SuppressionReason.bounce: S.bounced, SuppressionReason.complaint: S.complained}


def suppress(session: Session, *, email: str, reason: str) -> None:
    """Never mail or re-import this address again. Keeps only its hash. A mailable
    subscriber with the address stops being mailable (bounced, complained or
    unsubscribed, after the reason)."""
    reason = (reason or "").strip()[:32] or SuppressionReason.manual
    insert = insert_for(session)
    session.execute(
        insert(Suppression).values(email_hash=email_hash(email), reason=reason, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["email_hash"])
    )
    try:
        key = email_key(normalise_email(email))
    except InvalidInput:
        return
    now = utcnow()
    status = STATUS_FOR_REASON.get(reason, S.unsubscribed)
    values: dict[str, Any] = {"status": status, "updated_at": now}
    if status == S.unsubscribed:
        values["unsubscribed_at"] = now
    session.execute(
        update(Subscriber).where(Subscriber.email_key == key, Subscriber.status.in_(sorted(MAILABLE)))
        .values(**values).execution_options(synchronize_session="fetch")
    )


def placeholder_email(subscriber_id: int) -> str:
    return f"erased-{subscriber_id}@invalid"


def erase(session: Session, *, subscriber_id: int) -> None:
    """GDPR erasure. The row is anonymised, not deleted, so delivery records and campaign
    counters stay consistent; the address survives only as a suppression hash, so a
    later import cannot bring it back. List memberships and event details (which can
    hold a signup IP address) go too."""
    subscriber = get_subscriber(session, subscriber_id)
    placeholder = placeholder_email(subscriber.id)
    if subscriber.email_key != placeholder:
        insert = insert_for(session)
        session.execute(
            insert(Suppression).values(email_hash=email_hash(subscriber.email), reason=SuppressionReason.erased,
                                      created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["email_hash"])
        )
    now = utcnow()
    subscriber.email = placeholder
    subscriber.email_key = placeholder
    subscriber.name = ""
    subscriber.attributes = {}
    if subscriber.status in MAILABLE:
        subscriber.status = S.unsubscribed
        subscriber.unsubscribed_at = now
    subscriber.updated_at = now
    session.execute(delete(Membership).where(Membership.subscriber_id == subscriber.id))
    session.execute(update(Event).where(Event.subscriber_id == subscriber.id).values(detail={}))
    session.flush()


def change_name(session: Session, *, subscriber_id: int, name: str) -> None:
    subscriber = get_subscriber(session, subscriber_id)
    subscriber.name = clean_name(name)
    subscriber.updated_at = utcnow()
    session.flush()


# --- tags and attributes, as an editor sets them ------------------------------------------
# An editor's tag is one a segment can name (``tag:NAME`` in ``subscribers.segments``
# ends at a space, a parenthesis or a quote), an attribute's key one a segment can compare
# (``FIELD``), and ``email`` and ``name`` are the subscriber's own fields, not attributes.
# Imports keep the platform's tags as they come (``subscribers.presets``).
MAX_TAGS = 50
MAX_TAG = 100
MAX_ATTRIBUTES = 50
MAX_ATTRIBUTE_KEY = 64
MAX_ATTRIBUTE_VALUE = 1000
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/+-]*")
_ATTRIBUTE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
RESERVED_KEYS = frozenset({"email", "name"})


def clean_tag(raw: str) -> str:
    tag = (raw or "").strip()
    if not tag:
        raise InvalidInput("a tag cannot be empty")
    if len(tag) > MAX_TAG:
        raise InvalidInput(f"a tag is at most {MAX_TAG} characters")
    if not _TAG.fullmatch(tag):
        raise InvalidInput(f"tag {tag[:40]!r}: letters, digits and _ . : / + - only (no spaces or quotes)")
    return tag


def parse_attribute(raw: str) -> tuple[str, str]:
    """``key=value`` (what ``--attr`` takes) into a checked key and value."""
    key, sep, value = (raw or "").partition("=")
    if not sep:
        raise InvalidInput(f"attribute {raw[:40]!r} is not key=value")
    return clean_attribute_key(key), clean_attribute_value(key.strip(), value)


def clean_attribute_key(raw: str) -> str:
    key = (raw or "").strip()
    if not key:
        raise InvalidInput("an attribute needs a key (key=value)")
    if len(key) > MAX_ATTRIBUTE_KEY:
        raise InvalidInput(f"an attribute key is at most {MAX_ATTRIBUTE_KEY} characters")
    if not _ATTRIBUTE_KEY.fullmatch(key):
        raise InvalidInput(f"attribute key {key[:40]!r}: a letter or _ first, then letters, digits, _ . -")
    if key.lower() in RESERVED_KEYS:
        raise InvalidInput(f"{key!r} is the subscriber's own field, not an attribute")
    return key


def clean_attribute_value(key: str, value) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"attribute {key!r}: the value must be text")
    if len(value) > MAX_ATTRIBUTE_VALUE:
        raise InvalidInput(f"attribute {key!r}: a value is at most {MAX_ATTRIBUTE_VALUE} characters")
    if _CONTROL.search(value):
        raise InvalidInput(f"attribute {key!r}: a value cannot contain control characters or line breaks")
    return value


def change_tags_attributes(session: Session, *, subscriber_id: int, tag: Iterable[str] = (),
                           untag: Iterable[str] = (), set_attributes: dict[str, Any] | None = None,
                           unset_attributes: Iterable[str] = ()) -> Subscriber:
    """Add and remove tags, set and remove attributes. Everything is checked before
    anything changes, so bad input (a bad tag, a key without a value, a value too long,
    too many of either) changes nothing."""
    subscriber = get_subscriber(session, subscriber_id)
    add_tags = [clean_tag(t) for t in tag]
    drop_tags = {(t or "").strip() for t in untag}  # any tag can go, an imported one too
    values = {clean_attribute_key(k): clean_attribute_value(k, v) for k, v in (set_attributes or {}).items()}
    drop_keys = {(k or "").strip() for k in unset_attributes}
    tags = sorted({*(subscriber.tags or []), *add_tags} - drop_tags)
    attributes = {k: v for k, v in {**(subscriber.attributes or {}), **values}.items() if k not in drop_keys}
    if len(tags) > MAX_TAGS:
        raise InvalidInput(f"a subscriber has at most {MAX_TAGS} tags")
    if len(attributes) > MAX_ATTRIBUTES:
        raise InvalidInput(f"a subscriber has at most {MAX_ATTRIBUTES} attributes")
    if tags != sorted(subscriber.tags or []) or attributes != (subscriber.attributes or {}):
        # New objects, not changed in place: the JSON columns see only an assignment.
        subscriber.tags, subscriber.attributes, subscriber.updated_at = tags, attributes, utcnow()
        session.flush()
    return subscriber
