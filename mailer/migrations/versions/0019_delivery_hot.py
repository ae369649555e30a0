"""delivery: the attention index on a computed column, so marks and records update in place

Revision ID: 0019_delivery_hot
Revises: 0018_import_speed

PostgreSQL updates a row in place (HOT: no new entry in any index) only when no column
that an index names changes, and the columns in a partial index's condition count.
``ix_delivery_attention`` was on (campaign_id, status) WHERE status IN (failed, bounced,
skipped), so each of a message's two updates (the mark, the record) changed an indexed
column: 3% of them were HOT, the rest added an entry to all four of the table's indexes
and left the primary key three entries deep per row (bench/send.py).

``attention`` is computed by the database from the status (a stored generated column),
and the index is on (campaign_id, id) WHERE attention: queued -> sending -> sent leaves
``attention`` false, so both updates stay in place. On PostgreSQL adding the column
rewrites the table (seconds per million deliveries); on SQLite the table is copied.
"""
from alembic import op
import sqlalchemy as sa

revision = '0019_delivery_hot'
down_revision = '0018_import_speed'
branch_labels = None
depends_on = None

ATTENTION = "status IN ('failed', 'bounced', 'skipped')"


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == 'sqlite'
    # SQLite cannot add a stored generated column to a table: the batch copies it.
    with op.batch_alter_table('delivery', recreate='always' if sqlite else 'auto') as batch:
        batch.drop_index('ix_delivery_attention')
        batch.add_column(sa.Column('attention', sa.Boolean(), sa.Computed(ATTENTION, persisted=True)))
        batch.create_index('ix_delivery_attention', ['campaign_id', 'id'], unique=False,
                           postgresql_where=sa.text('attention'), sqlite_where=sa.text('attention'))


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == 'sqlite'
    with op.batch_alter_table('delivery', recreate='always' if sqlite else 'auto') as batch:
        batch.drop_index('ix_delivery_attention')
        batch.drop_column('attention')
        batch.create_index('ix_delivery_attention', ['campaign_id', 'status'], unique=False,
                           postgresql_where=sa.text(ATTENTION), sqlite_where=sa.text(ATTENTION))
