"""The editor's dashboard under ``/admin``: server-rendered pages from
``templates/web/admin/``.

Every route but the sign-in page needs a session (``auth.signed_in``); every POST needs
the session's CSRF token (``auth.checked_form``, or ``auth.checked_header`` for the
editor's preview fetch). A refused action re-renders its page with the one-line reason
and a 4xx status; a successful one redirects (303), so a reload never posts twice.
"""

from __future__ import annotations

from fastapi import APIRouter

from mailer.web.dashboard import (
    campaigns,
    issues,
    overview,
    schedules,
    session,
    subscribers,
    webhooks,
)

router = APIRouter()
for module in (session, overview, issues, schedules, campaigns, subscribers, webhooks):
    router.include_router(module.router, prefix="/admin", include_in_schema=False)
