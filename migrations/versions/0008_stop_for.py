"""Deployments remember which deployment a preempted run stops for (two-phase preemption on agent clusters).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24
"""

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('deployments', sa.Column('stop_for', sa.Uuid(), nullable=True))


def downgrade() -> None:
    op.drop_column('deployments', 'stop_for')
