"""Builds the FastAPI application from the routers, behind the edge guard
(``mailer.web.guard``: body limits, no control characters, security headers), and maps
the project's errors to HTTP once: ``InvalidInput`` is a 4xx with its one-line message in
``detail``; a database or broker that does not answer is 503 with one line."""

from __future__ import annotations

import contextlib

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from markupsafe import escape
from sqlalchemy.exc import DataError, InterfaceError, OperationalError, ProgrammingError

from mailer import celeryapp
from mailer.core import logs
from mailer.core.config import get_settings
from mailer.core.db import database_error, schema_missing
from mailer.core.errors import InvalidInput, ServiceUnavailable
from mailer.operations.preflight import PreflightFailed
from mailer.web import api, dashboard, ops, webhooks
from mailer.web.deps import status_of
from mailer.web.guard import EdgeGuard
from mailer.core.db import engine_for
from mailer.operations.engagement import Tracker
from mailer.web.ops import RequestMetrics
from mailer.web.public import archive, preferences, signup, tracking, unsubscribe
from mailer.webhooks import MAX_BODY as MAX_WEBHOOK_BODY


def create_app() -> FastAPI:
    settings = get_settings()
    # Also when uvicorn runs the factory itself (not through newsletter web): its own
    # loggers then lose their handlers and come out in our format.
    logs.configure_from(settings)
    # Requests queue tasks (a welcome, webhooks): Celery is imported at start, not by the
    # first of them.
    celeryapp.preload()
    # One per process: the links of campaigns clicked lately, and the queue of clicks
    # and opens to record (written by its own thread; what is left is written at exit).
    tracker = Tracker(engine_for(settings.database), settings.signing_keys, strict=settings.tracking_strict)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        tracker.close()

    app = FastAPI(title="Newsletter", version="0.1.0", lifespan=lifespan)
    app.state.tracker = tracker
    app.add_middleware(EdgeGuard, public_limit=settings.max_public_body, editor_limit=settings.max_editor_body,
                       webhook_limit=MAX_WEBHOOK_BODY)
    app.add_middleware(RequestMetrics)  # outermost: counts the edge guard's refusals too

    @app.exception_handler(InvalidInput)
    async def _invalid_input(request: Request, exc: InvalidInput):
        return _error(request, status_of(exc), str(exc))

    @app.exception_handler(PreflightFailed)
    async def _preflight_failed(request: Request, exc: PreflightFailed):
        # The checks along with the line, for a script to show what failed.
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": str(exc), "preflight": exc.preflight.as_dict()}, status_code=409)
        return _error(request, 409, str(exc))

    @app.exception_handler(ServiceUnavailable)
    async def _unavailable(request: Request, exc: ServiceUnavailable):
        return _error(request, 503, str(exc))

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def _database_gone(request: Request, exc):
        return _error(request, 503, database_error(exc))

    @app.exception_handler(ProgrammingError)
    async def _not_migrated(request: Request, exc: ProgrammingError):
        if not schema_missing(exc):
            raise exc  # a statement of ours is wrong: a bug, a 500
        return _error(request, 503, database_error(exc))

    @app.exception_handler(DataError)
    async def _unstorable(request: Request, exc: DataError):
        # What the edge guard did not catch and the database cannot store.
        return _error(request, 400, database_error(exc))

    for module in (ops, archive, signup, unsubscribe, preferences, tracking, api, dashboard, webhooks):
        app.include_router(module.router)
    return app


def _error(request: Request, status: int, detail: str):
    """JSON for the API and for scripts; a one-line page for a browser."""
    if not request.url.path.startswith("/api/") and "text/html" in request.headers.get("accept", ""):
        return HTMLResponse(f"<!doctype html><meta charset=utf-8><title>Error {status}</title>"
                            f"<h1>Error {status}</h1><p>{escape(detail)}</p>", status_code=status)
    return JSONResponse({"detail": detail}, status_code=status)
