"""the series: events name their series, registrations keep how the person came (UTM tags,
short link) and walk-ins, short-link clicks are counted

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 07:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('series', sa.String(length=120), nullable=True))
        batch_op.create_index(batch_op.f('ix_events_series'), ['series'], unique=False)
    # an event stored before series existed belongs to the series of its topic (the default)
    op.execute("UPDATE events SET series = topic WHERE series IS NULL")

    with op.batch_alter_table('registrations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('walk_in', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        for name in ('utm_source', 'utm_medium', 'utm_campaign', 'utm_content'):
            batch_op.add_column(sa.Column(name, sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('short_link', sa.String(length=300), nullable=True))

    op.create_table('link_clicks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('wave', sa.String(length=16), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('clicked_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['events.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('link_clicks', schema=None) as batch_op:
        batch_op.create_index('ix_link_clicks_event', ['event_id', 'wave', 'channel'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('link_clicks', schema=None) as batch_op:
        batch_op.drop_index('ix_link_clicks_event')
    op.drop_table('link_clicks')
    with op.batch_alter_table('registrations', schema=None) as batch_op:
        for name in ('short_link', 'utm_content', 'utm_campaign', 'utm_medium', 'utm_source',
                     'walk_in'):
            batch_op.drop_column(name)
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_events_series'))
        batch_op.drop_column('series')
