"""Registration, authentication, password change and account deletion."""

from __future__ import annotations

import logging
import uuid

from redis import Redis
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.errors import Conflict, Forbidden, Invalid, Unauthorized
from shared.identity import tokens
from shared.identity.models import User
from shared.identity.passwords import hash_password, needs_rehash, password_problem, verify_password
from shared.organizations import service as organizations

log = logging.getLogger(__name__)

WRONG_CREDENTIALS = "Wrong username or password."
WRONG_PASSWORD = "The password is wrong."  # noqa: S105  (a message, not a password)
USER_GONE = "The token's user no longer exists."


def _by_username(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(func.lower(User.username) == username.lower()))


def register(*, session: Session, username: str, email: str, password: str, address: str | None = None) -> User:
    """Create a user; 422 for a refused password, 409 if the username or email is taken (case-insensitively).

    A 409 tells whether an account exists, so each one is logged with the client's `address`: a run of
    them is someone enumerating accounts (they are also rate limited, api/ratelimit.py).
    """
    problem = password_problem(password, username=username, email=email)
    if problem:
        raise Invalid(problem, errors={"json": {"password": [problem]}})
    taken = session.scalar(
        select(User).where((func.lower(User.username) == username.lower()) | (func.lower(User.email) == email.lower()))
    )
    if taken is not None:
        field = "username" if taken.username.lower() == username.lower() else "email"
        log.warning("registration of %r from %s refused: that %s is already registered", username, address, field)
        raise Conflict(f"That {field} is already registered.")
    user = User(username=username, email=email, password_hash=hash_password(password))
    session.add(user)
    try:
        session.commit()
    except IntegrityError:  # lost a race with an identical registration
        session.rollback()
        raise Conflict("That username or email is already registered.") from None
    return user


def authenticate(*, session: Session, username: str, password: str) -> User:
    """The user with these credentials; the same 401, after the same work, for a wrong name or password."""
    user = _by_username(session, username)
    if not verify_password(user.password_hash if user else None, password):
        raise Unauthorized(WRONG_CREDENTIALS)
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
        session.commit()
    return user


def get(*, session: Session, user_id: uuid.UUID) -> User | None:
    return session.get(User, user_id)


def _reauthenticate(session: Session, user_id: uuid.UUID, password: str) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise Unauthorized(USER_GONE)
    if not verify_password(user.password_hash, password):
        raise Forbidden(WRONG_PASSWORD)
    return user


def change_password(
    *, session: Session, redis: Redis, user_id: uuid.UUID, current_password: str, new_password: str
) -> None:
    """Replace the password once the current one is proven, and end every session the user has."""
    user = _reauthenticate(session, user_id, current_password)
    problem = password_problem(new_password, username=user.username, email=user.email)
    if problem:
        session.rollback()
        raise Invalid(problem, errors={"json": {"new_password": [problem]}})
    # Sessions end before the new password is stored: if storing fails, the user is logged out, never
    # left with a changed password and a thief's session still running.
    tokens.end_all_sessions(redis, str(user.id))
    user.password_hash = hash_password(new_password)
    session.commit()


def delete_account(*, session: Session, redis: Redis, user_id: uuid.UUID, password: str) -> None:
    """Delete the user once the password is proven; 409 while an organization would be left without an admin.

    Memberships go with the user; deployments and invites they created keep existing (`created_by`
    becomes null, events keep the username they recorded).
    """
    user = _reauthenticate(session, user_id, password)
    orphaned = organizations.solely_administered_by(session=session, user_id=user.id)
    if orphaned:
        session.rollback()
        names = ", ".join(organization.name for organization in orphaned)
        raise Conflict(
            f"You are the only admin of {names}: make another member admin first "
            "(an organization cannot be left without an admin)."
        )
    tokens.end_all_sessions(redis, str(user.id))
    organizations.record_account_deletion(session=session, user_id=user.id)
    session.delete(user)
    session.commit()
