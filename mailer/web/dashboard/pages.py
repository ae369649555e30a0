"""What every dashboard page shares: rendering with the signed-in editor, the notice
a redirect leaves behind, and the list of time zones."""

from __future__ import annotations

import functools
from zoneinfo import available_timezones

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse

from mailer.core.config import Settings
from mailer.models import CampaignStatus
from mailer.web.auth import SignedIn
from mailer.web.charts import complaint_meter
from mailer.web.templating import page_templates

# ``?done=`` after a redirect: what the action did (a campaign's new state, where it has one).
NOTICES = {
    "saved": "Saved.",
    "created": "Issue saved. Send yourself a test, then schedule it.",
    "deleted": "Issue deleted.",
    CampaignStatus.scheduled: "Scheduled.",
    CampaignStatus.sending: "Sending started.",
    "slot": "Weekly slot saved.",
    "tracking": "Tracking saved; campaigns that start from now on follow it.",
    "pause": "Campaign paused.",
    "resume": "Campaign resumed.",
    "cancel": "Campaign cancelled.",
    "retry": "Failed deliveries queued again.",
    "reschedule": "Campaign moved.",
    "signed-out": "You are signed out.",
    "added": "Subscriber saved.",
    "imported": "Import finished.",
}


@functools.lru_cache(maxsize=1)
def zones() -> tuple[str, ...]:
    return tuple(sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/"))))


def render(request: Request, settings: Settings, name: str, *, who: SignedIn | None, status: int = 200,
           **context) -> HTMLResponse:
    notice = NOTICES.get(request.query_params.get("done", ""))
    values = {"who": who, "csrf": who.csrf if who else "", "notice": notice, "error": None,
              "complaint_meter": complaint_meter, **context}
    return page_templates(settings).TemplateResponse(request, f"web/admin/{name}", values, status_code=status)


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)
