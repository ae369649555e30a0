"""import speed: subscriber.email_key compared byte for byte, status indexed where it is rare

Revision ID: 0018_import_speed
Revises: 0017_held

Two costs every imported subscriber paid on PostgreSQL (bench/import_csv.py, a third of
the merge statement between them):

- ``email_key`` is already lower-cased, so it only ever needs exact comparison: with
  ``COLLATE "C"`` its unique index compares bytes (memcmp, abbreviated keys) instead of
  going through the database's locale (strcoll) on every insert and lookup.
  SQLite compares bytes already (BINARY).
- ``ix_subscriber_status`` held every subscriber, yet almost all of them are active,
  where an index on the status is never used (a status filter that matches most of the
  table scans it). The index now holds only the rare statuses (pending, unsubscribed,
  bounced, complained), which a filter on one of them still uses, and an imported
  active subscriber costs no entry in it.
"""
from alembic import op
import sqlalchemy as sa

revision = '0018_import_speed'
down_revision = '0017_held'
branch_labels = None
depends_on = None

RARE = "status <> 'active'"


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('ALTER TABLE subscriber ALTER COLUMN email_key TYPE varchar(320) COLLATE "C"')
    with op.batch_alter_table('subscriber') as batch:
        batch.drop_index('ix_subscriber_status')
        batch.create_index('ix_subscriber_status', ['status'], unique=False,
                           postgresql_where=sa.text(RARE), sqlite_where=sa.text(RARE))


def downgrade() -> None:
    with op.batch_alter_table('subscriber') as batch:
        batch.drop_index('ix_subscriber_status')
        batch.create_index('ix_subscriber_status', ['status'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('ALTER TABLE subscriber ALTER COLUMN email_key TYPE varchar(320) COLLATE "default"')
