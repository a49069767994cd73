"""the send lease: a `sending` row names the worker that claimed it and when; workers
renew a lease while they live

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 08:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claimed_by', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('claimed_at', sa.DateTime(), nullable=True))
    op.create_table(
        'send_workers',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('host', sa.String(length=200), nullable=False),
        sa.Column('pid', sa.Integer(), nullable=False),
        sa.Column('process_start', sa.String(length=40), nullable=True),
        sa.Column('started_at', sa.DateTime(), nullable=False),
        sa.Column('lease_until', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )


def downgrade() -> None:
    op.drop_table('send_workers')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('claimed_at')
        batch_op.drop_column('claimed_by')
