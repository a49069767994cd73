"""the rate schedule: per provider account, the next free slot of its pace, shared by every
worker process (`channels.ratelimit`)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'rate_schedule',
        sa.Column('account', sa.String(length=200), nullable=False),
        # wall-clock epoch seconds (a double): every worker reads the same clock (NTP)
        sa.Column('next_at', sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint('account'),
    )


def downgrade() -> None:
    op.drop_table('rate_schedule')
