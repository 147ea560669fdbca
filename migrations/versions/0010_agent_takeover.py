"""The lease row keeps the previous holder after a takeover, and when runs were last handed out.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23
"""

from alembic import op
import sqlalchemy as sa


revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('cluster_agents', sa.Column('listed_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('cluster_agents', sa.Column('previous_token_id', sa.Uuid(), nullable=True))
    op.add_column('cluster_agents', sa.Column('previous_name', sa.String(length=128), nullable=True))
    op.add_column('cluster_agents', sa.Column('previous_last_seen_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('cluster_agents', sa.Column('previous_listed_at', sa.DateTime(timezone=True), nullable=True))
    op.create_foreign_key(
        op.f('fk_cluster_agents_previous_token_id_agent_tokens'),
        'cluster_agents',
        'agent_tokens',
        ['previous_token_id'],
        ['id'],
        ondelete='SET NULL',
    )
    # Whatever runs now may have been handed out already.
    op.execute("UPDATE cluster_agents SET listed_at = now()")


def downgrade() -> None:
    op.drop_constraint(op.f('fk_cluster_agents_previous_token_id_agent_tokens'), 'cluster_agents', type_='foreignkey')
    op.drop_column('cluster_agents', 'previous_listed_at')
    op.drop_column('cluster_agents', 'previous_last_seen_at')
    op.drop_column('cluster_agents', 'previous_name')
    op.drop_column('cluster_agents', 'previous_token_id')
    op.drop_column('cluster_agents', 'listed_at')
