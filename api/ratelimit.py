"""Rate limits on the authentication endpoints (Flask-Limiter, counters in Redis).

Limits are settings (README, configuration table) read per request, so they can be changed without
code. Login and join count failures only: a user who types the right password is never slowed down
by the limit, a guesser is. Failed logins are counted per address and per username *at* an address,
never per username alone: that would let anyone lock a user out by failing on their name (README,
security model).
"""

from __future__ import annotations

from flask import Flask, current_app, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

limiter = Limiter(key_func=get_remote_address, strategy="moving-window")


def init_limiter(app: Flask) -> None:
    settings = app.extensions["settings"]
    app.config.update(
        RATELIMIT_STORAGE_URI=settings.redis_url,
        RATELIMIT_ENABLED=settings.ratelimit_enabled,
        RATELIMIT_HEADERS_ENABLED=True,
        RATELIMIT_KEY_PREFIX="hv:ratelimit",
    )
    limiter.init_app(app)


def _setting(name: str):
    return lambda: getattr(current_app.extensions["settings"], name)


def _username_at_address() -> str:
    body = request.get_json(silent=True)
    username = body.get("username") if isinstance(body, dict) else None
    name = username.lower() if isinstance(username, str) else "-"
    return f"username:{name}@{get_remote_address()}"


def _failed_login(response) -> bool:
    return response.status_code == 401


def _registered(response) -> bool:
    """A registration that answered whether the name and email were free (created, or taken)."""
    return response.status_code in (201, 409)


def _taken(response) -> bool:
    return response.status_code == 409


def _wrong_password(response) -> bool:
    return response.status_code == 403


def _failed_join(response) -> bool:
    return response.status_code == 404


def _user() -> str:
    from flask_jwt_extended import get_jwt_identity

    return f"user:{get_jwt_identity()}"


def _stack(*decorators):
    def apply(view):
        for decorator in reversed(decorators):
            view = decorator(view)
        return view

    return apply


login = _stack(
    limiter.limit(
        _setting("login_limits"), key_func=_username_at_address, deduct_when=_failed_login, scope="login-username"
    ),
    limiter.limit(_setting("login_address_limit"), deduct_when=_failed_login, scope="login-address"),
)
register = _stack(
    limiter.limit(_setting("register_limit"), deduct_when=_registered, scope="register"),
    limiter.limit(_setting("register_taken_limit"), deduct_when=_taken, scope="register-taken"),
)
# Password change and account deletion share one count of wrong passwords per user: a stolen access
# token must not become a password-guessing oracle.
reauthenticate = limiter.shared_limit(
    _setting("login_limits"), scope="reauthenticate-user", key_func=_user, deduct_when=_wrong_password
)
refresh = limiter.limit(_setting("refresh_limit"), scope="refresh")
join = _stack(
    limiter.limit(_setting("join_address_limit"), deduct_when=_failed_join, scope="join-address"),
    limiter.limit(_setting("join_limit"), key_func=_user, deduct_when=_failed_join, scope="join-user"),
)
