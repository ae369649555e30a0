"""Public signup with double opt-in, and the limits that keep the form from being abused.

The flow: ``check_limits`` (per client, per target address) -> ``request_subscription``
(records a pending subscriber, decides whether a confirmation mail may go out) ->
``build_confirmation``, sent after the response (``mailer.operations.subscribers``) ->
``confirm`` when the link is followed. Membership of the list is only ever created on
confirmation, so a stranger can neither add someone to a list nor re-activate someone
who unsubscribed.

Nothing the visitor typed goes into the confirmation mail, not even their name: the form
cannot be used to send someone else a message of the attacker's choosing. The answer to
a signup is the same whether the address is new, pending, active, unsubscribed or
suppressed, and the mail is sent after the response, so its timing tells nothing either.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from sqlalchemy import case, delete, select

from mailer.core import signing
from mailer.core.clock import UTC, utcnow
from mailer.core.config import Settings
from mailer.core.db import insert_for
from mailer.core.errors import InvalidInput, NotFound
from mailer.core.templates import environment
from subscribers import links, service
from subscribers.models import (
    EventKind,
    MailingList,
    SignupLimit,
    Subscriber,
    SubscriberStatus,
)

DEFAULT_LIST = "newsletter"


@dataclass(frozen=True)
class Limit:
    purpose: str
    hits: int
    window: int  # seconds


# Measured against need, not science: a household behind one NAT address signing up a
# few people is fine; a script is not. One confirmation mail per address per window,
# so the form cannot be used to flood an inbox.
PER_CLIENT = Limit("client", 10, 600)
PER_ADDRESS = Limit("address", 5, 3600)
CONFIRMATION_MAIL = Limit("mail", 1, 900)


class RateLimited(InvalidInput):
    """Too many signups from one client or for one address; try again later."""


def hit(session, limit: Limit, value: str, *, now: float | None = None) -> bool:
    """Count one hit in ``limit``'s current window for ``value``; False once over.

    One INSERT ... ON CONFLICT DO UPDATE ... RETURNING: the read and the increment are a
    single statement, so two requests at once cannot both see the last free slot (on
    SQLite the transaction holds the write lock anyway; on PostgreSQL the row lock of
    the conflicting row serialises them).
    """
    key, window_start = _window(limit, value, now)
    insert = insert_for(session)
    stmt = insert(SignupLimit).values(key=key, window_start=window_start, hits=1)
    stmt = stmt.on_conflict_do_update(
        index_elements=["key"],
        set_={
            "hits": case((SignupLimit.window_start == stmt.excluded.window_start, SignupLimit.hits + 1), else_=1),
            "window_start": stmt.excluded.window_start,
        },
    ).returning(SignupLimit.hits)
    hits = session.execute(stmt).scalar_one()
    if random.random() < 0.01:  # sweep finished windows now and then
        session.execute(delete(SignupLimit).where(SignupLimit.window_start < window_start - 86400))
    return hits <= limit.hits


def spent(session, limit: Limit, value: str, *, now: float | None = None) -> bool:
    """Whether ``value`` has used up ``limit``'s current window (counting nothing)."""
    key, window_start = _window(limit, value, now)
    hits = session.scalar(select(SignupLimit.hits).where(SignupLimit.key == key,
                                                         SignupLimit.window_start == window_start))
    return (hits or 0) >= limit.hits


