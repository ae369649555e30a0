"""Typed dependencies for routes (FastAPI full-stack template style)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session

from mailer.config import Settings, get_settings
from mailer.db import engine_for


def get_app_settings() -> Settings:
    return get_settings()


def get_session(settings: Annotated[Settings, Depends(get_app_settings)]) -> Iterator[Session]:
    with Session(engine_for(settings.database), expire_on_commit=False) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
