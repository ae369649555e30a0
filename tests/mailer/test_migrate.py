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
    indexes = {ix["name"]: ix["column_names"] for ix in inspect(engine).get_indexes("delivery")}
    assert indexes["ix_delivery_batch"] == ["campaign_id", "batch_seq"]
    assert indexes["ix_delivery_attention"] == ["campaign_id", "status"]
    uniques = {tuple(u["column_names"]) for u in inspect(engine).get_unique_constraints("delivery")}
    assert ("campaign_id", "subscriber_id") in uniques


def test_the_delivery_table_is_shaped_for_a_million_rows(engine):
    """No foreign key checked per inserted row, no status in an index a message's two
    updates would have to touch, and room in each page for those updates in place."""
    assert inspect(engine).get_foreign_keys("delivery") == []
    assert not any("status" in ix["column_names"] for ix in inspect(engine).get_indexes("delivery")
                   if ix["name"] != "ix_delivery_attention")
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            options = conn.exec_driver_sql("SELECT reloptions FROM pg_class WHERE relname = 'delivery'").scalar()
        assert "fillfactor=70" in options
