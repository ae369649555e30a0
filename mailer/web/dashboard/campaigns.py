"""``/admin/campaigns``: every campaign, one campaign's live progress, and its buttons."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from sqlalchemy.orm import Session

from mailer.core.config import Settings
from mailer.core.errors import InvalidInput, NotFound
from mailer.operations import campaigns as ops
from mailer.operations import commit
from mailer.operations import deliveries as delivery_ops
from mailer.operations import report as report_ops
from mailer.web.charts import hours_chart, link_chart
from mailer.web.auth import CheckedFormDep, PageRoute, SignedIn, SignedInDep
from mailer.web.dashboard.pages import render, see_other
from mailer.web.deps import EngineDep, Id, SessionDep, SettingsDep, csv_response, status_of

router = APIRouter(route_class=PageRoute)


@router.get("/campaigns", response_class=HTMLResponse)
def campaign_list(request: Request, who: SignedInDep, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    return render(request, settings, "campaigns.html", who=who, section="campaigns", title="Campaigns",
                  campaigns=ops.list_stats(session))


def campaign_page(request: Request, settings: Settings, session: Session, who: SignedIn, campaign_id: int, *,
                  status: int = 200, error: str | None = None, form: dict | None = None) -> HTMLResponse:
    c = ops.stats(session, campaign_id)
    query = {"status": request.query_params.get("status", delivery_ops.DEFAULT_FILTER),
             "q": request.query_params.get("q", "")}
    after = request.query_params.get("after", "0")
    try:
        found = delivery_ops.list_deliveries(session, campaign_id=campaign_id, status=query["status"], q=query["q"],
                                             after=int(after) if after.isascii() and after.isdigit() else 0)
    except InvalidInput as err:
        found, error, status = {"items": [], "next_after": None, "retryable": False}, str(err), status_of(err)
    return render(request, settings, "campaign.html", who=who, section="campaigns", title=f"Campaign {campaign_id}",
                  c=c, status=status, error=error, form=form or {}, found=found, query=query,
                  filters=list(delivery_ops.FILTERS))


@router.get("/campaigns/{campaign_id}", response_class=HTMLResponse)
def show_campaign(campaign_id: Id, request: Request, who: SignedInDep, session: SessionDep,
                  settings: SettingsDep) -> HTMLResponse:
    return campaign_page(request, settings, session, who, campaign_id)


@router.get("/campaigns/{campaign_id}/report", response_class=HTMLResponse)
def show_report(campaign_id: Id, request: Request, who: SignedInDep, session: SessionDep,
                settings: SettingsDep) -> HTMLResponse:
    """The campaign's report (``mailer.operations.report``) with its two charts."""
    r = report_ops.report(session, campaign_id=campaign_id)
    return render(request, settings, "report.html", who=who, section="campaigns",
                  title=f"Report of campaign {campaign_id}", r=r, link_chart=link_chart(r["links"]),
                  hours_chart=hours_chart(r["hours"]))


@router.get("/campaigns/{campaign_id}/stats")
def campaign_stats(campaign_id: Id, who: SignedInDep, session: SessionDep) -> JSONResponse:
    """What the campaign page polls while sending."""
    return JSONResponse(ops.stats(session, campaign_id), headers={"Cache-Control": "no-store"})


@router.get("/campaigns/{campaign_id}/deliveries.csv")
def export_deliveries(campaign_id: Id, who: SignedInDep, session: SessionDep, engine: EngineDep,
                      status: str = delivery_ops.DEFAULT_FILTER, q: str = "") -> StreamingResponse:
    """The deliveries the campaign page lists (every page), as CSV."""
    session.rollback()  # the sign-in check's transaction; the export reads in its own (SQLite: one writer)
    return csv_response(delivery_ops.export_chunks(engine, campaign_id=campaign_id, status=status, q=q),
                        delivery_ops.csv_filename(campaign_id, status))


@router.post("/campaigns/{campaign_id}/{action}", response_class=HTMLResponse)
def change_campaign(campaign_id: Id, action: str, request: Request, who: SignedInDep, form: CheckedFormDep,
                    session: SessionDep, settings: SettingsDep):
    fields = {"at": str(form.get("at") or ""), "tz": str(form.get("tz") or "")}
    try:
        if action == "reschedule":
            done = ops.reschedule(session, campaign_id=campaign_id, at=fields["at"], tz=fields["tz"])
        elif action in ops.ACTIONS:
            done = ops.ACTIONS[action](session, campaign_id=campaign_id)
        else:
            raise NotFound(f"no campaign action {action!r}")
        commit(session, done, settings=settings)
    except InvalidInput as err:
        session.rollback()
        return campaign_page(request, settings, session, who, campaign_id, status=status_of(err), error=str(err),
                             form=fields)
    return see_other(f"/admin/campaigns/{campaign_id}?done={action}")
