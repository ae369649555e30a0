"""``/api/admin/subscribers``: search, add, edit, import and export subscribers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field, field_validator

from mailer.core.db import MAX_ID
from mailer.operations import commit
from mailer.operations import deliveries as delivery_ops
from mailer.operations import segments as segment_ops
from mailer.operations import subscribers as ops
from mailer.operations import welcome
from mailer.web.auth import ApiRoute
from mailer.web.deps import EngineDep, Id, SessionDep, SettingsDep, csv_response
from subscribers import service
from subscribers.models import SubscriberStatus

router = APIRouter(route_class=ApiRoute)
Tags = list[str]  # named here: a model's field called ``list`` hides the builtin in its body


class SubscriberIn(BaseModel):
    email: str
    name: str = ""
    list: str | None = None
    status: str = Field(SubscriberStatus.pending, description="'pending' (double opt-in) or 'active' (consent recorded elsewhere).")
    tags: Tags = Field([], max_length=50, description="Tags to add.")  # pydantic copies it
    attributes: dict[str, str] = Field(default_factory=dict, max_length=50, description="Attributes to set.")

    # The service's own checks (``InvalidInput`` is a ``ValueError``), here so that a bad
    # tag or attribute is a 422 naming the field, like any other malformed body.
    _tags = field_validator("tags")(lambda tags: [service.clean_tag(t) for t in tags])
    _attributes = field_validator("attributes")(
        lambda attrs: {service.clean_attribute_key(k): service.clean_attribute_value(k, v) for k, v in attrs.items()})


class SubscriberPatch(BaseModel):
    name: str | None = None
    status: str | None = Field(None, description="'active' (confirm a pending one) or 'unsubscribed'.")
    tags: list[str] | None = Field(None, max_length=50, description="Their tags: exactly these (others removed).")
    add_tags: list[str] = Field(default_factory=list, max_length=50, description="Tags to add.")
    remove_tags: list[str] = Field(default_factory=list, max_length=50, description="Tags to remove.")
    attributes: dict[str, str | None] = Field(
        default_factory=dict, max_length=50,
        description="Attributes to set (key: value), or to remove (key: null); others stay.")

    _tags = field_validator("tags")(lambda tags: None if tags is None else [service.clean_tag(t) for t in tags])
    _add_tags = field_validator("add_tags")(lambda tags: [service.clean_tag(t) for t in tags])
    _attributes = field_validator("attributes")(
        lambda attrs: {service.clean_attribute_key(k): None if v is None else service.clean_attribute_value(k, v)
                       for k, v in attrs.items()})


@router.get("/subscribers")
def search_subscribers(
    session: SessionDep,
    q: str = "",
    status: str | None = None,
    list: Annotated[str | None, Query(description="Only members of this list.")] = None,
    after: Annotated[int, Query(ge=0, le=MAX_ID, description="Id of the last subscriber of the previous page.")] = 0,
    limit: Annotated[int, Query(ge=1, le=ops.MAX_PAGE)] = 50,
    segment: Annotated[str, Query(description='A segment expression: tag:founding AND country = "CN".')] = "",
) -> dict:
    return ops.search(session, q=q, status=status, list_name=list, after=after, limit=limit, segment=segment)


class SegmentIn(BaseModel):
    name: str = Field(description="Lower-case letters, digits, _ and -.")
    list: str
    expression: str = Field(max_length=2000, description='e.g. tag:founding AND country = "CN".')


@router.get("/segments")
def list_segments(session: SessionDep, list: Annotated[str | None, Query(description="Only this list's.")] = None
                  ) -> list[dict]:
    """The saved segments, each with its size now (active members of its list it holds)."""
    return segment_ops.list_all(session, list_name=list)


@router.post("/segments", status_code=201)
def save_segment(body: SegmentIn, session: SessionDep, response: Response) -> dict:
    """Save a named segment (201), or change the expression of the one of that name (200).
    A syntax error or an unknown attribute is a 400 naming the position."""
    saved, created = segment_ops.save(session, name=body.name, expression=body.expression, list_name=body.list)
    session.commit()
    response.status_code = 201 if created else 200
    return saved


@router.get("/segments/size")
def segment_size(
    session: SessionDep,
    list: Annotated[str, Query(description="The list.")],
    segment: Annotated[str, Query(description='A segment expression: tag:founding AND country = "CN".')] = "",
) -> dict:
    """How many active members of the list the segment holds (a campaign's audience).
    A syntax error or an unknown attribute is a 400 naming the position."""
    return {"list": list, "segment": segment, "size": ops.segment_size(session, list_name=list, segment=segment)}


@router.post("/subscribers", status_code=201)
def add_subscriber(body: SubscriberIn, session: SessionDep, settings: SettingsDep) -> dict:
    sub = ops.add(session, email=body.email, name=body.name, list_name=body.list, status=body.status,
                  tags=body.tags, attributes=body.attributes)
    session.commit()
    welcome.wake(session, settings)
    return ops.describe(sub)


class TrackingIn(BaseModel):
    clicks: bool | None = Field(None, description="Send the list's links through the click redirect.")
    opens: bool | None = Field(None, description="Add the open pixel to the list's messages.")


@router.get("/lists/{list_name}/tracking")
def list_tracking(list_name: str, session: SessionDep) -> dict:
    """A list's click and open tracking (both off unless turned on)."""
    return ops.set_tracking(session, list_name=list_name)


@router.put("/lists/{list_name}/tracking")
def set_list_tracking(list_name: str, body: TrackingIn, session: SessionDep) -> dict:
    """Turn a list's click or open tracking on or off (a field left out stays)."""
    state = ops.set_tracking(session, list_name=list_name, clicks=body.clicks, opens=body.opens)
    session.commit()
    return state


class WelcomeIn(BaseModel):
    source: str = Field("", max_length=512 * 1024,
                        description="Markdown with front matter ('subject: ...'), like an issue; empty: no welcome.")
    latest_link: bool = Field(False, description="End it with a link to the latest issue in the archive.")


@router.get("/lists/{list_name}/welcome")
def list_welcome(list_name: str, session: SessionDep) -> dict:
    """A list's welcome mail (sent once to each subscriber who confirms) and how many went out."""
    return welcome.show_welcome(session, list_name=list_name).as_dict()


@router.put("/lists/{list_name}/welcome")
def set_list_welcome(list_name: str, body: WelcomeIn, session: SessionDep, settings: SettingsDep) -> dict:
    """Set a list's welcome template, rendered now like an issue (a template that does
    not render is a 400 and changes nothing); an empty source removes it, cancelling the
    welcomes not yet sent."""
    shown = welcome.set_welcome(session, list_name=list_name, source=body.source or None, settings=settings,
                                latest_link=body.latest_link)
    commit(session, shown, settings=settings)
    return shown.as_dict()


@router.get("/segments/{name}")
def show_segment(name: str, session: SessionDep) -> dict:
    return segment_ops.show(session, name=name)


@router.delete("/segments/{name}", status_code=204)
def remove_segment(name: str, session: SessionDep) -> Response:
    segment_ops.remove(session, name=name)
    session.commit()
    return Response(status_code=204)


@router.get("/subscribers/export")
def export_subscribers(session: SessionDep, engine: EngineDep,
                       list: Annotated[str | None, Query(description="Only members of this list.")] = None
                       ) -> StreamingResponse:
    """CSV of subscribers, streamed (flat memory for a million rows)."""
    if list is not None:
        service.find_list(session, list)  # 404 now, not half-way through a download
    session.rollback()  # the export reads in its own transaction
    return csv_response(ops.export_chunks(engine, list_name=list), f"subscribers-{list or 'all'}.csv")


@router.post("/subscribers/import")
def import_subscribers(
    engine: EngineDep,
    file: Annotated[UploadFile, File(description="CSV with an 'email' column; 'name' and others are optional.")],
    list: Annotated[str, Form(description="List to add everyone to (created if needed).")],
    confirmed: Annotated[bool, Form(description="Import as active: you hold their consent.")] = False,
    dry_run: Annotated[bool, Form(description="Report what would change, and change nothing.")] = False,
    format: Annotated[str, Form(description="csv (ours), or a platform's export as it comes: "  # noqa: A002
                                            "mailchimp, substack, listmonk.")] = "csv",
) -> dict:
    """Streams the file in chunks of rows (each chunk its own transaction, so a re-run
    is harmless); bad rows are reported by line and the rest import. A file without a
    usable header is refused before anything is written. ``batch_id`` is the import's
    record (file, time, counts)."""
    return ops.import_csv(engine, file.file, list_name=list, confirmed=confirmed, origin="admin-import",
                          file_name=file.filename or "", dry_run=dry_run, format=format).as_dict()


@router.patch("/subscribers/{subscriber_id}")
def edit_subscriber(subscriber_id: Id, body: SubscriberPatch, session: SessionDep, settings: SettingsDep) -> dict:
    sub = ops.edit(session, subscriber_id=subscriber_id, name=body.name, status=body.status,
                   replace_tags=body.tags, tag=body.add_tags, untag=body.remove_tags,
                   attributes={k: v for k, v in body.attributes.items() if v is not None},
                   unset_attributes=[k for k, v in body.attributes.items() if v is None])
    session.commit()
    welcome.wake(session, settings)
    return ops.describe(sub)


@router.get("/subscribers/{subscriber_id}")
def get_subscriber(subscriber_id: Id, session: SessionDep) -> dict:
    return ops.describe(service.get_subscriber(session, subscriber_id))


@router.get("/subscribers/{subscriber_id}/deliveries")
def subscriber_deliveries(subscriber_id: Id, session: SessionDep) -> list[dict]:
    """Every message sent to the subscriber and what happened to it, oldest first."""
    return delivery_ops.subscriber_history(session, subscriber_id=subscriber_id)
