"""the monthly digest: a contact's own digest subscription (apart from the email consent
for announcements), and an events row may stand for a series' digest of one month

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 08:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        # NULL: follows the email consent; true: wants the digest (also "only the digest");
        # false: unsubscribed from the digest (announcements untouched)
        batch_op.add_column(sa.Column('digest', sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column('digest_source', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('digest_at', sa.DateTime(), nullable=True))
    with op.batch_alter_table('events', schema=None) as batch_op:
        # 'event', or 'digest': the row the digest's ledger rows hang on (one per series and
        # month), so that the digest goes through the waves' own send pipeline
        batch_op.add_column(sa.Column('kind', sa.String(length=16), nullable=False,
                                      server_default='event'))


def downgrade() -> None:
    op.execute("DELETE FROM events WHERE kind = 'digest'")
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_column('kind')
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_column('digest_at')
        batch_op.drop_column('digest_source')
        batch_op.drop_column('digest')
