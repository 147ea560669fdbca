"""Cluster queues: the queued counter of the queue quotas and the change stamps the reconciler compares.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('cluster_queues',
    sa.Column('cluster_id', sa.Uuid(), nullable=False),
    sa.Column('organization_id', sa.Uuid(), nullable=False),
    sa.Column('queued', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('changes', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('passed_changes', sa.BigInteger(), server_default='0', nullable=False),
    sa.ForeignKeyConstraint(['cluster_id'], ['clusters.id'], name=op.f('fk_cluster_queues_cluster_id_clusters'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_cluster_queues_organization_id_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('cluster_id', name=op.f('pk_cluster_queues'))
    )
    op.create_index(op.f('ix_cluster_queues_organization_id'), 'cluster_queues', ['organization_id'], unique=False)
    # Every existing cluster gets its row; one with queued work counts as changed, so it gets a pass.
    op.execute(
        "INSERT INTO cluster_queues (cluster_id, organization_id, queued, changes) "
        "SELECT c.id, c.organization_id, count(d.id), least(count(d.id), 1) FROM clusters c "
        "LEFT JOIN deployments d ON d.cluster_id = c.id AND d.status = 'queued' GROUP BY c.id"
    )


def downgrade() -> None:
    op.drop_index(op.f('ix_cluster_queues_organization_id'), table_name='cluster_queues')
    op.drop_table('cluster_queues')
