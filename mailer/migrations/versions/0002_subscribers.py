"""subscribers: signup rate-limit counters

Revision ID: 0002
Revises: 0001

One row per (purpose, hashed client or address): a fixed-window counter that the public
signup form increments with one INSERT ... ON CONFLICT DO UPDATE ... RETURNING, atomic on
SQLite (3.35+) and PostgreSQL alike, so rate limiting needs no Redis. Keys are sha256
hashes: no IP address or email address is stored here.
"""
from alembic import op
import sqlalchemy as sa

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'signup_limit',
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('window_start', sa.BigInteger(), nullable=False),
        sa.Column('hits', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('key', name=op.f('pk_signup_limit')),
    )
    with op.batch_alter_table('signup_limit', schema=None) as batch_op:
        # Old windows are swept by window_start.
        batch_op.create_index('ix_signup_limit_window_start', ['window_start'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('signup_limit', schema=None) as batch_op:
        batch_op.drop_index('ix_signup_limit_window_start')
    op.drop_table('signup_limit')
