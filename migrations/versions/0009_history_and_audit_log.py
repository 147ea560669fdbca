"""History and the audit log: the organization's audit log, and cluster events read newest first a page at a time.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24
"""

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('organization_events',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('organization_id', sa.Uuid(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('clock_timestamp()'), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('actor_id', sa.Uuid(), nullable=True),
    # No foreign key: a deleted cluster's entries stay in the log.
    sa.Column('cluster_id', sa.Uuid(), nullable=True),
    sa.ForeignKeyConstraint(['actor_id'], ['users.id'], name=op.f('fk_organization_events_actor_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_organization_events_organization_id_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_organization_events'))
    )
    op.create_index(op.f('ix_organization_events_actor_id'), 'organization_events', ['actor_id'], unique=False)
    op.create_index('ix_organization_events_organization_id_id', 'organization_events', ['organization_id', 'id'], unique=False)
    op.drop_index(op.f('ix_cluster_events_cluster_id'), table_name='cluster_events')
    op.create_index('ix_cluster_events_cluster_id_id', 'cluster_events', ['cluster_id', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_cluster_events_cluster_id_id', table_name='cluster_events')
    op.create_index(op.f('ix_cluster_events_cluster_id'), 'cluster_events', ['cluster_id'], unique=False)
    op.drop_index('ix_organization_events_organization_id_id', table_name='organization_events')
    op.drop_index(op.f('ix_organization_events_actor_id'), table_name='organization_events')
    op.drop_table('organization_events')
