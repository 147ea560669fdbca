"""Token pairs, rotation and revocation.

An access token carries the id of the refresh token issued with it (`rft`), so logout revokes both.
Revoked ids sit in a Redis blocklist until the token would have expired anyway.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis
from flask_jwt_extended import create_access_token, create_refresh_token, decode_token

from shared.errors import Unauthorized

_BLOCKLIST = "hv:revoked:"


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str | None
    expires_in: int


def _ttl(expires_at: float) -> int:
    return max(1, int(expires_at - time.time()) + 1)


def is_revoked(client: redis.Redis, jti: str) -> bool:
    return bool(client.exists(_BLOCKLIST + jti))


def revoke(client: redis.Redis, jti: str, expires_at: float) -> bool:
    """Blocklist `jti` until `expires_at`; False if it already was (a second use of a rotated token)."""
    return bool(client.set(_BLOCKLIST + jti, "1", ex=_ttl(expires_at), nx=True))


def issue(user_id: str, access_seconds: int) -> TokenPair:
    """A new access + refresh pair for the user."""
    refresh = create_refresh_token(identity=user_id)
    refresh_jti = decode_token(refresh)["jti"]
    access = create_access_token(identity=user_id, additional_claims={"rft": refresh_jti})
    return TokenPair(access, refresh, access_seconds)


def rotate(client: redis.Redis, refresh_claims: dict, access_seconds: int) -> TokenPair:
    """Spend a refresh token for a new pair. Only one of two concurrent uses of the same token wins."""
    if not revoke(client, refresh_claims["jti"], refresh_claims["exp"]):
        raise Unauthorized("The token has been revoked: log in again.")
    return issue(refresh_claims["sub"], access_seconds)


def logout(client: redis.Redis, access_claims: dict, refresh_seconds: int) -> None:
    """Revoke the access token and the refresh token issued with it."""
    revoke(client, access_claims["jti"], access_claims["exp"])
    if access_claims.get("rft"):
        # The refresh token's own expiry is not in the access token; its longest possible life bounds it.
        revoke(client, access_claims["rft"], time.time() + refresh_seconds)
