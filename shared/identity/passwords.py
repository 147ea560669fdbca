"""Password hashing: argon2id with OWASP's parameters (19 MiB, 2 iterations, parallelism 1); the policy
a new password must meet (NIST SP 800-63B: a length, and not a common or context-specific value)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from zxcvbn.frequency_lists import FREQUENCY_LISTS

# The 30,000 most common passwords of leaked sets, as zxcvbn ships them (lower case).
COMMON_PASSWORDS = frozenset(FREQUENCY_LISTS["passwords"])

_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, hash_len=32, salt_len=16)

# Verified against when the username is unknown, so an unknown user costs the same time as a wrong password.
_DUMMY_HASH = _hasher.hash("an unknown user never matches this")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches; with no hash (unknown user) it does the same work and says no."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """Whether the hash was made with weaker parameters than today's."""
    return _hasher.check_needs_rehash(password_hash)


def password_problem(password: str, *, username: str, email: str) -> str | None:
    """Why `password` may not be chosen by this user, in one sentence; None if it may."""
    lowered = password.lower()
    if lowered in (username.lower(), email.lower()):
        return "The password must not be your username or email."
    if lowered in COMMON_PASSWORDS:
        return "This password is among the most common ones, the first an attacker tries: choose another."
    return None
