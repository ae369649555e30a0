"""growth: import batches as consent evidence, tags and the import batch on subscribers

Revision ID: 0013_growth
Revises: 0012_tracking

Hand-written for SQLite and PostgreSQL alike. ``import_batch`` is one row per imported
file (name, time, source, counts): the consent evidence of everyone it brought in, in
place of one ``event`` row per imported subscriber. ``subscriber.import_batch_id`` points
at it (no foreign key: it would be checked per inserted row of a million-row import);
``subscriber.tags`` holds the tags a platform export (or an editor) gives;
``campaign.segment`` the segment expression a campaign goes to (empty: the whole list).
``membership`` loses its foreign keys: PostgreSQL checked both per inserted row, ~45% of
merging an imported chunk; lists and subscribers are never deleted by the product.
"""
from alembic import op
import sqlalchemy as sa

revision = '0013_growth'
down_revision = '0012_tracking'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
Json = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), 'postgresql')


def upgrade() -> None:
    op.create_table(
        'import_batch',
        sa.Column('id', BigId, nullable=False),
        sa.Column('list_name', sa.String(length=100), nullable=False),
        sa.Column('file_name', sa.String(length=255), nullable=False),
        sa.Column('source', sa.String(length=32), nullable=False),
        sa.Column('origin', sa.String(length=32), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('rows', sa.Integer(), nullable=False),
        sa.Column('imported', sa.Integer(), nullable=False),
        sa.Column('updated', sa.Integer(), nullable=False),
        sa.Column('skipped_suppressed', sa.Integer(), nullable=False),
        sa.Column('skipped_existing_status', sa.Integer(), nullable=False),
        sa.Column('suppressions_added', sa.Integer(), nullable=False),
        sa.Column('errors', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_import_batch')),
    )
    with op.batch_alter_table('subscriber', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tags', Json, server_default=sa.text("'[]'"), nullable=False))
        batch_op.add_column(sa.Column('import_batch_id', sa.BigInteger(), nullable=True))
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        batch_op.add_column(sa.Column('segment', sa.Text(), server_default='', nullable=False))
    with op.batch_alter_table('membership', schema=None) as batch_op:
        batch_op.drop_constraint('fk_membership_list_id_mailing_list', type_='foreignkey')
        batch_op.drop_constraint('fk_membership_subscriber_id_subscriber', type_='foreignkey')


def downgrade() -> None:
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        batch_op.drop_column('segment')
    with op.batch_alter_table('membership', schema=None) as batch_op:
        batch_op.create_foreign_key('fk_membership_subscriber_id_subscriber', 'subscriber', ['subscriber_id'], ['id'],
                                    ondelete='CASCADE')
        batch_op.create_foreign_key('fk_membership_list_id_mailing_list', 'mailing_list', ['list_id'], ['id'],
                                    ondelete='CASCADE')
    with op.batch_alter_table('subscriber', schema=None) as batch_op:
        batch_op.drop_column('import_batch_id')
        batch_op.drop_column('tags')
    op.drop_table('import_batch')
