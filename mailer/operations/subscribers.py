"""Subscribers: what the editor does with them (add, edit, search, import, export,
unsubscribe, erase) and what a subscriber does through the links they are sent
(sign up, confirm, unsubscribe, preferences, download their data). The people side of
it lives in ``subscribers``; this is where it meets the sending side (deliveries in a
data export, the confirmation mail through a transport)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from typing import IO, Any

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from mailer import queries
from mailer.core import signing
from mailer.core.config import Settings
from mailer.core.db import transaction
from mailer.core.errors import ConflictError, InvalidInput, NotFound
from mailer.models import Campaign, Delivery, EngagementEvent, WebhookDelivery
from mailer.operations import streams, welcome
from mailer.transports import transport_from_settings
from subscribers import csvio, segments, service, signup
from subscribers.models import (
    Event,
    MailingList,
    Membership,
    Subscriber,
    SubscriberStatus,
)

log = logging.getLogger(__name__)
S = SubscriberStatus
MAX_PAGE = 200


# --- the editor ---------------------------------------------------------------------------

def describe(s: Subscriber) -> dict:
    iso = lambda d: d.isoformat() if d else None  # noqa: E731
    return {"id": s.id, "email": s.email, "name": s.name, "status": s.status, "attributes": dict(s.attributes or {}),
            "tags": list(s.tags or []),
            "created_at": iso(s.created_at), "confirmed_at": iso(s.confirmed_at),
            "unsubscribed_at": iso(s.unsubscribed_at)}


def add(session: Session, *, email: str, name: str = "", list_name: str | None = None,
        status: str = S.pending, tags: list[str] | tuple[str, ...] = (),
        attributes: dict[str, str] | None = None) -> Subscriber:
    """Add one subscriber (pending: double opt-in; active: consent recorded elsewhere),
    or update the one with that address. See ``subscribers.service.add_subscriber``.
    Added as active, someone who was not an active member of the list before is sent
    its welcome (``operations.welcome``; ``welcome.wake`` after the commit). ``tags``
    and ``attributes`` are added to theirs (checked first: bad ones change nothing)."""
    tags = [service.clean_tag(t) for t in tags]
    attributes = {service.clean_attribute_key(k): service.clean_attribute_value(k, v)
                  for k, v in (attributes or {}).items()}
    before = service.find_subscriber(session, email) if status == S.active else None
    was_member = before is not None and before.status == S.active and (
        list_name is None or session.scalar(select(Membership.subscriber_id).join(
            MailingList, MailingList.id == Membership.list_id)
            .where(MailingList.name == list_name, Membership.subscriber_id == before.id)) is not None)
    sub = service.add_subscriber(session, email=email, name=name, list_name=list_name, status=status, origin="admin")
    if tags or attributes:
        service.change_tags_attributes(session, subscriber_id=sub.id, tag=tags, set_attributes=attributes)
    if status == S.active and not was_member:
        welcome.greet(session, subscriber_id=sub.id,
                      list_id=service.find_list(session, list_name).id if list_name else None)
    return sub


def search(session: Session, *, q: str = "", status: str | None = None, list_name: str | None = None,
           after: int = 0, limit: int = 50, segment: str = "") -> dict:
    """One page of subscribers, oldest first: ``items`` and ``next_after`` (the id to
    pass as ``after`` for the next page, None at the end). Keyset pagination by id: the
    millionth row costs what the first does."""
    if status and status not in set(S):
        raise InvalidInput(f"unknown status {status!r}; one of {', '.join(S)}")
    limit = max(1, min(limit, MAX_PAGE))
    query = select(Subscriber).where(Subscriber.id > after)
    if q.strip():
        pattern = "%" + q.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(Subscriber.email_key.like(pattern, escape="\\")
                            | func.lower(Subscriber.name).like(pattern, escape="\\"))
    if status:
        query = query.where(Subscriber.status == status)
    if list_name:
        mlist = service.find_list(session, list_name)
        query = query.join(Membership, (Membership.subscriber_id == Subscriber.id) & (Membership.list_id == mlist.id))
    if segment.strip():
        query = query.where(segments.segment_filter(session, segments.resolve(session, segment)))
    rows = list(session.scalars(query.order_by(Subscriber.id).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [describe(s) for s in rows], "next_after": rows[-1].id if more else None}


def every(session: Session, *, status: str | None = None, list_name: str | None = None, segment: str = ""
          ) -> Iterator[dict]:
    """Every matching subscriber, page after page of ``search``."""
    after: int | None = 0
    while after is not None:
        page = search(session, status=status, list_name=list_name, after=after, limit=MAX_PAGE, segment=segment)
        yield from page["items"]
        after = page["next_after"]


def segment_size(session: Session, *, list_name: str, segment: str) -> int:
    """How many active members of the list the segment (an expression, or a saved
    segment's name) holds (``subscribers.segments``): the audience a campaign to it
    would have, shown before anything is sent."""
    mlist = service.find_list(session, list_name)
    condition = segments.segment_filter(session, segments.resolve(session, segment, list_id=mlist.id))
    return session.scalar(
        select(func.count()).select_from(Membership).join(Subscriber, Subscriber.id == Membership.subscriber_id)
        .where(Membership.list_id == mlist.id, Subscriber.status == S.active, condition)
    )


def find(session: Session, *, email: str) -> Subscriber:
    found = service.find_subscriber(session, email)
    if found is None:
        raise NotFound(f"no subscriber {service.normalise_email(email)}")
    return found


def edit(session: Session, *, subscriber_id: int, name: str | None = None, status: str | None = None,
         tag: list[str] | tuple[str, ...] = (), untag: list[str] | tuple[str, ...] = (),
         attributes: dict[str, str] | None = None, unset_attributes: list[str] | tuple[str, ...] = (),
         replace_tags: list[str] | None = None) -> Subscriber:
    """An editor may rename, confirm a pending subscriber, or unsubscribe one, and add
    or remove tags and attributes (``replace_tags``: these tags and no others). Bringing
    back someone who left is theirs to do (their own confirmation), not the editor's. A
    bad value anywhere is refused before anything changes."""
    sub = service.get_subscriber(session, subscriber_id)
    if replace_tags is not None:
        keep = {service.clean_tag(t) for t in replace_tags}
        untag = [*untag, *(t for t in (sub.tags or []) if t not in keep)]
        tag = [*tag, *keep]
    if tag or untag or attributes or unset_attributes:
        service.change_tags_attributes(session, subscriber_id=sub.id, tag=tag, untag=untag,
                                       set_attributes=attributes, unset_attributes=unset_attributes)
    if status not in (None, sub.status, S.active, S.unsubscribed):
        raise InvalidInput(f"status can be set to 'active' (a pending subscriber) or 'unsubscribed', not {str(status)!r}")
    if status == S.active and sub.status != S.active and sub.status != S.pending:
        raise ConflictError(f"{sub.email} is {sub.status}; only their own confirmation can bring them back")
    clean = service.clean_name(name) if name is not None else None
    if clean is not None:
        service.change_name(session, subscriber_id=sub.id, name=clean)
    if status == S.active and sub.status == S.pending:
        service.confirm_subscriber(session, subscriber_id=sub.id, list_id=None, origin="admin")
        welcome.greet(session, subscriber_id=sub.id)
    elif status == S.unsubscribed and sub.status != S.unsubscribed:
        if not service.unsubscribe(session, subscriber_id=sub.id, origin="admin"):
            raise ConflictError(f"{sub.email} is {sub.status}; there is nothing to unsubscribe")
    session.refresh(sub)
    return sub


def set_tracking(session: Session, *, list_name: str, clicks: bool | None = None,
                 opens: bool | None = None) -> dict:
    """Turn a list's click tracking and open tracking on or off, each on its own (None:
    leave it). Both are off until the editor turns them on. Returns the list's switches."""
    mlist = service.find_list(session, (list_name or "").strip())
    if clicks is not None:
        mlist.track_clicks = bool(clicks)
    if opens is not None:
        mlist.track_opens = bool(opens)
    session.flush()
    return tracking_of(mlist)


