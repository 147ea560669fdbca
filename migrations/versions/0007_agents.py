"""Agents: cluster runtimes, agent tokens and leases, deployments' command / env / grace / generation / runtime,
and the logs of their latest run.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('clusters', sa.Column('runtime', sa.String(length=16), server_default='simulated', nullable=False))
    op.create_check_constraint(op.f('ck_clusters_runtime'), 'clusters', "runtime IN ('simulated', 'agent')")
    op.create_table('agent_tokens',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('cluster_id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_by', sa.Uuid(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['cluster_id'], ['clusters.id'], name=op.f('fk_agent_tokens_cluster_id_clusters'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_agent_tokens_created_by_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agent_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_agent_tokens_token_hash'))
    )
    op.create_index(op.f('ix_agent_tokens_cluster_id'), 'agent_tokens', ['cluster_id'], unique=False)
    op.create_table('cluster_agents',
    sa.Column('cluster_id', sa.Uuid(), nullable=False),
    sa.Column('token_id', sa.Uuid(), nullable=True),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('driver', sa.String(length=64), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['cluster_id'], ['clusters.id'], name=op.f('fk_cluster_agents_cluster_id_clusters'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['token_id'], ['agent_tokens.id'], name=op.f('fk_cluster_agents_token_id_agent_tokens'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('cluster_id', name=op.f('pk_cluster_agents'))
    )
    op.add_column('deployments', sa.Column('command', postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.add_column('deployments', sa.Column('env', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False))
    op.add_column('deployments', sa.Column('grace_seconds', sa.Integer(), server_default='30', nullable=False))
    op.add_column('deployments', sa.Column('generation', sa.Integer(), server_default='0', nullable=False))
    op.add_column('deployments', sa.Column('runtime_state', sa.String(length=16), nullable=True))
    op.add_column('deployments', sa.Column('runtime_agent', sa.String(length=128), nullable=True))
    op.add_column('deployments', sa.Column('runtime_container', sa.String(length=255), nullable=True))
    op.add_column('deployments', sa.Column('runtime_started_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('deployments', sa.Column('runtime_exit_code', sa.Integer(), nullable=True))
    op.add_column('deployments', sa.Column('runtime_message', sa.Text(), nullable=True))
    op.add_column('deployments', sa.Column('stop_intent', sa.String(length=16), nullable=True))
    op.add_column('deployments', sa.Column('stop_reason', sa.Text(), nullable=True))
    op.create_check_constraint(op.f('ck_deployments_grace_seconds_range'), 'deployments', 'grace_seconds BETWEEN 0 AND 3600')
    op.create_check_constraint(op.f('ck_deployments_generation_non_negative'), 'deployments', 'generation >= 0')
    op.create_check_constraint(
        op.f('ck_deployments_runtime_state'), 'deployments',
        "runtime_state IS NULL OR runtime_state IN ('pending', 'running', 'stopping')",
    )
    op.create_check_constraint(
        op.f('ck_deployments_stop_intent'), 'deployments', "stop_intent IS NULL OR stop_intent IN ('cancel', 'preempt')"
    )
    # Deployments already started count as started once: their run is generation 1.
    op.execute("UPDATE deployments SET generation = 1 WHERE started_at IS NOT NULL")
    op.create_table('deployment_logs',
    sa.Column('deployment_id', sa.Uuid(), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('logs', sa.Text(), nullable=False),
    sa.Column('truncated', sa.Boolean(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['deployment_id'], ['deployments.id'], name=op.f('fk_deployment_logs_deployment_id_deployments'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('deployment_id', name=op.f('pk_deployment_logs'))
    )


def downgrade() -> None:
    op.drop_table('deployment_logs')
    for name in ('stop_intent', 'runtime_state', 'generation_non_negative', 'grace_seconds_range'):
        op.drop_constraint(op.f(f'ck_deployments_{name}'), 'deployments', type_='check')
    for column in (
        'stop_reason', 'stop_intent', 'runtime_message', 'runtime_exit_code', 'runtime_started_at',
        'runtime_container', 'runtime_agent', 'runtime_state', 'generation', 'grace_seconds', 'env', 'command',
    ):
        op.drop_column('deployments', column)
    op.drop_table('cluster_agents')
    op.drop_index(op.f('ix_agent_tokens_cluster_id'), table_name='agent_tokens')
    op.drop_table('agent_tokens')
    op.drop_constraint(op.f('ck_clusters_runtime'), 'clusters', type_='check')
    op.drop_column('clusters', 'runtime')
