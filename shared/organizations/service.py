"""Organizations, memberships and invites: who belongs where, with which role.

Every organization-scoped request goes through `require_member`: a caller who is not a member is told
"not found", exactly as if the object did not exist; a member whose role is too low is told "forbidden".
Every change to members or invites checks the caller again under the organization's lock (`_authorize`):
the route's check ran before the lock, and a concurrent request may have demoted or removed the caller.

Invite policy: a code is only as good as its issuer. It admits while its issuer is still an admin of the
organization (checked at join time, under the lock), and the codes a member issued are revoked when that
member leaves, is removed or is demoted below admin. The standing code is the creator's, or whoever
rotated it last.

Every change is written to the organization's audit log (shared/audit) in its own transaction, after the
caller's check under the lock: a refused change leaves no entry.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from shared.audit import service as audit
from shared.audit.service import invite_label
from shared.config import get_settings
from shared.errors import Conflict, DomainError, Forbidden, LimitReached, NotFound
from shared.identity.models import User
from shared.organizations.models import Invite, Membership, Organization
from shared.organizations.roles import Role
from shared.timeutil import utcnow

ORGANIZATION_NOT_FOUND = "Organization not found."
INVITE_NOT_FOUND = "Unknown, revoked, expired or used-up invite code."


def new_invite_code() -> str:
    """192 random bits from `secrets`, URL-safe."""
    return secrets.token_urlsafe(24)


def membership(*, session: Session, organization_id: uuid.UUID, user_id: uuid.UUID) -> Membership | None:
    """The membership as the database has it now (never a copy the session loaded earlier)."""
    return session.get(Membership, (organization_id, user_id), populate_existing=True)


def require_member(
    *, session: Session, organization_id: uuid.UUID | None, user_id: uuid.UUID, role: Role, not_found: str
) -> Membership:
    """The caller's membership if its role allows `role`; NotFound (as for a missing object) if not a member."""
    member = (
        None
        if organization_id is None
        else membership(session=session, organization_id=organization_id, user_id=user_id)
    )
    return require_role(member, role, not_found)


def require_role(member: Membership | None, role: Role, not_found: str) -> Membership:
    """The membership if its role allows `role`; NotFound (as for a missing object) if there is none."""
    if member is None:
        raise NotFound(not_found)
    if not Role(member.role).allows(role):
        raise Forbidden(f"Your role ({member.role}) may not do this; it needs {role.value} or higher.")
    return member


def create(*, session: Session, actor_id: uuid.UUID, name: str) -> tuple[Organization, Membership, Invite]:
    """A new organization whose creator is its admin, with a default invite code granting developer.

    409 if the creator already belongs to MAX_ORGANIZATIONS_PER_USER organizations (any role: joining by
    invite is not limited, the inviting organization counts against its own creator)."""
    # The user's row lock serializes one user's concurrent creations, so the count below holds.
    session.execute(select(User.id).where(User.id == actor_id).with_for_update(key_share=True))
    most = get_settings().max_organizations_per_user
    belongs_to = session.scalar(select(func.count()).where(Membership.user_id == actor_id))
    if belongs_to >= most:
        session.rollback()
        raise LimitReached(
            f"You belong to {belongs_to} organizations, the limit (MAX_ORGANIZATIONS_PER_USER = {most}): "
            "leave one before creating another."
        )
    organization = Organization(id=uuid.uuid4(), name=name)
    session.add(organization)
    session.flush()
    member = Membership(organization_id=organization.id, user_id=actor_id, role=Role.ADMIN.value)
    invite = _standing_invite(organization.id, issuer_id=actor_id)
    session.add_all([member, invite])
    audit.record(
        session,
        organization_id=organization.id,
        kind="organization_created",
        message=f"Created organization {name}, as its admin, with standing invite code {invite_label(invite.code)}.",
        actor_id=actor_id,
    )
    session.commit()
    return organization, member, invite


def list_for_user(*, session: Session, user_id: uuid.UUID) -> list[tuple[Organization, str]]:
    """The user's organizations with the user's role in each, oldest first."""
    rows = session.execute(
        select(Organization, Membership.role)
        .join(Membership, Membership.organization_id == Organization.id)
        .where(Membership.user_id == user_id)
        .order_by(Organization.created_at, Organization.id)
    )
    return [(organization, role) for organization, role in rows]


