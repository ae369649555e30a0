"""welcome: a campaign's kind (an issue, or a list's welcome mail), named segments

Revision ID: 0016_welcome
Revises: 0015_webhooks

Hand-written for SQLite and PostgreSQL alike. ``campaign.kind`` is 'issue' for every
campaign so far (``server_default``); a list's welcome mail is one campaign of kind
'welcome' (at most one per list: a partial unique index), which stays 'sending' and gets
one delivery, in a batch of its own, per subscriber who confirms (``mailer.welcome``).
``segment`` is a named segment expression of a list (``subscribers.segments``).
"""
from alembic import op
import sqlalchemy as sa

revision = '0016_welcome'
down_revision = '0015_webhooks'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=16), server_default='issue', nullable=False))
        batch_op.create_check_constraint(op.f('ck_campaign_kind'), "kind IN ('issue', 'welcome')")
    op.create_index('uq_campaign_welcome_list', 'campaign', ['list_id'], unique=True,
                    postgresql_where=sa.text("kind = 'welcome'"), sqlite_where=sa.text("kind = 'welcome'"))
    op.create_table(
        'segment',
        sa.Column('id', BigId, nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('list_id', BigId, nullable=False),
        sa.Column('expression', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_segment')),
        sa.UniqueConstraint('name', name=op.f('uq_segment_name')),
    )


def downgrade() -> None:
    op.drop_table('segment')
    op.drop_index('uq_campaign_welcome_list', table_name='campaign')
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_campaign_kind'), type_='check')
        batch_op.drop_column('kind')
