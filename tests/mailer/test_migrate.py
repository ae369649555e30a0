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
    assert indexes["ix_delivery_attention"] == ["campaign_id", "id"]  # keyset pages of one campaign
    uniques = {tuple(u["column_names"]) for u in inspect(engine).get_unique_constraints("delivery")}
    assert ("campaign_id", "subscriber_id") in uniques


def test_the_delivery_table_is_shaped_for_a_million_rows(engine):
    """No foreign key checked per inserted row, no status in any index (nor in a partial
    index's condition) a message's two updates would have to touch, and room in each
    page for those updates in place: on PostgreSQL they are HOT updates."""
    assert inspect(engine).get_foreign_keys("delivery") == []
    for ix in inspect(engine).get_indexes("delivery"):
        where = str(ix.get("dialect_options", {}).get(f"{engine.dialect.name}_where", ""))
        assert "status" not in ix["column_names"] and "status" not in where, ix
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            options = conn.exec_driver_sql("SELECT reloptions FROM pg_class WHERE relname = 'delivery'").scalar()
            assert "fillfactor=70" in options
            conn.exec_driver_sql("INSERT INTO delivery (id, campaign_id, subscriber_id, batch_seq, status, attempts, "
                                 "last_reply, message_id, queued_at) VALUES (1, 1, 1, 0, 'queued', 0, '', '', now())")
            conn.exec_driver_sql("UPDATE delivery SET status = 'sending', updated_at = now() WHERE id = 1")  # the mark
            conn.exec_driver_sql("UPDATE delivery SET status = 'sent', sent_at = now() WHERE id = 1")  # the record
            updates, hot = conn.exec_driver_sql("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables "
                                                "WHERE relname = 'delivery'").one()
            assert (updates, hot) == (2, 2), "the mark and the record updated the row in place"
            conn.exec_driver_sql("UPDATE delivery SET status = 'failed' WHERE id = 1")
            attention = conn.exec_driver_sql("SELECT attention FROM delivery WHERE id = 1").scalar()
            assert attention is True  # computed by the database from the status
            conn.rollback()


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
