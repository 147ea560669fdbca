"""Sessions and their tokens: start, check, rotate (with reuse detection), end one, end all of a user's.

A login starts a session: every token issued for it carries its id (`sid`). The session's state is one
Redis key, hv:session:<sid> = {user, generation, refresh, expires}, whose TTL is the absolute expiry, so
no number of rotations keeps a session alive past SESSION_MAX_DAYS. `refresh` is the id of the one
refresh token that may be spent next: presenting an older one means a copy leaked, and ends the session
(the whole token family). hv:generation:<user> counts the user's "end all my sessions" (logout-all,
password change, account deletion); a session started under an older generation is over. Checking a
token is one MGET of those two keys.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

import redis
from flask_jwt_extended import create_access_token, create_refresh_token
from jwt import InvalidTokenError, MissingRequiredClaimError

from shared.errors import Unauthorized

_SESSION = "hv:session:"
_GENERATION = "hv:generation:"

# Every token we issue has these; one without them was not made by us and is refused, not patched up.
REQUIRED_CLAIMS = ("sub", "exp", "iat", "jti", "type", "sid")
TOKEN_TYPES = ("access", "refresh")
# JOSE headers we understand. Anything else (jku, jwk, x5u, x5c, crit, ...) asks the verifier to do
# something we do not do, so the token is refused rather than the header ignored.
ALLOWED_HEADERS = frozenset({"alg", "typ", "kid"})

SESSION_ENDED = "The session has ended (logged out, expired or revoked): log in again."
REFRESH_REUSED = "This refresh token was already used; its session has been ended in case it was stolen: log in again."

# KEYS: session, generation. ARGV: user, refresh jti, absolute expiry (epoch s), ttl (s).
_START = """
local generation = tonumber(redis.call('GET', KEYS[2]) or '0')
local session = cjson.encode({user = ARGV[1], generation = generation, refresh = ARGV[2], expires = tonumber(ARGV[3])})
redis.call('SET', KEYS[1], session, 'EX', ARGV[4])
return generation
"""

# KEYS: session, generation. ARGV: user, presented refresh jti, next refresh jti.
# Returns the session's absolute expiry, or 'ended' / 'reused'. Atomic: of two uses of one token, one wins.
_ROTATE = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 'ended' end
local session = cjson.decode(raw)
local generation = tonumber(redis.call('GET', KEYS[2]) or '0')
if session.user ~= ARGV[1] or session.generation < generation then return 'ended' end
if session.refresh ~= ARGV[2] then
  redis.call('DEL', KEYS[1])
  return 'reused'
end
session.refresh = ARGV[3]
redis.call('SET', KEYS[1], cjson.encode(session), 'KEEPTTL')
return session.expires
"""


@dataclass(frozen=True)
class Lifetimes:
    """How long tokens and sessions last, in seconds (from settings)."""

    access: int
    refresh: int
    session: int

    @classmethod
    def from_settings(cls, settings) -> Lifetimes:
        return cls(
            access=settings.access_token_minutes * 60,
            refresh=settings.refresh_token_days * 86400,
            session=settings.session_max_days * 86400,
        )


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


def _session_key(sid: str) -> str:
    return _SESSION + sid


def _generation_key(user_id: str) -> str:
    return _GENERATION + user_id


def check_shape(header: dict, claims: dict) -> None:
    """Refuse a token (InvalidTokenError) with a header we do not understand or a claim missing or mistyped."""
    unexpected = set(header) - ALLOWED_HEADERS
    if unexpected:
        raise InvalidTokenError(f"unexpected token header(s): {', '.join(sorted(unexpected))}")
    for claim in REQUIRED_CLAIMS:
        if claim not in claims:
            raise MissingRequiredClaimError(claim)
    if claims["type"] not in TOKEN_TYPES:
        raise InvalidTokenError("unknown token type")
    if not all(isinstance(claims[claim], str) and claims[claim] for claim in ("sub", "jti", "sid")):
        raise InvalidTokenError("sub, jti and sid must be non-empty strings")


def _mint(user_id: str, sid: str, refresh_jti: str, expires_at: int, lifetimes: Lifetimes) -> TokenPair:
    now = int(time.time())
    access_expires = min(now + lifetimes.access, expires_at)
    refresh = create_refresh_token(
        identity=user_id,
        additional_claims={"sid": sid, "jti": refresh_jti, "exp": min(now + lifetimes.refresh, expires_at)},
    )
    access = create_access_token(identity=user_id, additional_claims={"sid": sid, "exp": access_expires})
    return TokenPair(access, refresh, access_expires - now)


def start_session(client: redis.Redis, user_id: str, lifetimes: Lifetimes) -> TokenPair:
    """A new session for the user, and its first token pair."""
    sid, refresh_jti = str(uuid.uuid4()), str(uuid.uuid4())
    expires_at = int(time.time()) + lifetimes.session
    client.register_script(_START)(
        keys=[_session_key(sid), _generation_key(user_id)], args=[user_id, refresh_jti, expires_at, lifetimes.session]
    )
    return _mint(user_id, sid, refresh_jti, expires_at, lifetimes)


def session_is_active(client: redis.Redis, claims: dict) -> bool:
    """Whether the token's session still runs: one round trip, whatever the token."""
    raw, generation = client.mget(_session_key(claims["sid"]), _generation_key(claims["sub"]))
    if raw is None:
        return False
    session = json.loads(raw)
    return session["user"] == claims["sub"] and session["generation"] >= int(generation or 0)


def rotate(client: redis.Redis, refresh_claims: dict, lifetimes: Lifetimes) -> TokenPair:
    """Spend the session's current refresh token for a new pair; a token already spent ends the session."""
    user_id, sid = refresh_claims["sub"], refresh_claims["sid"]
    next_jti = str(uuid.uuid4())
    outcome = client.register_script(_ROTATE)(
        keys=[_session_key(sid), _generation_key(user_id)], args=[user_id, refresh_claims["jti"], next_jti]
    )
    if outcome == "reused":
        raise Unauthorized(REFRESH_REUSED)
    if not isinstance(outcome, int):
        raise Unauthorized(SESSION_ENDED)
    return _mint(user_id, sid, next_jti, outcome, lifetimes)


def end_session(client: redis.Redis, sid: str) -> None:
    """End one session: every token it issued stops working at once."""
    client.delete(_session_key(sid))


def end_all_sessions(client: redis.Redis, user_id: str) -> None:
    """End every session the user has now; sessions started afterwards are unaffected."""
    # No TTL: a TTL shorter than a session that was started before a change of SESSION_MAX_DAYS could
    # revive it. One small counter per user who ever used this.
    client.incr(_generation_key(user_id))