def get(*, session: Session, organization_id: uuid.UUID) -> Organization:
    organization = session.get(Organization, organization_id)
    if organization is None:
        raise NotFound(ORGANIZATION_NOT_FOUND)
    return organization


def _standing_invite(organization_id: uuid.UUID, *, issuer_id: uuid.UUID) -> Invite:
    return Invite(
        code=new_invite_code(),
        organization_id=organization_id,
        role=Role.DEVELOPER.value,
        is_default=True,
        created_by=issuer_id,
    )


def _usable(invite: Invite, issuer_role: str | None) -> bool:
    """Whether the code admits now; `issuer_role` is its issuer's current role here (None: no longer a member)."""
    now = utcnow()
    return (
        invite.revoked_at is None
        and (invite.expires_at is None or invite.expires_at > now)
        and (invite.max_uses is None or invite.uses < invite.max_uses)
        # Admitting anyone is an admin's power: a code is good only while its issuer still holds it, so it
        # can never grant more than its issuer holds at the time it is used.
        and issuer_role is not None
        and Role(issuer_role).allows(Role.ADMIN)
    )


def _invites_with_issuers(session: Session, *conditions) -> list[tuple[Invite, str | None, str | None]]:
    """Invites matching `conditions`, newest first, each with its issuer's username and current role there."""
    rows = session.execute(
        select(Invite, User.username, Membership.role)
        .outerjoin(User, User.id == Invite.created_by)
        .outerjoin(
            Membership,
            (Membership.organization_id == Invite.organization_id) & (Membership.user_id == Invite.created_by),
        )
        .where(*conditions)
        .order_by(Invite.created_at.desc(), Invite.code)
    )
    return [(invite, username, issuer_role) for invite, username, issuer_role in rows]


def default_invite(*, session: Session, organization_id: uuid.UUID) -> Invite | None:
    """The organization's standing invite code, unless it has been revoked or can no longer admit anyone."""
    rows = _invites_with_issuers(
        session, Invite.organization_id == organization_id, Invite.is_default, Invite.revoked_at.is_(None)
    )
    return next((invite for invite, _, issuer_role in rows if _usable(invite, issuer_role)), None)


def join(*, session: Session, user_id: uuid.UUID, code: str) -> tuple[Organization, Membership]:
    """Join by invite code, with the role it grants, under the organization's lock: the issuer's role and
    `max_uses` are checked against what holds when the membership is written."""
    organization_id = session.scalar(select(Invite.organization_id).where(Invite.code == code))
    if organization_id is None:
        session.rollback()
        raise NotFound(INVITE_NOT_FOUND)
    # The organization first, then the invite: the order every change to members and invites takes.
    _lock_organization(session, organization_id)
    invite = session.scalar(
        select(Invite).where(Invite.code == code).with_for_update().execution_options(populate_existing=True)
    )
    issuer = (
        membership(session=session, organization_id=organization_id, user_id=invite.created_by)
        if invite is not None and invite.created_by is not None
        else None
    )
    if invite is None or not _usable(invite, issuer.role if issuer else None):
        session.rollback()
        raise NotFound(INVITE_NOT_FOUND)
    if membership(session=session, organization_id=organization_id, user_id=user_id) is not None:
        session.rollback()
        raise Conflict("You are already a member of this organization.")
    member = Membership(organization_id=organization_id, user_id=user_id, role=invite.role)
    invite.uses += 1
    session.add(member)
    uses = f"use {invite.uses}" + ("" if invite.max_uses is None else f" of {invite.max_uses}")
    audit.record(
        session,
        organization_id=organization_id,
        kind="member_joined",
        message=(
            f"Joined as {invite.role} with invite {invite_label(invite.code)} issued by "
            f"{username_of(session=session, user_id=invite.created_by)} ({uses})."
        ),
        actor_id=user_id,
    )
    session.commit()
    return session.get(Organization, organization_id), member


