"""Every table of the system, imported in one place so Alembic and the tests see the whole schema."""

from shared.identity.models import User
from shared.organizations.models import Invite, Membership, Organization

__all__ = ["Invite", "Membership", "Organization", "User"]
