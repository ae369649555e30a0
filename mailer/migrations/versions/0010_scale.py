"""a million deliveries: no foreign keys and no status in the big indexes of delivery

Revision ID: 0010_scale
Revises: 0005_archive

- delivery loses its foreign keys to campaign and subscriber: PostgreSQL checked both per
  inserted row (each check locks the referenced row), ~40% of freezing a million-row
  audience; neither row is ever deleted by the product (see ``mailer.models.Delivery``).
- ix_delivery_batch becomes (campaign_id, batch_seq) and ix_delivery_campaign_status
  goes: with no index holding the status, marking and recording a message can be HOT
  updates on PostgreSQL; fillfactor 70 leaves the room in each page for them.
- ix_delivery_attention: (campaign_id, status) for the failed, bounced and skipped ones.
"""
from alembic import op
import sqlalchemy as sa

revision = '0010_scale'
down_revision = '0005_archive'
branch_labels = None
depends_on = None

ATTENTION = "status IN ('failed', 'bounced', 'skipped')"


def upgrade() -> None:
    with op.batch_alter_table('delivery', schema=None) as batch_op:
        batch_op.drop_constraint('fk_delivery_campaign_id_campaign', type_='foreignkey')
        batch_op.drop_constraint('fk_delivery_subscriber_id_subscriber', type_='foreignkey')
        batch_op.drop_index('ix_delivery_campaign_status')
        batch_op.drop_index('ix_delivery_batch')
        batch_op.create_index('ix_delivery_batch', ['campaign_id', 'batch_seq'], unique=False)
        batch_op.create_index('ix_delivery_attention', ['campaign_id', 'status'], unique=False,
                              postgresql_where=sa.text(ATTENTION), sqlite_where=sa.text(ATTENTION))
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("ALTER TABLE delivery SET (fillfactor = 70)")


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("ALTER TABLE delivery RESET (fillfactor)")
    with op.batch_alter_table('delivery', schema=None) as batch_op:
        batch_op.drop_index('ix_delivery_attention')
        batch_op.drop_index('ix_delivery_batch')
        batch_op.create_index('ix_delivery_batch', ['campaign_id', 'batch_seq', 'status'], unique=False)
        batch_op.create_index('ix_delivery_campaign_status', ['campaign_id', 'status'], unique=False)
        batch_op.create_foreign_key('fk_delivery_subscriber_id_subscriber', 'subscriber', ['subscriber_id'], ['id'],
                                    ondelete='CASCADE')
        batch_op.create_foreign_key('fk_delivery_campaign_id_campaign', 'campaign', ['campaign_id'], ['id'],
                                    ondelete='CASCADE')
