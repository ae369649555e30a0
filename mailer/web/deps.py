"""Typed dependencies for routes (FastAPI full-stack template style), and how the
project's errors become HTTP statuses (once, for every route)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path
from fastapi.responses import StreamingResponse
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from mailer.core.config import Settings, get_settings
from mailer.core.db import MAX_ID, engine_for
from mailer.core.errors import ConflictError, Forbidden, InvalidInput, NotFound


def get_app_settings() -> Settings:
    return get_settings()


def get_engine(settings: Annotated[Settings, Depends(get_app_settings)]) -> Engine:
    return engine_for(settings.database)


def get_session(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
SessionDep = Annotated[Session, Depends(get_session)]
# An id in a path: a row's primary key, so a positive BIGINT (a larger number is 422, not
# an overflow in the database driver).
Id = Annotated[int, Path(ge=1, le=MAX_ID)]


def status_of(err: InvalidInput) -> int:
    """404 for an unknown thing, 409 for a state that forbids the action, 403 for a
    request that does not prove who sent it, 400 otherwise."""
    if isinstance(err, NotFound):
        return 404
    return 409 if isinstance(err, ConflictError) else 403 if isinstance(err, Forbidden) else 400


def csv_response(chunks: Iterator[bytes], filename: str) -> StreamingResponse:
    """A streamed CSV download (the chunks come from ``operations.streams``)."""
    name = filename.replace('"', "")
    return StreamingResponse(chunks, media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})
