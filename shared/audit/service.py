"""Write and read the audit log. Every entry is written by the service making the change, in its transaction:
a change rolled back (refused, or failed) leaves no entry, and a committed one always has its entry."""

from __future__ import annotations

import uuid

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from shared.audit.models import OrganizationEvent
from shared.identity.models import User
from shared.resources import NAMES, Resources, describe

UNKNOWN_ACTOR = "unknown"
# Every type of audit log entry (shared/organizations/service.py writes the first ones, shared/clusters the
# cluster ones, shared/identity/service.py a `member_left` for each membership of a deleted account).
TYPES = (
    "organization_created",
    "member_joined",
    "member_left",
    "member_removed",
    "role_changed",
    "invite_issued",
    "invite_revoked",
    "standing_code_rotated",
    "cluster_created",
    "cluster_resized",
    "cluster_renamed",
    "cluster_runtime_changed",
    "cluster_deleted",
)


def actor_name(user_id: uuid.UUID | None):
    """The user's username as a SQL expression, for an INSERT to store it as text (kept after the account goes)."""
    return func.coalesce(select(User.username).where(User.id == user_id).scalar_subquery(), UNKNOWN_ACTOR)


def record(
    session: Session,
    *,
    organization_id: uuid.UUID,
    kind: str,
    message: str,
    actor_id: uuid.UUID | None,
    cluster_id: uuid.UUID | None = None,
) -> None:
    """Add an entry to the organization's audit log, in the caller's transaction (it commits or rolls back)."""
    session.execute(
        insert(OrganizationEvent).values(
            organization_id=organization_id,
            type=kind,
            message=message,
            actor=actor_name(actor_id),
            actor_id=actor_id,
            cluster_id=cluster_id,
        )
    )


def list_for_org(
    *, session: Session, organization_id: uuid.UUID, page: int, page_size: int
) -> tuple[list[OrganizationEvent], int]:
    """One page of the organization's audit log, newest first, and how many entries it has."""
    total = session.scalar(select(func.count()).where(OrganizationEvent.organization_id == organization_id))
    events = session.scalars(
        select(OrganizationEvent)
        .where(OrganizationEvent.organization_id == organization_id)
        .order_by(OrganizationEvent.id.desc())
        .offset((page - 1) * page_size)
        .limit(page_size)
    ).all()
    return list(events), total


def describe_capacity(capacity: Resources) -> str:
    """`4 CPU, 16 GB RAM, 1 GPU`."""
    return ", ".join(describe(name, units) for name, units in zip(NAMES, capacity.as_tuple(), strict=True))


def invite_label(code: str) -> str:
    """How entries name an invite code: enough of it to tell which (the audit log keeps no live secrets)."""
    return f"{code[:6]}…"