def tracking_of(mlist: MailingList) -> dict:
    return {"list": mlist.name, "clicks": bool(mlist.track_clicks), "opens": bool(mlist.track_opens)}


def what_is_tracked(session: Session, *, subscriber_id: int, settings: Settings) -> dict:
    """What the preference page tells a subscriber is tracked: for each of their lists,
    whether clicks and opens are, and how long an event keeps their name (0 days: never,
    only counts are kept)."""
    lists = session.scalars(
        select(MailingList).join(Membership, Membership.list_id == MailingList.id)
        .where(Membership.subscriber_id == subscriber_id).order_by(MailingList.name)
    ).all()
    return {"lists": [tracking_of(m) for m in lists],
            "days": 0 if settings.tracking_strict else settings.tracking_days}


def erase(session: Session, *, subscriber_id: int) -> None:
    """GDPR erasure (``subscribers.service.erase``), the subscriber's clicks and opens
    still kept with their delivery (what was rolled up names nobody), and the outbound
    webhooks about them (their payloads name them; one not sent yet is not sent)."""
    service.erase(session, subscriber_id=subscriber_id)
    session.execute(delete(EngagementEvent).where(EngagementEvent.subscriber_id == subscriber_id))
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.subscriber_id == subscriber_id))


def import_csv(engine: Engine, stream: IO, *, list_name: str, confirmed: bool, origin: str = "import",
               file_name: str = "", dry_run: bool = False, format: str = "csv",  # noqa: A002
               ) -> csvio.ImportReport:
    """Streamed in chunks of rows, each chunk its own transaction (so a re-run is
    harmless), on PostgreSQL through COPY and one merge statement per chunk; bad rows are
    reported by line and the rest import. A file without a usable header is refused
    before anything is written. Recorded as one ``import_batch`` (the consent evidence);
    ``dry_run`` reports what would change and changes nothing. ``format``: ours (csv),
    or a platform's export as it comes (``subscribers.presets``)."""
    return csvio.import_csv(engine, stream, list_name=list_name, confirmed=confirmed, origin=origin,
                            file_name=file_name, dry_run=dry_run, merge=queries.merge_import_chunk, format=format)


