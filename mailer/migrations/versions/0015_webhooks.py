"""webhooks: outbound webhook endpoints and the outbox/log of their deliveries

Revision ID: 0015_webhooks
Revises: 0013_growth

Hand-written for SQLite and PostgreSQL alike. ``webhook_endpoint`` is one receiver: its
URL, the event types it gets, its signing secret and the previous one during a
rotation's grace period. ``webhook_delivery`` is one event for one endpoint, written in
the transaction of the change (the outbox), then the log of its attempts; its rows go
with their endpoint, and with the subscriber they name when that subscriber is erased.
"""
from alembic import op
import sqlalchemy as sa

revision = '0015_webhooks'
down_revision = '0013_growth'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
Json = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), 'postgresql')


def upgrade() -> None:
    op.create_table(
        'webhook_endpoint',
        sa.Column('id', BigId, nullable=False),
        sa.Column('url', sa.Text(), nullable=False),
        sa.Column('event_types', Json, nullable=False),
        sa.Column('description', sa.String(length=200), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('secret', sa.String(length=100), nullable=False),
        sa.Column('previous_secret', sa.String(length=100), nullable=True),
        sa.Column('previous_secret_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_endpoint')),
    )
    op.create_table(
        'webhook_delivery',
        sa.Column('id', BigId, nullable=False),
        sa.Column('endpoint_id', BigId, nullable=False),
        sa.Column('event_id', sa.String(length=40), nullable=False),
        sa.Column('message_id', sa.String(length=40), nullable=False),
        sa.Column('event_type', sa.String(length=40), nullable=False),
        sa.Column('subscriber_id', sa.BigInteger(), nullable=True),
        sa.Column('body', sa.Text(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_code', sa.Integer(), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('pending', 'delivered', 'failed', 'skipped')",
                           name=op.f('ck_webhook_delivery_status')),
        sa.ForeignKeyConstraint(['endpoint_id'], ['webhook_endpoint.id'],
                                name=op.f('fk_webhook_delivery_endpoint_id_webhook_endpoint'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_delivery')),
        sa.UniqueConstraint('message_id', name=op.f('uq_webhook_delivery_message_id')),
    )
    op.create_index('ix_webhook_delivery_status_next', 'webhook_delivery', ['status', 'next_attempt_at'])
    op.create_index('ix_webhook_delivery_endpoint', 'webhook_delivery', ['endpoint_id', 'id'])
    op.create_index('ix_webhook_delivery_subscriber', 'webhook_delivery', ['subscriber_id'])


def downgrade() -> None:
    op.drop_index('ix_webhook_delivery_subscriber', table_name='webhook_delivery')
    op.drop_index('ix_webhook_delivery_endpoint', table_name='webhook_delivery')
    op.drop_index('ix_webhook_delivery_status_next', table_name='webhook_delivery')
    op.drop_table('webhook_delivery')
    op.drop_table('webhook_endpoint')
