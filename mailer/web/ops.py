"""What an operator's tools ask the web app: ``/healthz`` (the process answers) and
``/readyz`` (the database, the broker and, when configured, the relay answer:
``mailer.health``). Neither needs a token: a load balancer or a compose healthcheck asks
them, and they say nothing but which service is down."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse

from mailer import health
from mailer.web.deps import SettingsDep

router = APIRouter(include_in_schema=False)


@router.get("/healthz")
def healthz() -> PlainTextResponse:
    return PlainTextResponse("ok")


@router.get("/readyz")
def readyz(settings: SettingsDep) -> JSONResponse:
    """200 when every service answers; 503 naming each one that does not."""
    found = health.readiness(settings)
    body = {"ready": found.ok, "checks": found.as_dict()}
    if not found.ok:
        body["detail"] = found.summary()
    return JSONResponse(body, status_code=200 if found.ok else 503,
                        headers={"Cache-Control": "no-store"})