def export_csv(session: Session, stream: IO[str], *, list_name: str | None = None) -> int:
    if list_name is not None:
        service.find_list(session, list_name)
    return csvio.export_csv(session, stream, list_name=list_name)


def export_chunks(engine: Engine, *, list_name: str | None) -> Iterator[bytes]:
    """``export_csv`` as a byte stream with flat memory (``streams.text_chunks``)."""
    return streams.text_chunks(engine, lambda session, out: csvio.export_csv(session, out, list_name=list_name),
                               name="csv-export")


def totals(session: Session) -> dict[str, int]:
    """Subscribers by status."""
    return dict(session.execute(select(Subscriber.status, func.count()).group_by(Subscriber.status)).all())


# --- the subscriber -----------------------------------------------------------------------

def sign_up(engine: Engine, *, client: str, email: str, name: str = "", list_name: str | None = None,
            honeypot: str = "") -> tuple[signup.PendingConfirmation, str] | None:
    """Count, check and record one public signup. Returns the confirmation to send (and
    the list's name) after the response, or None when none may go out; raises
    ``RateLimited`` or ``InvalidInput``. Otherwise the answer is the same for every
    address (new, pending, active, unsubscribed or suppressed)."""
    _counted(engine, signup.check_client, client)  # the counter is committed, then the refusal raised
    if honeypot.strip():
        return None  # a robot: accept silently, do nothing
    address = service.normalise_email(email)
    _counted(engine, signup.check_address, signup.limit_key(address))
    with transaction(engine) as session:
        pending = signup.request_subscription(session, email=address, name=name, list_name=list_name, client=client)
        if pending is None:
            return None
        return pending, session.get(MailingList, pending.list_id).name


def _counted(engine: Engine, check, value: str) -> None:
    over = None
    with transaction(engine) as session:
        try:
            check(session, value)
        except signup.RateLimited as err:
            over = err
    if over:
        raise over


def send_confirmation(settings: Settings, pending: signup.PendingConfirmation, *, list_name: str) -> None:
    """Send one confirmation mail through the configured transport. Runs after the
    response has gone out; a failure is logged (the visitor can simply try again)."""
    msg = signup.build_confirmation(settings, pending, list_name=list_name)
    transport = transport_from_settings(settings.smtp_url, settings.outbox_dir, settings.smtp_timeout)
    try:
        transport.open()
        result = transport.send(settings.from_address.addr_spec, pending.address, msg.as_bytes())
        if not result.accepted:
            # The reply's code only: its text often quotes the address (mailer.core.logs).
            log.warning("confirmation mail refused", extra={"subscriber_id": pending.subscriber_id,
                                                            "code": result.code})
    except Exception:
        log.exception("confirmation mail not sent", extra={"subscriber_id": pending.subscriber_id})
    finally:
        transport.close()


