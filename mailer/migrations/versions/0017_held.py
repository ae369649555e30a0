"""held: what pre-flight said when the dispatcher held a scheduled campaign

Revision ID: 0017_held
Revises: 0016_welcome

Hand-written for SQLite and PostgreSQL alike. ``campaign.preflight_overridden``: the
editor scheduled it although a pre-flight check failed (the dispatcher then does not
check again); ``campaign.held_checks``: the checks as the dispatcher ran them when they
failed at the campaign's time and it was held (NULL otherwise).
"""
from alembic import op
import sqlalchemy as sa

revision = '0017_held'
down_revision = '0016_welcome'
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), 'postgresql')


def upgrade() -> None:
    with op.batch_alter_table('campaign') as batch:
        batch.add_column(sa.Column('preflight_overridden', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column('held_checks', Json, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('campaign') as batch:
        batch.drop_column('held_checks')
        batch.drop_column('preflight_overridden')