def _window(limit: Limit, value: str, now: float | None) -> tuple[str, int]:
    current = time.time() if now is None else now
    key = hashlib.sha256(f"{limit.purpose}:{value}".encode("utf-8")).hexdigest()
    return key, int(current // limit.window * limit.window)


def check_client(session, client: str) -> None:
    if not hit(session, PER_CLIENT, client):
        raise RateLimited("too many signups from your network; try again in a few minutes")


def check_address(session, address_key: str) -> None:
    if not hit(session, PER_ADDRESS, address_key):
        raise RateLimited("too many signups for this address; try again later")


@dataclass(frozen=True)
class PendingConfirmation:
    subscriber_id: int
    list_id: int
    address: str


def public_list(session, list_name: str | None) -> MailingList | None:
    """The list a public form may name: an existing one, or the default one; None for a
    list that does not exist (the caller answers as for any other: no list-name oracle)."""
    name = (list_name or "").strip() or DEFAULT_LIST
    if name == DEFAULT_LIST:
        return service.ensure_list(session, name)
    return session.scalar(select(MailingList).where(MailingList.name == name))


def limit_key(address: str) -> str:
    """The per-address limits count one mailbox, however it is written: lower-cased,
    without a ``+tag`` and without dots in the local part, so ``Victim+1@`` and
    ``v.ictim+2@`` are one key (Gmail and others deliver them all to one inbox). Only the
    counter uses this; the address is stored as typed."""
    local, _, domain = address.lower().rpartition("@")
    return f"{local.split('+', 1)[0].replace('.', '')}@{domain}"


def request_subscription(session, *, email: str, name: str = "", list_name: str | None = None,
                         client: str = "") -> PendingConfirmation | None:
    """Record a signup; the confirmation to send, or None when none may go out.

    A new address becomes a pending subscriber (with the name given). An existing
    subscriber is not changed in any way - not even the name: whoever typed it has not
    proved they own the address yet. Suppressed addresses get nothing.
    """
    address = service.normalise_email(email)
    key = service.email_key(address)
    name = service.clean_name(name)
    mailing_list = public_list(session, list_name)
    if mailing_list is None or service.is_suppressed(session, address):
        return None
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email_key == key))
    if subscriber is None:
        insert = insert_for(session)
        now = utcnow()
        session.execute(
            insert(Subscriber).values(email=address, email_key=key, name=name, status=SubscriberStatus.pending,
                                      attributes={},
                                      created_at=now, updated_at=now)
            .on_conflict_do_nothing(index_elements=["email_key"])
        )
        subscriber = session.scalars(select(Subscriber).where(Subscriber.email_key == key)).one()
        # The consent record (GDPR art. 7): when, from where, for which list.
        service.record_event(session, kind=EventKind.subscribe, origin="web", subscriber_id=subscriber.id,
                             detail={"list": mailing_list.name, "client": client})
    if not hit(session, CONFIRMATION_MAIL, limit_key(address)):
        return None
    return PendingConfirmation(subscriber.id, mailing_list.id, subscriber.email)


def confirm(session, *, secrets, token: str) -> bool:
    """Follow a confirmation link: the subscriber becomes active and joins the list."""
    subscriber_id, list_id, issued = signing.read_confirm_token(secrets, token)
    # ``issued`` has whole seconds: the request was made before issued + 1.
    requested_at = datetime.fromtimestamp(issued + 1, UTC)
    try:
        return service.confirm_subscriber(session, subscriber_id=subscriber_id, list_id=list_id,
                                          origin="web", requested_at=requested_at)
    except NotFound as err:
        raise signing.InvalidToken("this link is not valid") from err


def build_confirmation(settings: Settings, pending: PendingConfirmation, *, list_name: str) -> EmailMessage:
    """The confirmation mail, with its signed link. Only operator text and the link:
    nothing the visitor typed (see the module docstring)."""
    token = signing.confirm_token(settings.secret_key, pending.subscriber_id, pending.list_id)
    context = {"url": links.confirm_url(settings.base_url, token), "list_name": list_name,
               "postal_address": settings.postal_address,
               "sender": settings.from_address.display_name or settings.sending_domain}
    templates = environment(tuple(settings.template_folders))
    msg = EmailMessage(policy=policy.SMTP if pending.address.isascii() else policy.SMTPUTF8)
    msg["From"] = settings.from_
    msg["To"] = pending.address
    msg["Subject"] = f"Please confirm your subscription to {context['sender']}"
    msg["Date"] = format_datetime(utcnow())
    msg["Message-ID"] = make_msgid(domain=settings.sending_domain)
    # RFC 3834: an automatic message; vacation responders should not answer it.
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(templates.get_template("email/confirm.txt.j2").render(**context))
    msg.add_alternative(templates.get_template("email/confirm.html.j2").render(**context), subtype="html")
    return msg
