"""Registration, login, token refresh and logout (API.md, "Auth")."""

from flask import after_this_request, current_app, request
from flask.views import MethodView
from flask_jwt_extended import get_jwt_request_location, set_access_cookies, set_refresh_cookies, unset_jwt_cookies

from api import ratelimit
from api.access import PUBLIC, REFRESH, USER, current_claims, current_user_id
from api.auth.schemas import LoginIn, MeOut, RegisterIn, TokensOut, UserOut
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
        pair = tokens.issue(str(user.id), _settings().access_token_minutes * 60)
        return _tokens_body(pair, cookies=body["cookies"])


@blp.route("/refresh")
class Refresh(MethodView):
    @blp.access(REFRESH)
    @ratelimit.refresh
    @blp.response(200, TokensOut)
    @blp.alt_response(429, schema=ErrorSchema, description="Too many refreshes from this address.")
    def post(self):
        """Spend the refresh token (sent as Bearer) for a new access and refresh token; the old one is revoked."""
        pair = tokens.rotate(_redis(), current_claims(), _settings().access_token_minutes * 60)
        return _tokens_body(pair, cookies=get_jwt_request_location() == "cookies")


@blp.route("/logout")
class Logout(MethodView):
    @blp.access(USER)
    @blp.response(204)
    def post(self):
        """Revoke the access token and the refresh token issued with it, at once."""
        tokens.logout(_redis(), current_claims(), _settings().refresh_token_days * 86400)

        @after_this_request
        def _forget(response):
            unset_jwt_cookies(response)
            return response


@blp.route("/me")
class Me(MethodView):
    @blp.access(USER)
    @blp.response(200, MeOut)
    def get(self):
        """Who the token belongs to, and their organizations with their role in each."""
        user = identity.get(session=db.session, user_id=current_user_id())
        if user is None:
            raise Unauthorized("The token's user no longer exists.")
        memberships = organizations.list_for_user(session=db.session, user_id=user.id)
        return {
            "id": user.id,
            "username": user.username,
            "email": user.email,
            "created_at": user.created_at,
            "organizations": [{"id": o.id, "name": o.name, "role": role} for o, role in memberships],
        }
