"""Builds the FastAPI application from the routers, and maps the project's errors to
HTTP once: ``InvalidInput`` is a 4xx with its one-line message in ``detail``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from mailer.core.errors import InvalidInput
from mailer.web import api, dashboard, webhooks
from mailer.web.deps import status_of
from mailer.web.public import archive, preferences, signup, unsubscribe


def create_app() -> FastAPI:
    app = FastAPI(title="Newsletter", version="0.1.0")

    @app.exception_handler(InvalidInput)
    async def _invalid_input(request: Request, exc: InvalidInput):
        return JSONResponse({"detail": str(exc)}, status_code=status_of(exc))

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    for module in (archive, signup, unsubscribe, preferences, api, dashboard, webhooks):
        app.include_router(module.router)
    return app
