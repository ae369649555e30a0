"""``newsletter db upgrade``: Alembic, configured in code so no alembic.ini is needed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mailer.core.db import check_connection, make_engine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str) -> Config:
    # Alembic is imported here, not at the top: a quarter of a second that only the
    # commands which migrate should pay (every `newsletter` command imports this module).
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema up to ``revision``; safe to run again (it does nothing then)."""
    engine = make_engine(database_url)
    try:
        check_connection(engine)
        cfg = alembic_config(database_url)
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            from alembic import command

            command.upgrade(cfg, revision)
    finally:
        engine.dispose()