def create_invite(
    *,
    session: Session,
    organization_id: uuid.UUID,
    actor_id: uuid.UUID,
    role: Role,
    max_uses: int | None = None,
    expires_in_hours: float | None = None,
) -> Invite:
    """Issue an invite code; the caller must still be an admin once the organization is locked."""
    _authorize(session, organization_id, actor_id, Role.ADMIN)
    expires_at = utcnow() + timedelta(hours=expires_in_hours) if expires_in_hours is not None else None
    invite = Invite(
        code=new_invite_code(),
        organization_id=organization_id,
        role=role.value,
        max_uses=max_uses,
        expires_at=expires_at,
        created_by=actor_id,
    )
    session.add(invite)
    limits = [f"up to {max_uses} uses"] if max_uses is not None else []
    if expires_at is not None:
        limits.append(f"until {expires_at.strftime('%Y-%m-%d %H:%M:%S UTC')}")
    audit.record(
        session,
        organization_id=organization_id,
        kind="invite_issued",
        message=f"Issued invite {invite_label(invite.code)} granting {role.value}"
        + (f", {' and '.join(limits)}." if limits else "."),
        actor_id=actor_id,
    )
    session.commit()
    return invite


def rotate_default_invite(*, session: Session, organization_id: uuid.UUID, actor_id: uuid.UUID) -> Invite:
    """Replace the standing invite code (revoked or not) with a new one issued by the caller; the old one dies."""
    _authorize(session, organization_id, actor_id, Role.ADMIN)
    old = session.scalars(
        update(Invite)
        .where(Invite.organization_id == organization_id, Invite.is_default, Invite.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .returning(Invite.code)
    ).all()
    invite = _standing_invite(organization_id, issuer_id=actor_id)
    session.add(invite)
    replaced = f", replacing {invite_label(old[0])}" if old else ""
    audit.record(
        session,
        organization_id=organization_id,
        kind="standing_code_rotated",
        message=f"Rotated the standing invite code: {invite_label(invite.code)}{replaced}.",
        actor_id=actor_id,
    )
    session.commit()
    return invite


def list_invites(*, session: Session, organization_id: uuid.UUID) -> list[tuple[Invite, str | None]]:
    """Every invite of the organization that can still be used, newest first, with its issuer's username."""
    rows = _invites_with_issuers(session, Invite.organization_id == organization_id, Invite.revoked_at.is_(None))
    return [(invite, username) for invite, username, issuer_role in rows if _usable(invite, issuer_role)]


def revoke_invite(*, session: Session, organization_id: uuid.UUID, actor_id: uuid.UUID, code: str) -> None:
    """Revoke an invite code at once."""
    _authorize(session, organization_id, actor_id, Role.ADMIN)
    invite = session.scalar(
        select(Invite).where(Invite.code == code, Invite.organization_id == organization_id).with_for_update()
    )
    if invite is None or invite.revoked_at is not None:
        session.rollback()
        raise NotFound("No such invite code in this organization.")
    invite.revoked_at = utcnow()
    audit.record(
        session,
        organization_id=organization_id,
        kind="invite_revoked",
        message=f"Revoked invite {invite_label(invite.code)} granting {invite.role}.",
        actor_id=actor_id,
    )
    session.commit()


def _revoke_codes_issued_by(
    session: Session, organization_id: uuid.UUID, user_id: uuid.UUID, *, actor_id: uuid.UUID, why: str
) -> None:
    # Codes die with their issuer's admin power (issue 10, finding 1): a removed or demoted admin must not
    # be able to walk back in, or send someone else in, with a code they issued.
    codes = session.scalars(
        update(Invite)
        .where(Invite.organization_id == organization_id, Invite.created_by == user_id, Invite.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .returning(Invite.code)
    ).all()
    for code in sorted(codes):
        audit.record(
            session,
            organization_id=organization_id,
            kind="invite_revoked",
            message=f"Invite {invite_label(code)} revoked: {why}.",
            actor_id=actor_id,
        )


def list_members(*, session: Session, organization_id: uuid.UUID) -> list[tuple[Membership, str]]:
    rows = session.execute(
        select(Membership, User.username)
        .join(User, User.id == Membership.user_id)
        .where(Membership.organization_id == organization_id)
        .order_by(Membership.joined_at, User.username)
    )
    return [(member, username) for member, username in rows]


def _lock_organization(session: Session, organization_id: uuid.UUID) -> None:
    # Serializes changes to an organization's members and invites: two admins demoting each other at once
    # must not both succeed, nor a code be used while its issuer is being removed.
    session.execute(select(Organization.id).where(Organization.id == organization_id).with_for_update(key_share=True))


def _authorize(session: Session, organization_id: uuid.UUID, actor_id: uuid.UUID, role: Role) -> Membership:
    """Lock the organization, then check the caller's membership as it is now (issue 10, finding 5)."""
    _lock_organization(session, organization_id)
    try:
        return require_member(
            session=session,
            organization_id=organization_id,
            user_id=actor_id,
            role=role,
            not_found=ORGANIZATION_NOT_FOUND,
        )
    except DomainError:
        session.rollback()
        raise


def _target(session: Session, organization_id: uuid.UUID, user_id: uuid.UUID) -> Membership:
    member = membership(session=session, organization_id=organization_id, user_id=user_id)
    if member is None:
        session.rollback()
        raise NotFound("No such member in this organization.")
    return member


def _admin_count(session: Session, organization_id: uuid.UUID) -> int:
    return session.scalar(
        select(func.count()).where(Membership.organization_id == organization_id, Membership.role == Role.ADMIN.value)
    )


def change_role(
    *, session: Session, organization_id: uuid.UUID, actor_id: uuid.UUID, user_id: uuid.UUID, role: Role
) -> Membership:
    """An admin sets a member's role; the last admin cannot be demoted; a demoted admin's codes die."""
    _authorize(session, organization_id, actor_id, Role.ADMIN)
    member = _target(session, organization_id, user_id)
    if member.role == Role.ADMIN.value and role != Role.ADMIN and _admin_count(session, organization_id) == 1:
        session.rollback()
        raise Conflict("The last admin cannot be demoted: make another member admin first.")
    was, username = member.role, username_of(session=session, user_id=user_id)
    member.role = role.value
    if was != role.value:
        audit.record(
            session,
            organization_id=organization_id,
            kind="role_changed",
            message=f"Changed {username}'s role from {was} to {role.value}.",
            actor_id=actor_id,
        )
    if not role.allows(Role.ADMIN):
        _revoke_codes_issued_by(
            session, organization_id, user_id, actor_id=actor_id, why=f"its issuer {username} is no longer an admin"
        )
    session.commit()
    return member


def remove_member(*, session: Session, organization_id: uuid.UUID, actor_id: uuid.UUID, user_id: uuid.UUID) -> None:
    """An admin removes a member, or a member leaves; the last admin cannot leave; the codes they issued die."""
    actor = _authorize(session, organization_id, actor_id, Role.VIEWER)
    if actor_id != user_id and not Role(actor.role).allows(Role.ADMIN):
        session.rollback()
        raise Forbidden("Only an admin can remove another member; you may remove yourself.")
    member = _target(session, organization_id, user_id)
    if member.role == Role.ADMIN.value and _admin_count(session, organization_id) == 1:
        session.rollback()
        raise Conflict("The last admin cannot leave: make another member admin first.")
    username = username_of(session=session, user_id=user_id)
    if actor_id == user_id:
        kind, message, why = "member_left", f"Left the organization (was {member.role}).", f"its issuer {username} left"
    else:
        kind, message = "member_removed", f"Removed {username} ({member.role}) from the organization."
        why = f"its issuer {username} was removed"
    audit.record(session, organization_id=organization_id, kind=kind, message=message, actor_id=actor_id)
    _revoke_codes_issued_by(session, organization_id, user_id, actor_id=actor_id, why=why)
    session.delete(member)
    session.commit()


def solely_administered_by(*, session: Session, user_id: uuid.UUID) -> list[Organization]:
    """Organizations whose only admin is the user; locked, so no concurrent role change can alter the answer."""
    administered = session.scalars(
        select(Membership.organization_id)
        .where(Membership.user_id == user_id, Membership.role == Role.ADMIN.value)
        .order_by(Membership.organization_id)
    ).all()
    for organization_id in administered:
        _lock_organization(session, organization_id)
    return [
        session.get(Organization, organization_id)
        for organization_id in administered
        if _admin_count(session, organization_id) == 1
    ]


def record_account_deletion(*, session: Session, user_id: uuid.UUID) -> None:
    """Each organization the user belongs to logs that they left with their account (in the deletion's
    transaction, before the memberships go with the user)."""
    for organization_id, role in session.execute(
        select(Membership.organization_id, Membership.role).where(Membership.user_id == user_id)
    ):
        audit.record(
            session,
            organization_id=organization_id,
            kind="member_left",
            message=f"Left the organization (was {role}): the account was deleted.",
            actor_id=user_id,
        )


def username_of(*, session: Session, user_id: uuid.UUID) -> str:
    return session.scalar(select(User.username).where(User.id == user_id))
