"""Roles of a membership, ordered: each role may do everything the roles below it may."""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    VIEWER = "viewer"
    DEVELOPER = "developer"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, required: Role) -> bool:
        """Whether a member with this role may do what `required` may."""
        return self.rank >= required.rank


_RANK = {Role.VIEWER: 0, Role.DEVELOPER: 1, Role.ADMIN: 2}
ROLE_VALUES = tuple(role.value for role in Role)
