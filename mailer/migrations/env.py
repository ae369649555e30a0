"""Alembic environment. The URL comes from the settings (``NEWSLETTER_DATABASE_URL``),
or from ``config.attributes["connection"]`` when a caller passes an open connection."""

from alembic import context

import mailer.models  # noqa: F401  (registers every table on Base.metadata, accounts included)
from mailer.core.db import Base, make_engine

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
