"""Builds the FastAPI application. Routers live one module per resource."""

from __future__ import annotations

import importlib

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from mailer.errors import ConflictError, InvalidInput, NotFound

# Routers are optional while the product grows: a module that is not there yet is skipped.
ROUTERS = (
    "mailer.web.archive",
    "subscribers.web",
    "mailer.web.admin",
)


def create_app() -> FastAPI:
    app = FastAPI(title="Newsletter", version="0.1.0")

    @app.exception_handler(InvalidInput)
    async def _invalid_input(request: Request, exc: InvalidInput):
        status = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, ConflictError) else 400
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    for name in ROUTERS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
            continue
        app.include_router(module.router)
    return app
