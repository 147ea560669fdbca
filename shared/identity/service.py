"""Registration and authentication."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.errors import Conflict, Invalid, Unauthorized
from shared.identity.models import User
from shared.identity.passwords import hash_password, needs_rehash, password_problem, verify_password

log = logging.getLogger(__name__)

WRONG_CREDENTIALS = "Wrong username or password."


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
