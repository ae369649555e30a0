"""Named segments: an editor saves a segment expression of a list under a name, lists
them with their sizes, and sends to one by its name (``send --segment NAME``: the
campaign resolves it, ``mailer.campaigns.create_campaign``)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from mailer.core.errors import NotFound
from mailer.operations.subscribers import segment_size
from subscribers import segments, service
from subscribers.models import MailingList, Segment


def describe(session: Session, segment: Segment, *, size: bool = True) -> dict:
    """A saved segment as the CLI, the API and the dashboard show it; ``size``: the
    active members of its list it holds now (the audience a campaign would freeze)."""
    list_name = session.get(MailingList, segment.list_id).name
    out = {"name": segment.name, "list": list_name, "expression": segment.expression,
           "updated_at": segment.updated_at.isoformat() if segment.updated_at else None}
    if size:
        out["size"] = segment_size(session, list_name=list_name, segment=segment.expression)
    return out


def save(session: Session, *, name: str, expression: str, list_name: str) -> tuple[dict, bool]:
    """Save a named segment of a list, or change the expression of the one of that
    name; checked first (a syntax error names its position). (segment, created)."""
    mlist = service.find_list(session, (list_name or "").strip())
    saved, created = segments.save_segment(session, name=name, expression=expression, list_id=mlist.id)
    return describe(session, saved), created


def show(session: Session, *, name: str) -> dict:
    found = segments.find_segment(session, name)
    if found is None:
        raise NotFound(f"no segment {name.strip()[:100]!r}")
    return describe(session, found)


def list_all(session: Session, *, list_name: str | None = None, sizes: bool = True) -> list[dict]:
    list_id = service.find_list(session, list_name).id if list_name else None
    return [describe(session, s, size=sizes) for s in segments.list_segments(session, list_id=list_id)]


def remove(session: Session, *, name: str) -> None:
    """Forget a named segment (campaigns sent to it keep their expression)."""
    found = segments.find_segment(session, name)
    if found is None:
        raise NotFound(f"no segment {name.strip()[:100]!r}")
    session.delete(found)
    session.flush()
