"""How the platforms people leave export their lists, read as they come.

A preset names a format's columns (its email and name columns, those that are not
attributes) and says what a row's status, tags and opt-in time are. The platforms'
status values map to ours like this, and nobody who left there becomes mailable here:

- Mailchimp's audience export (a ZIP of ``subscribed_members_export_*.csv``,
  ``unsubscribed_...`` and ``cleaned_...``; columns "Email Address", "First Name",
  "Last Name", merge fields, MEMBER_RATING, OPTIN_TIME, OPTIN_IP, CONFIRM_TIME,
  CONFIRM_IP, ..., LEID, EUID, NOTES, TAGS; the unsubscribed file adds UNSUB_TIME and
  UNSUB_REASON..., the cleaned one CLEAN_TIME...): subscribed rows are active with
  CONFIRM_TIME (else OPTIN_TIME) as their opt-in time; unsubscribed rows become
  suppressions (unsubscribed), cleaned ones suppressions as bounces. A STATUS column,
  where an export has one, says the same per row (pending stays pending; non-subscribed
  and transactional contacts never opted in and are not imported). TAGS is
  ``"Tag A","Tag B"``.
- Substack's subscriber export (email, active_subscription, expiry, plan,
  email_disabled, created_at, first_payment_at): a row is active from created_at;
  email_disabled=true is an unsubscribe (a suppression); the plan (free, monthly,
  yearly, founding, ...) is a tag, the paid subscription's fields are attributes.
- listmonk's export (uuid, email, name, attributes, status, created_at, updated_at;
  attributes is JSON): enabled is active from created_at; blocklisted is an unsubscribe
  and disabled (listmonk sends them nothing) a suppression too.

A row with no opt-in time gets the import's own status (pending, or active with
``--confirmed``). Times without a zone are UTC, as the platforms write them.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from mailer.core.errors import InvalidInput
from subscribers.bulk import Row
from subscribers.models import SubscriberStatus, SuppressionReason

S = SubscriberStatus
MAX_TAGS = 50
MAX_TAG = 100

Cell = Callable[[str], str]  # a row's value by lower-cased column name ("" if absent)


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    email: tuple[str, ...]  # lower-cased header names, the first found is the address
    name_columns: tuple[str, ...] = ()  # joined with a space: ("first name", "last name")
    # Columns the preset reads itself, or that are the platform's internals: not attributes.
    consumed: frozenset[str] = frozenset()
    finish: Callable[[Row, Cell], None] | None = None
    # Columns of which the platform's export always has one: another file is refused.
    marks: tuple[str, ...] = ()


def _time(cell: Cell, column: str) -> datetime | None:
    value = cell(column)
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as err:
        raise InvalidInput(f"column {column!r} is not a time: {value!r}") from err
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


def _true(cell: Cell, column: str) -> bool:
    return cell(column).lower() in ("true", "yes", "1", "t")


def _tags(values: list[str]) -> list[str]:
    tags = sorted({v.strip() for v in values if v.strip()})
    if len(tags) > MAX_TAGS:
        raise InvalidInput(f"more than {MAX_TAGS} tags")
    if any(len(t) > MAX_TAG or "\x00" in t for t in tags):
        raise InvalidInput(f"a tag is longer than {MAX_TAG} characters or holds a NUL character")
    return tags


def _opted_in(row: Row, at: datetime | None) -> None:
    """Active from the platform's opt-in time: that record is the consent evidence."""
    if at is not None:
        row.status, row.confirmed_at = S.active, at


def _mailchimp(row: Row, cell: Cell) -> None:
    status = cell("status").lower() or cell("email marketing status").lower()
    if not status:
        status = "cleaned" if cell("clean_time") else "unsubscribed" if cell("unsub_time") else "subscribed"
    row.tags = _tags(next(csv.reader([cell("tags")]), []))
    if status == "unsubscribed":
        row.suppress = SuppressionReason.unsubscribed
    elif status == "cleaned":
        row.suppress = SuppressionReason.bounce
    elif status == "pending":
        row.status = S.pending
    elif status == "subscribed":
        _opted_in(row, _time(cell, "confirm_time") or _time(cell, "optin_time"))
    else:  # non-subscribed, transactional, archived: no consent to mail them
        raise InvalidInput(f"Mailchimp status {status!r}: they never subscribed, not imported")


def _substack(row: Row, cell: Cell) -> None:
    row.tags = _tags([cell("plan")])
    if _true(cell, "email_disabled"):
        row.suppress = SuppressionReason.unsubscribed
    else:
        _opted_in(row, _time(cell, "created_at"))


def _listmonk(row: Row, cell: Cell) -> None:
    status = cell("status").lower()
    if status == "blocklisted":
        row.suppress = SuppressionReason.unsubscribed
    elif status == "disabled":
        row.suppress = SuppressionReason.manual
    elif status in ("enabled", ""):
        _opted_in(row, _time(cell, "created_at"))
    else:
        raise InvalidInput(f"listmonk status {status!r} is not enabled, disabled or blocklisted")


PRESETS = {
    "mailchimp": Preset(
        "mailchimp", "a Mailchimp audience export", email=("email address", "email"),
        name_columns=("first name", "last name"),
        consumed=frozenset({"tags", "status", "email marketing status", "optin_time", "confirm_time", "leid",
                            "euid", "last_changed", "unsub_time", "clean_time"}),
        finish=_mailchimp, marks=("optin_time", "confirm_time", "member_rating", "leid", "euid")),
    "substack": Preset(
        "substack", "a Substack subscriber export", email=("email",), name_columns=("name",),
        consumed=frozenset({"plan", "email_disabled", "created_at"}), finish=_substack,
        marks=("email_disabled", "active_subscription")),
    "listmonk": Preset(
        "listmonk", "a listmonk export", email=("email",), name_columns=("name",),
        consumed=frozenset({"uuid", "status", "created_at", "updated_at"}), finish=_listmonk),
}
FORMATS = ("csv", *PRESETS)


def preset(name: str) -> Preset | None:
    """The preset called ``name``, None for our own CSV, or ``InvalidInput``."""
    if name == "csv":
        return None
    found = PRESETS.get(name)
    if found is None:
        raise InvalidInput(f"unknown format {name!r}; one of {', '.join(FORMATS)}")
    return found