def confirm(session: Session, *, token: str, settings: Settings) -> bool:
    """Follow a confirmation link: the subscriber becomes active and joins the list, and
    is sent its welcome when it has one (``welcome.wake`` after the commit). A second
    click changes nothing and greets nobody again."""
    changed = signup.confirm(session, secrets=settings.signing_keys, token=token)
    if changed:
        subscriber_id, list_id, _ = signing.read_confirm_token(settings.signing_keys, token)
        welcome.greet(session, subscriber_id=subscriber_id, list_id=list_id or None)
    return changed


def from_link(session: Session, *, token: str, settings: Settings) -> tuple[Subscriber, int | None]:
    """The subscriber (and campaign) an unsubscribe or preferences link acts for;
    ``InvalidToken`` for a tampered, foreign or unknown one alike."""
    subscriber_id, campaign_id = signing.read_unsubscribe_token(settings.signing_keys, token)
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise signing.InvalidToken("this link is not valid")
    return subscriber, campaign_id


def unsubscribe(session: Session, *, subscriber_id: int, campaign_id: int | None = None, origin: str) -> bool:
    """Stop all mail to a subscriber (idempotent: True for the call that changed it)."""
    return service.unsubscribe(session, subscriber_id=subscriber_id, campaign_id=campaign_id, origin=origin)


def unsubscribe_by_token(engine: Engine, *, token: str, settings: Settings, origin: str) -> bool:
    """A ``mailto:unsubscribe+TOKEN@`` message: unsubscribe whom the token names."""
    subscriber_id, campaign_id = signing.read_unsubscribe_token(settings.signing_keys, token)
    with transaction(engine) as session:
        try:
            return service.unsubscribe(session, subscriber_id=subscriber_id, campaign_id=campaign_id, origin=origin)
        except NotFound as err:
            raise signing.InvalidToken("the unsubscribe address is not valid") from err


def ask_to_resubscribe(session: Session, *, subscriber: Subscriber) -> tuple[str, signup.PendingConfirmation | None]:
    """A subscriber who left asks to come back: a confirmation mail (at most one per
    window), never a change without it. (notice, confirmation to send or None)."""
    if subscriber.status == S.active:
        return "You are subscribed.", None
    if signup.hit(session, signup.CONFIRMATION_MAIL, signup.limit_key(subscriber.email)) and \
            not service.is_suppressed(session, subscriber.email):
        return ("We sent you a confirmation link. Follow it to subscribe again.",
                signup.PendingConfirmation(subscriber.id, 0, subscriber.email))
    return "A confirmation link was sent a short while ago; please look for it in your inbox.", None


def my_data(session: Session, *, subscriber_id: int) -> dict[str, Any]:
    """Everything kept about one subscriber (GDPR art. 15), as JSON-ready values: their
    record, lists, events and the messages sent to them."""
    s = service.get_subscriber(session, subscriber_id)
    lists = session.scalars(
        select(MailingList.name).join(Membership, Membership.list_id == MailingList.id)
        .where(Membership.subscriber_id == s.id).order_by(MailingList.name)
    ).all()
    events = session.execute(
        select(Event.kind, Event.origin, Event.campaign_id, Event.detail, Event.created_at)
        .where(Event.subscriber_id == s.id).order_by(Event.id)
    ).all()
    engagement = session.execute(
        select(EngagementEvent.campaign_id, EngagementEvent.kind, EngagementEvent.link_index, EngagementEvent.machine,
               EngagementEvent.reason, EngagementEvent.created_at)
        .where(EngagementEvent.subscriber_id == s.id).order_by(EngagementEvent.id)
    ).all()
    deliveries = session.execute(
        select(Delivery.campaign_id, Delivery.status, Delivery.sent_at)
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .where(Delivery.subscriber_id == s.id).order_by(Delivery.id)
    ).all()
    return {
        **{k: v for k, v in describe(s).items() if k not in ("id",)},
        "lists": list(lists),
        "events": [
            {"kind": k, "origin": o, "campaign_id": c, "detail": d or {}, "at": _iso(t)}
            for k, o, c, d, t in events
        ],
        "deliveries": [{"campaign_id": c, "status": st, "sent_at": _iso(t)} for c, st, t in deliveries],
        # Clicks and opens kept with their delivery (NEWSLETTER_TRACKING_DAYS at most).
        "engagement": [{"campaign_id": c, "kind": k, "link_index": i, "machine": m, "reason": r, "at": _iso(t)}
                       for c, k, i, m, r, t in engagement],
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
