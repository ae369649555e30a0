"""archive: the published images of issues

Revision ID: 0005_archive
Revises: 0008_reliability

An issue's local images are published once, as ``asset`` rows found by the SHA-256 of
their bytes (served under /issues/assets/); ``issue_image`` names them per issue, so the
issue renders again from its text alone.
"""
from alembic import op
import sqlalchemy as sa

revision = '0005_archive'
down_revision = '0008_reliability'  # after the reliability columns (merged first)
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'asset',
        sa.Column('id', BigId, nullable=False),
        sa.Column('digest', sa.String(length=64), nullable=False),
        sa.Column('media_type', sa.String(length=50), nullable=False),
        sa.Column('width', sa.Integer(), nullable=False),
        sa.Column('height', sa.Integer(), nullable=False),
        sa.Column('data', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_asset')),
        sa.UniqueConstraint('digest', name=op.f('uq_asset_digest')),
    )
    op.create_table(
        'issue_image',
        sa.Column('issue_id', BigId, nullable=False),
        sa.Column('name', sa.String(length=1000), nullable=False),
        sa.Column('asset_id', BigId, nullable=False),
        sa.ForeignKeyConstraint(['issue_id'], ['issue.id'], name=op.f('fk_issue_image_issue_id_issue'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['asset_id'], ['asset.id'], name=op.f('fk_issue_image_asset_id_asset'),
                                ondelete='RESTRICT'),
        sa.PrimaryKeyConstraint('issue_id', 'name', name=op.f('pk_issue_image')),
    )
    op.create_index(op.f('ix_issue_image_asset_id'), 'issue_image', ['asset_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_issue_image_asset_id'), table_name='issue_image')
    op.drop_table('issue_image')
    op.drop_table('asset')
