"""Invite codes are only as good as their issuer: revoke the ones whose issuer is no longer an admin of
the organization, and allow at most one live standing code per organization (it can now be rotated).

`invites.created_by` stays a nullable foreign key with ON DELETE SET NULL: deleting an account keeps the
record of the codes it issued and how often they were used, and a code without an issuer admits no one
(the join-time check in shared/organizations/service.py wants an issuer who is an admin now).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Codes issued by admins removed or demoted before this revision would come back to life if their
    # issuer were made admin again: they die now, as they would have under the new rule.
    op.execute(
        """
        UPDATE invites SET revoked_at = now()
        WHERE revoked_at IS NULL
          AND NOT EXISTS (
              SELECT 1 FROM memberships
              WHERE memberships.organization_id = invites.organization_id
                AND memberships.user_id = invites.created_by
                AND memberships.role = 'admin'
          )
        """
    )
    op.create_index(
        "uq_invites_standing",
        "invites",
        ["organization_id"],
        unique=True,
        postgresql_where=sa.text("is_default AND revoked_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_invites_standing", table_name="invites")
