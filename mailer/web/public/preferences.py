"""``/p/{token}``: a subscriber's preferences: name, leave, come back (with a fresh
confirmation), download or erase their data; and what is tracked of them."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from mailer.core.config import Settings
from mailer.core.errors import InvalidInput
from mailer.operations import subscribers as ops
from mailer.web.deps import EngineDep, SettingsDep
from mailer.web.public.pages import NO_STORE, for_link, mask, page
from subscribers import service
from subscribers.models import MAILABLE, Subscriber

router = APIRouter(tags=["subscribers"])


def _page(request: Request, settings: Settings, session: Session, token: str, subscriber: Subscriber,
          status_code: int = 200, **extra: Any) -> HTMLResponse:
    context = dict(action=f"/p/{token}", masked=mask(subscriber.email), name=subscriber.name,
                   tracked=ops.what_is_tracked(session, subscriber_id=subscriber.id, settings=settings),
                   status=subscriber.status, mailable=subscriber.status in MAILABLE, erased=subscriber.email == service.placeholder_email(subscriber.id),
                   notice="", error="")
    context.update(extra)
    return page(request, settings, "web/preferences.html", status_code=status_code, **context)


@router.get("/p/{token}", response_class=HTMLResponse)
def preferences_page(token: str, request: Request, settings: SettingsDep, engine: EngineDep) -> Response:
    return for_link(request, settings, engine, token,
                    lambda session, subscriber, _: _page(request, settings, session, token, subscriber))


@router.post("/p/{token}")
async def preferences_post(token: str, request: Request, background: BackgroundTasks, settings: SettingsDep,
                           engine: EngineDep) -> Response:
    form = await request.form()
    fields = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    return await run_in_threadpool(_act, token, request, background, settings, engine, fields)


def _act(token: str, request: Request, background: BackgroundTasks, settings: Settings, engine,
         fields: dict[str, str]) -> Response:
    action = fields.get("action", "")
    pending = []

    def answer(session, subscriber, campaign_id) -> Response:
        if subscriber.email == service.placeholder_email(subscriber.id):
            return _page(request, settings, session, token, subscriber)  # erased: nothing left to change
        try:
            if action == "name":
                ops.edit(session, subscriber_id=subscriber.id, name=fields.get("name", ""))
                notice = "Saved."
            elif action == "leave":
                ops.unsubscribe(session, subscriber_id=subscriber.id, campaign_id=campaign_id, origin="preferences")
                notice = "You are unsubscribed."
            elif action == "resubscribe":
                notice, confirmation = ops.ask_to_resubscribe(session, subscriber=subscriber)
                pending.extend([confirmation] if confirmation else [])
            elif action == "export":
                data = ops.my_data(session, subscriber_id=subscriber.id)
                return Response(
                    json.dumps(data, ensure_ascii=False, indent=2), media_type="application/json",
                    headers={**NO_STORE, "Content-Disposition": 'attachment; filename="my-newsletter-data.json"'},
                )
            elif action == "erase":
                if fields.get("sure") != "yes":
                    raise InvalidInput("tick the box to confirm that your data should be deleted")
                ops.erase(session, subscriber_id=subscriber.id)
                notice = "Your data has been deleted."
            else:
                raise InvalidInput("unknown action")
        except InvalidInput as err:
            # Every action checks its input before it changes anything.
            return _page(request, settings, session, token, subscriber, status_code=400, error=str(err))
        session.flush()
        session.refresh(subscriber)
        return _page(request, settings, session, token, subscriber, notice=notice)

    response = for_link(request, settings, engine, token, answer)
    for confirmation in pending:
        background.add_task(ops.send_confirmation, settings, confirmation, list_name="")
    return response
