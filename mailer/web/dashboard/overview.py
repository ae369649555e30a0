"""``/admin``: subscribers by status, inbound messages left unprocessed, growth per week,
the recent campaigns (with their complaint rates)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from mailer.core.clock import utcnow
from mailer.operations import campaigns, inbound, overview, subscribers
from mailer.web.auth import PageRoute, SignedInDep
from mailer.web.charts import growth_chart
from mailer.web.dashboard.pages import render
from mailer.web.deps import SessionDep, SettingsDep
from subscribers.models import SubscriberStatus

router = APIRouter(route_class=PageRoute)


@router.get("", response_class=HTMLResponse)
def overview_page(request: Request, who: SignedInDep, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    return render(request, settings, "overview.html", who=who, section="home", title="Overview",
                  statuses=list(SubscriberStatus), totals=subscribers.totals(session),
                  campaigns=campaigns.list_stats(session, limit=10),
                  unprocessed_inbound=inbound.unprocessed_count(session),
                  chart=growth_chart(overview.weekly_growth(session, now=utcnow())))
