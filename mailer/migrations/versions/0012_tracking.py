"""tracking: per-list switches for click and open tracking, an issue's link targets,
engagement events

Revision ID: 0012_tracking
Revises: 0007_inbound

Hand-written for SQLite and PostgreSQL alike. Tracking is off for every list, old and
new (``server_default`` false). ``issue.links`` is the list of an issue's content links
in the order click tokens number them (``mailer.tracking``): the targets live here, never
in a URL. ``engagement_event`` is one click or open, tied to its delivery and subscriber
(no foreign keys: written from the redirect, one insert each; a delivery and a subscriber
are never deleted, an erasure removes the events first), judged person or machine with
the reason (``mailer.machines``). ``engagement_count`` holds what is left of them after
the retention window (or at once, in strict mode): counts per campaign, kind, link and
verdict, with no delivery or subscriber.
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0012_tracking'
down_revision = '0007_inbound'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
Json = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    with op.batch_alter_table('mailing_list', schema=None) as batch_op:
        batch_op.add_column(sa.Column('track_clicks', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('track_opens', sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table('issue', schema=None) as batch_op:
        batch_op.add_column(sa.Column('links', Json, server_default='[]', nullable=False))
    op.create_table(
        'engagement_event',
        sa.Column('id', BigId, nullable=False),
        sa.Column('campaign_id', BigId, nullable=False),
        sa.Column('delivery_id', BigId, nullable=True),
        sa.Column('subscriber_id', BigId, nullable=True),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('link_index', sa.Integer(), nullable=True),
        sa.Column('method', sa.String(length=8), server_default='GET', nullable=False),
        sa.Column('user_agent', sa.String(length=500), server_default='', nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('machine', sa.Boolean(), nullable=True),
        sa.Column('reason', sa.String(length=200), server_default='', nullable=False),
        sa.CheckConstraint("kind IN ('click', 'open')", name=op.f('ck_engagement_event_kind')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_engagement_event')),
    )
    op.create_index('ix_engagement_event_campaign', 'engagement_event', ['campaign_id', 'kind', 'created_at'])
    op.create_index('ix_engagement_event_subscriber', 'engagement_event', ['subscriber_id'])
    op.create_table(
        'engagement_count',
        sa.Column('id', BigId, nullable=False),
        sa.Column('campaign_id', BigId, nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('link_index', sa.Integer(), nullable=False),
        sa.Column('machine', sa.Boolean(), nullable=False),
        sa.Column('reason', sa.String(length=200), nullable=False),
        sa.Column('events', sa.Integer(), nullable=False),
        sa.Column('readers', sa.Integer(), nullable=False),
        sa.CheckConstraint("kind IN ('click', 'open')", name=op.f('ck_engagement_count_kind')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_engagement_count')),
        sa.UniqueConstraint('campaign_id', 'kind', 'link_index', 'machine', 'reason', name='uq_engagement_count_key'),
    )


def downgrade() -> None:
    op.drop_table('engagement_count')
    op.drop_index('ix_engagement_event_subscriber', table_name='engagement_event')
    op.drop_index('ix_engagement_event_campaign', table_name='engagement_event')
    op.drop_table('engagement_event')
    with op.batch_alter_table('issue', schema=None) as batch_op:
        batch_op.drop_column('links')
    with op.batch_alter_table('mailing_list', schema=None) as batch_op:
        batch_op.drop_column('track_opens')
        batch_op.drop_column('track_clicks')
