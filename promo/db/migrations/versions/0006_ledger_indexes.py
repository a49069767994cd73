"""the ledger costs a decision less: no foreign keys on messages (the contact and the event
are checked once per write instead of a trigger per row: `flows.ledger.record_decisions`,
and forgetting unlinks a person's rows itself: `audiences.privacy.forget`), no index of its
own on `contact_id` (the first column of `ix_messages_caps`, which serves every lookup by
contact), and the provider's id indexed only where there is one (NULL for every decision
until it is sent)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

SENT_ONLY = sa.text('provider_message_id IS NOT NULL')
# SQLite's foreign keys have no names: the batch names them when it reads the table
NAMES = {"fk": "%(table_name)s_%(column_0_name)s_fkey"}
KEYS = (('messages_contact_id_fkey', 'contacts', 'contact_id', 'SET NULL'),
        ('messages_event_id_fkey', 'events', 'event_id', 'CASCADE'))


def upgrade() -> None:
    op.drop_index('ix_messages_contact_id', table_name='messages')
    op.drop_index('ix_messages_provider_message_id', table_name='messages')
    op.create_index('ix_messages_provider_message_id', 'messages', ['provider_message_id'],
                    unique=False, postgresql_where=SENT_ONLY, sqlite_where=SENT_ONLY)
    with op.batch_alter_table('messages', naming_convention=NAMES) as batch_op:
        for name, *_ in KEYS:
            batch_op.drop_constraint(name, type_='foreignkey')


def downgrade() -> None:
    with op.batch_alter_table('messages', naming_convention=NAMES) as batch_op:
        for name, table, column, ondelete in KEYS:
            batch_op.create_foreign_key(name, table, [column], ['id'], ondelete=ondelete)
    op.drop_index('ix_messages_provider_message_id', table_name='messages')
    op.create_index('ix_messages_provider_message_id', 'messages', ['provider_message_id'],
                    unique=False)
    op.create_index('ix_messages_contact_id', 'messages', ['contact_id'], unique=False)
