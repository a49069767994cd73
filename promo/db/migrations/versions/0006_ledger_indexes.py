"""the ledger's indexes cost a decision less: no index of its own on `contact_id` (the first
column of `ix_messages_caps`, which serves every lookup by contact and the ON DELETE SET NULL
of forgetting), and the provider's id indexed only where there is one (NULL for every
decision until it is sent)

Revision ID: 0006
Revises: 0004
Create Date: 2026-11-30 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
# 0005 comes from another branch; the chain is mended when the two meet
down_revision = '0004'
branch_labels = None
depends_on = None

SENT_ONLY = sa.text('provider_message_id IS NOT NULL')


def upgrade() -> None:
    op.drop_index('ix_messages_contact_id', table_name='messages')
    op.drop_index('ix_messages_provider_message_id', table_name='messages')
    op.create_index('ix_messages_provider_message_id', 'messages', ['provider_message_id'],
                    unique=False, postgresql_where=SENT_ONLY, sqlite_where=SENT_ONLY)


def downgrade() -> None:
    op.drop_index('ix_messages_provider_message_id', table_name='messages')
    op.create_index('ix_messages_provider_message_id', 'messages', ['provider_message_id'],
                    unique=False)
    op.create_index('ix_messages_contact_id', 'messages', ['contact_id'], unique=False)
