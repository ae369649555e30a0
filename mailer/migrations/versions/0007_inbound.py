"""inbound: messages kept unprocessed, soft bounces

Revision ID: 0007_inbound
Revises: 0010_scale

Hand-written for SQLite and PostgreSQL alike. ``inbound_message`` keeps every inbound
message (or provider event) that could not be acted on, its raw bytes capped by
``NEWSLETTER_INBOUND_MAX_BYTES``; ``soft_bounce`` counts transient failures per delivery
for the soft-bounce limit.
"""
from alembic import op
import sqlalchemy as sa

revision = '0007_inbound'
down_revision = '0010_scale'  # merged after 0005_archive and 0010_scale
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'inbound_message',
        sa.Column('id', BigId, nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('channel', sa.String(length=16), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('delivery_id', BigId, nullable=True),
        sa.Column('size', sa.Integer(), nullable=False),
        sa.Column('raw', sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("status IN ('unprocessed', 'ignored')", name=op.f('ck_inbound_message_status')),
        sa.ForeignKeyConstraint(['delivery_id'], ['delivery.id'],
                                name=op.f('fk_inbound_message_delivery_id_delivery'), ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_inbound_message')),
    )
    op.create_index('ix_inbound_message_status_received', 'inbound_message', ['status', 'received_at'])
    op.create_table(
        'soft_bounce',
        sa.Column('id', BigId, nullable=False),
        sa.Column('subscriber_id', BigId, nullable=False),
        sa.Column('delivery_id', BigId, nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['subscriber_id'], ['subscriber.id'],
                                name=op.f('fk_soft_bounce_subscriber_id_subscriber'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['delivery_id'], ['delivery.id'],
                                name=op.f('fk_soft_bounce_delivery_id_delivery'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_soft_bounce')),
        sa.UniqueConstraint('delivery_id', name=op.f('uq_soft_bounce_delivery_id')),
    )
    op.create_index('ix_soft_bounce_subscriber_time', 'soft_bounce', ['subscriber_id', 'created_at'])


def downgrade() -> None:
    op.drop_index('ix_soft_bounce_subscriber_time', table_name='soft_bounce')
    op.drop_table('soft_bounce')
    op.drop_index('ix_inbound_message_status_received', table_name='inbound_message')
    op.drop_table('inbound_message')
