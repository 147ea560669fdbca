"""Registration, login, token refresh, logout, password change and account deletion (API.md, "Auth")."""

from flask import after_this_request, current_app, request
from flask.views import MethodView
from flask_jwt_extended import get_jwt_request_location, set_access_cookies, set_refresh_cookies, unset_jwt_cookies

from api import ratelimit
from api.access import PUBLIC, REFRESH, USER, current_claims, current_user_id
from api.auth.schemas import AccountDeleteIn, LoginIn, MeOut, PasswordChangeIn, RegisterIn, TokensOut, UserOut
from api.extensions import Blueprint, ErrorSchema
from shared.db import db
from shared.errors import Unauthorized
from shared.identity import service as identity
from shared.identity import tokens
from shared.organizations import service as organizations
from shared.redis import get_redis

blp = Blueprint("auth", __name__, url_prefix="/api/v1/auth", description="Accounts and tokens.")


def _settings():
    return current_app.extensions["settings"]


def _redis():
    return get_redis(_settings().redis_url)


def _lifetimes() -> tokens.Lifetimes:
    return tokens.Lifetimes.from_settings(_settings())


def _tokens_body(pair: tokens.TokenPair, cookies: bool = False) -> dict:
    """The pair for the body, or in cookie mode only its type and lifetime: the tokens go in HttpOnly cookies,
    out of reach of the page's scripts."""
    if cookies:
        _set_cookies(pair)
        return {"token_type": "Bearer", "expires_in": pair.expires_in}
    body = {"access_token": pair.access_token, "token_type": "Bearer", "expires_in": pair.expires_in}
    if pair.refresh_token:
        body["refresh_token"] = pair.refresh_token
    return body


def _set_cookies(pair: tokens.TokenPair) -> None:
    @after_this_request
    def _cookies(response):
        set_access_cookies(response, pair.access_token)
        set_refresh_cookies(response, pair.refresh_token)
        return response


def _forget_cookies() -> None:
    @after_this_request
    def _forget(response):
        unset_jwt_cookies(response)
        return response


@blp.route("/register")
class Register(MethodView):
    @blp.access(PUBLIC)
    @ratelimit.register
    @blp.arguments(RegisterIn)
    @blp.response(201, UserOut)
    @blp.alt_response(409, schema=ErrorSchema, description="The username or email is already registered.")
    @blp.alt_response(429, schema=ErrorSchema, description="Too many registrations from this address.")
    def post(self, body):
        """Create an account. It has no role: roles come with organization memberships."""
        return identity.register(session=db.session, address=request.remote_addr, **body)


@blp.route("/login")
class Login(MethodView):
    @blp.access(PUBLIC)
    @ratelimit.login
    @blp.arguments(LoginIn)
    @blp.response(200, TokensOut)
    @blp.alt_response(401, schema=ErrorSchema, description="Wrong username or password (the same answer for both).")
    @blp.alt_response(429, schema=ErrorSchema, description="Too many failed logins for this username or address.")
    def post(self, body):
        """Exchange a username and password for an access and a refresh token."""
        user = identity.authenticate(session=db.session, username=body["username"], password=body["password"])
        pair = tokens.start_session(_redis(), str(user.id), _lifetimes())
        return _tokens_body(pair, cookies=body["cookies"])


@blp.route("/refresh")
class Refresh(MethodView):
    @blp.access(REFRESH)
    @ratelimit.refresh
    @blp.response(200, TokensOut)
    @blp.alt_response(429, schema=ErrorSchema, description="Too many refreshes from this address.")
    def post(self):
        """Spend the refresh token (sent as Bearer) for a new access and refresh token.

        A refresh token works once. Presenting one that was already spent ends its whole session (every
        token issued since the login): one of the two holders is not the user. Rotation never extends a
        session past its absolute lifetime (`SESSION_MAX_DAYS` after the login).
        """
        pair = tokens.rotate(_redis(), current_claims(), _lifetimes())
        return _tokens_body(pair, cookies=get_jwt_request_location() == "cookies")


@blp.route("/logout")
class Logout(MethodView):
    @blp.access(USER)
    @blp.response(204)
    def post(self):
        """End this session: every access and refresh token issued since its login stops working at once."""
        tokens.end_session(_redis(), current_claims()["sid"])
        _forget_cookies()


@blp.route("/logout-all")
class LogoutAll(MethodView):
    @blp.access(USER)
    @blp.response(204)
    def post(self):
        """End every session of yours, on every device, this one included."""
        tokens.end_all_sessions(_redis(), str(current_user_id()))
        _forget_cookies()


@blp.route("/password")
class Password(MethodView):
    @blp.access(USER)
    @ratelimit.reauthenticate
    @blp.arguments(PasswordChangeIn)
    @blp.response(200, TokensOut)
    @blp.alt_response(403, schema=ErrorSchema, description="The current password is wrong.")
    @blp.alt_response(429, schema=ErrorSchema, description="Too many wrong passwords for this account.")
    def post(self, body):
        """Change your password (the current one is required) and end every session you have.

        The answer is a fresh token pair for a new session, so this client stays logged in; the tokens it
        held until now stop working, like those of every other device.
        """
        identity.change_password(session=db.session, redis=_redis(), user_id=current_user_id(), **body)
        pair = tokens.start_session(_redis(), str(current_user_id()), _lifetimes())
        return _tokens_body(pair, cookies=get_jwt_request_location() == "cookies")


@blp.route("/me")
class Me(MethodView):
    @blp.access(USER)
    @blp.response(200, MeOut)
    def get(self):
        """Who the token belongs to, and their organizations with their role in each."""
        user = identity.get(session=db.session, user_id=current_user_id())
        if user is None:
            raise Unauthorized(identity.USER_GONE)
        memberships = organizations.list_for_user(session=db.session, user_id=user.id)
        return {
            "id": user.id,
            "username": user.username,
            "email": user.email,
            "created_at": user.created_at,
            "organizations": [{"id": o.id, "name": o.name, "role": role} for o, role in memberships],
        }

    @blp.access(USER)
    @ratelimit.reauthenticate
    @blp.arguments(AccountDeleteIn)
    @blp.response(204)
    @blp.alt_response(403, schema=ErrorSchema, description="The password is wrong.")
    @blp.alt_response(409, schema=ErrorSchema, description="You are the only admin of an organization (named).")
    @blp.alt_response(429, schema=ErrorSchema, description="Too many wrong passwords for this account.")
    def delete(self, body):
        """Delete your account (the password is required) and end every session you have.

        Your memberships go with it. Deployments and invites you created stay, with `created_by` null;
        their events keep your username. Refused (409) while you are the only admin of an organization.
        """
        identity.delete_account(session=db.session, redis=_redis(), user_id=current_user_id(), **body)
        _forget_cookies()
