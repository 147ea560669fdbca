"""Who may call what: every route declares its access rule, and this module enforces it.

Deny by default: `create_app` refuses to start if any route declares no rule. Organization-scoped
rules find the organization from the path (an organization, cluster or deployment id) and ask
`organizations.require_member`: not a member is 404, exactly like a missing id; a role too low is 403.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from flask import Flask, g, request
from flask_jwt_extended import get_jwt, get_jwt_identity, verify_jwt_in_request

from shared.agents import service as agents
from shared.clusters import service as clusters
from shared.clusters.accounting import CLUSTER_NOT_FOUND
from shared.db import db
from shared.deployments import service as deployments
from shared.errors import Unauthorized
from shared.organizations import service as organizations
from shared.organizations.models import Membership
from shared.organizations.roles import Role

ACCESS_ATTRIBUTE = "_hv_access"
# Blueprints that are not ours to guard: flask-smorest's spec and docs pages.
UNGUARDED_BLUEPRINTS = {"api-docs"}


@dataclass(frozen=True)
class Scope:
    """How to find the organization that owns the object a path parameter names."""

    organization_of: Callable[..., uuid.UUID | None]
    not_found: str
    # Optional: one query answering both "which organization" and "what is the caller's role there"
    # (an object with `organization_id` and `role`, None if no such object), kept for the view as
    # `current_access()`. Hot routes' scopes have one; the others take two queries.
    access_of: Callable[..., Any] | None = None


def _organization_itself(*, session, object_id: uuid.UUID) -> uuid.UUID:
    return object_id


# Path parameter -> how to find its organization, and what to say when the caller may not know it exists.
SCOPES: dict[str, Scope] = {
    "org_id": Scope(_organization_itself, organizations.ORGANIZATION_NOT_FOUND),
    "cluster_id": Scope(clusters.organization_of, CLUSTER_NOT_FOUND, clusters.access_of),
    "deployment_id": Scope(deployments.organization_of, deployments.DEPLOYMENT_NOT_FOUND),
}


@dataclass(frozen=True)
class Rule:
    """An access rule: no credential, a token (access, refresh, or a cluster's agent token: "agent"), or
    membership with a minimum role."""

    credential: str | None = "access"
    role: Role | None = None
    scope: str = "org_id"

    @property
    def denials(self) -> tuple[int, ...]:
        if self.credential is None:
            return ()
        return (401, 403, 404) if self.role else (401,)


PUBLIC = Rule(credential=None)
USER = Rule()
REFRESH = Rule(credential="refresh")
# An agent token, and nothing else: a user's JWT is refused (401); the token names the agent's cluster.
AGENT = Rule(credential="agent")


def member(role: Role, of: str = "org_id") -> Rule:
    """Members of the organization that owns the path's `of` object, with at least `role`."""
    if of not in SCOPES:
        raise ValueError(f"no scope registered for path parameter {of!r}")
    return Rule(role=role, scope=of)


def current_user_id() -> uuid.UUID:
    return g.user_id


def current_claims() -> dict:
    """The verified token's claims."""
    return g.jwt


def current_member():
    """The caller's membership in the organization the route is scoped to."""
    return g.member


def current_agent_token():
    """The agent token of the caller (AGENT routes): its cluster is the only one it may act on."""
    return g.agent_token


def current_access():
    """What the scope's `access_of` found for this request (e.g. clusters.CallerAccess)."""
    return g.access


SEND_AS_BEARER = "Send the token as `Authorization: Bearer <token>`."


def _normalize_authorization() -> None:
    """Accept the Bearer scheme in any case (RFC 9110: schemes are case-insensitive); refuse other shapes."""
    value = request.headers.get("Authorization", "").strip()
    if not value:
        return  # no header: the token may come as a cookie
    scheme, _, token = value.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise Unauthorized(SEND_AS_BEARER)
    # flask-jwt-extended compares the scheme case-sensitively; hand it the canonical spelling.
    request.environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"


AGENT_TOKEN_NEEDED = "An agent token is required: send it as `Authorization: Bearer <token>`."  # noqa: S105


def _authenticate_agent() -> None:
    _normalize_authorization()
    _, _, token = request.headers.get("Authorization", "").partition(" ")
    if not token:
        raise Unauthorized(AGENT_TOKEN_NEEDED)
    g.agent_token = agents.authenticate(session=db.session, token=token)


def _authenticate(rule: Rule) -> None:
    if rule.credential == "agent":
        _authenticate_agent()
        return
    _normalize_authorization()
    verify_jwt_in_request(refresh=rule.credential == "refresh")
    try:
        g.user_id = uuid.UUID(get_jwt_identity())
    except (TypeError, ValueError):
        raise Unauthorized("The token is invalid.") from None
    g.jwt = get_jwt()


def _member_by_access(scope: Scope, role: Role, object_id: uuid.UUID) -> Membership:
    found = g.access = scope.access_of(session=db.session, object_id=object_id, user_id=g.user_id)
    member = (
        None
        if found is None or found.role is None
        else Membership(organization_id=found.organization_id, user_id=g.user_id, role=found.role)
    )
    return organizations.require_role(member, role, scope.not_found)


def guard(rule: Rule):
    """Decorator enforcing `rule` before the view (and before its body is parsed)."""

    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            if rule.credential is not None:
                _authenticate(rule)
            if rule.role is not None:
                scope = SCOPES[rule.scope]
                if scope.access_of is not None:
                    g.member = _member_by_access(scope, rule.role, kwargs[rule.scope])
                else:
                    organization_id = scope.organization_of(session=db.session, object_id=kwargs[rule.scope])
                    g.member = organizations.require_member(
                        session=db.session,
                        organization_id=organization_id,
                        user_id=g.user_id,
                        role=rule.role,
                        not_found=scope.not_found,
                    )
            return view(*args, **kwargs)

        setattr(wrapper, ACCESS_ATTRIBUTE, rule)
        return wrapper

    return decorator


def _view_method(app: Flask, endpoint: str, method: str):
    view = app.view_functions[endpoint]
    view_class = getattr(view, "view_class", None)
    if view_class is None:
        return view
    return getattr(view_class, method.lower(), None)


def _declared(app: Flask, endpoint: str, method: str) -> bool:
    if endpoint == "static" or endpoint.split(".", 1)[0] in UNGUARDED_BLUEPRINTS:
        return True
    handler = _view_method(app, endpoint, method)
    return handler is not None and hasattr(handler, ACCESS_ATTRIBUTE)


def undeclared_routes(app: Flask) -> list[str]:
    """Routes (method and path) that declare no access rule."""
    missing = []
    for url_rule in app.url_map.iter_rules():
        for method in sorted(url_rule.methods - {"HEAD", "OPTIONS"}):
            if not _declared(app, url_rule.endpoint, method):
                missing.append(f"{method} {url_rule.rule}")
    return missing


def enforce_declared_access(app: Flask) -> None:
    """Refuse to start with a route that declares no access rule (called last in create_app)."""
    missing = undeclared_routes(app)
    if missing:
        raise RuntimeError(f"routes without an access rule: {', '.join(missing)}")
