"""The admin API under ``/api/admin``: issues, campaigns, schedules, subscribers, webhooks.

Every route needs an API token (``auth.api_token``). Errors are one line in ``detail``:
400 bad input, 404 unknown thing, 409 a state that forbids it, 422 a malformed body.
A write commits once, at the end, after the operation checked everything; a refused
request changes nothing.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from mailer.web.api import campaigns, issues, schedules, subscribers, webhooks
from mailer.web.auth import api_token

router = APIRouter(prefix="/api/admin", tags=["admin"], dependencies=[Depends(api_token)],
                   responses={401: {"description": "No or an invalid API token"}})
for module in (issues, campaigns, schedules, subscribers, webhooks):
    router.include_router(module.router)
