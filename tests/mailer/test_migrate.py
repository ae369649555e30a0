"""Alembic migrations build the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from mailer.core.db import Base
from mailer.migrate import upgrade


def test_upgrade_is_repeatable_and_matches_the_models(engine, database_url):
    upgrade(database_url)  # a second run changes nothing
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    tables = set(inspect(engine).get_table_names())
    assert {"subscriber", "mailing_list", "membership", "issue", "campaign", "batch", "delivery", "event",
            "suppression", "inbound_message", "soft_bounce"} <= tables


def test_hot_queries_have_their_indexes(engine):
    indexes = {ix["name"] for ix in inspect(engine).get_indexes("delivery")}
    assert {"ix_delivery_batch", "ix_delivery_campaign_status"} <= indexes
    uniques = {tuple(u["column_names"]) for u in inspect(engine).get_unique_constraints("delivery")}
    assert ("campaign_id", "subscriber_id") in uniques
