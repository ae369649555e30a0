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


def test_the_subscriber_table_is_shaped_for_a_million_row_import(engine):
    """Migration 0018: the status index holds only the rare statuses (an imported active
    subscriber costs no entry in it), and on PostgreSQL ``email_key`` compares bytes."""
    (status,) = [ix for ix in inspect(engine).get_indexes("subscriber") if ix["name"] == "ix_subscriber_status"]
    where = status["dialect_options"].get(f"{engine.dialect.name}_where")
    assert status["column_names"] == ["status"] and "active" in str(where), status
    if engine.dialect.name == "postgresql":
        (key,) = [c for c in inspect(engine).get_columns("subscriber") if c["name"] == "email_key"]
        assert key["type"].collation == "C"
        with engine.connect() as conn:
            conn.exec_driver_sql("SET enable_seqscan = off")  # an empty table: the planner would scan it
            plan = "\n".join(conn.exec_driver_sql(
                "EXPLAIN SELECT id FROM subscriber WHERE status = 'pending'").scalars())
        assert "ix_subscriber_status" in plan, plan  # a filter on a rare status still uses it
