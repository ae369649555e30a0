"""reliability and speed: repeats on deliveries; relay outage and recovery times on
campaigns; outcome counters per batch

Revision ID: 0008_reliability
Revises: 0004

- delivery.repeats: how many times a delivery was sent again after an attempt whose
  outcome was never recorded (a worker or its database connection died after the relay
  had the message): a possible duplicate, visible in the record.
- campaign.relay_down_since / relay_error: since when, and why, the relay does not
  answer (shown by `newsletter campaign status`); cleared by the next accepted message.
- campaign.recovery_at: when a task is queued to take over work whose lease runs out;
  one such waiting task per campaign (a guarded UPDATE claims the right to queue it).
- batch.sent/failed/bounced/skipped: a batch's outcomes, counted when it is let go; the
  campaign's counters move by their difference, once per batch instead of per message.
"""
from alembic import op
import sqlalchemy as sa

revision = '0008_reliability'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('delivery', schema=None) as batch_op:
        batch_op.add_column(sa.Column('repeats', sa.Integer(), nullable=False, server_default='0'))
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        batch_op.add_column(sa.Column('relay_down_since', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('relay_error', sa.Text(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('recovery_at', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('batch', schema=None) as batch_op:
        for column in ('sent', 'failed', 'bounced', 'skipped'):
            batch_op.add_column(sa.Column(column, sa.Integer(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('batch', schema=None) as batch_op:
        for column in ('skipped', 'bounced', 'failed', 'sent'):
            batch_op.drop_column(column)
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        batch_op.drop_column('recovery_at')
        batch_op.drop_column('relay_error')
        batch_op.drop_column('relay_down_since')
    with op.batch_alter_table('delivery', schema=None) as batch_op:
        batch_op.drop_column('repeats')
