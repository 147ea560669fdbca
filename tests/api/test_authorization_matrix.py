"""The authorization matrix: every route x every kind of caller x own / other org's / missing object.

The routes come from the app's own route table: a route missing from EXPECTED fails
`test_every_route_is_in_the_matrix`, so no new route escapes it. Expectations are written here from
API.md, independently of the rules the routes declare. Every denied request is also shown to have
changed nothing in the database.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

import pytest
from flask_jwt_extended import create_access_token
from sqlalchemy import text

from shared.db import Base

ROLE_RANK = {"viewer": 0, "developer": 1, "admin": 2}


@dataclass(frozen=True)
class Expect:
    """Who may call a route: 'public', 'user', 'refresh', 'agent' (a cluster's agent token) or a minimum role;
    and what success looks like."""

    who: str
    success: tuple[int, ...]
    body: str | None = None  # name of a body builder in World.body


# (method, Flask rule) -> expectation, from API.md.
EXPECTED = {
    ("GET", "/"): Expect("public", (200,)),
    ("GET", "/healthz"): Expect("public", (200,)),
    ("GET", "/readyz"): Expect("public", (200,)),
    # Unauthenticated unless METRICS_TOKEN is set (tests/api/test_metrics.py); the suite sets none.
    ("GET", "/metrics"): Expect("public", (200,)),
    ("POST", "/api/v1/auth/register"): Expect("public", (201,), "register"),
    ("POST", "/api/v1/auth/login"): Expect("public", (200,), "login"),
    ("POST", "/api/v1/auth/refresh"): Expect("refresh", (200,)),
    ("POST", "/api/v1/auth/logout"): Expect("user", (204,)),
    ("GET", "/api/v1/auth/me"): Expect("user", (200,)),
    ("POST", "/api/v1/auth/logout-all"): Expect("user", (204,)),
    ("POST", "/api/v1/auth/password"): Expect("user", (200,), "password"),
    # The admins of the world's organizations are their only admins: they may not delete their accounts.
    ("DELETE", "/api/v1/auth/me"): Expect("user", (204, 409), "account"),
    ("POST", "/api/v1/organizations"): Expect("user", (201,), "organization"),
    ("GET", "/api/v1/organizations"): Expect("user", (200,)),
    ("POST", "/api/v1/organizations/join"): Expect("user", (200, 409), "join"),
    ("GET", "/api/v1/organizations/<uuid:org_id>"): Expect("viewer", (200,)),
    ("POST", "/api/v1/organizations/<uuid:org_id>/invites"): Expect("admin", (201,), "invite"),
    ("GET", "/api/v1/organizations/<uuid:org_id>/invites"): Expect("admin", (200,)),
    ("DELETE", "/api/v1/organizations/<uuid:org_id>/invites/<string:code>"): Expect("admin", (204,)),
    ("POST", "/api/v1/organizations/<uuid:org_id>/invite-code"): Expect("admin", (201,)),
    ("GET", "/api/v1/organizations/<uuid:org_id>/members"): Expect("viewer", (200,)),
    ("PATCH", "/api/v1/organizations/<uuid:org_id>/members/<uuid:user_id>"): Expect("admin", (200,), "role"),
    # "admin, or the member itself": the target here is never the caller, so only admins may.
    ("DELETE", "/api/v1/organizations/<uuid:org_id>/members/<uuid:user_id>"): Expect("admin", (204,)),
    # The audit log: admins only (API.md, "History and views across the organization").
    ("GET", "/api/v1/organizations/<uuid:org_id>/events"): Expect("admin", (200,)),
    ("POST", "/api/v1/organizations/<uuid:org_id>/clusters"): Expect("admin", (201,), "cluster"),
    ("GET", "/api/v1/organizations/<uuid:org_id>/clusters"): Expect("viewer", (200,)),
    ("GET", "/api/v1/clusters/<uuid:cluster_id>"): Expect("viewer", (200,)),
    ("PATCH", "/api/v1/clusters/<uuid:cluster_id>"): Expect("admin", (200,), "resize"),
    # The world's cluster runs a deployment: deleting it is a conflict even for its admin.
    ("DELETE", "/api/v1/clusters/<uuid:cluster_id>"): Expect("admin", (409,)),
    ("GET", "/api/v1/clusters/<uuid:cluster_id>/events"): Expect("viewer", (200,)),
    ("POST", "/api/v1/clusters/<uuid:cluster_id>/deployments"): Expect("developer", (202,), "deployment"),
    ("POST", "/api/v1/clusters/<uuid:cluster_id>/deployments/batch"): Expect("developer", (202,), "batch"),
    ("GET", "/api/v1/clusters/<uuid:cluster_id>/deployments"): Expect("viewer", (200,)),
    ("POST", "/api/v1/clusters/<uuid:cluster_id>/deployments/dry-run"): Expect("developer", (200,), "deployment"),
    ("GET", "/api/v1/organizations/<uuid:org_id>/deployments"): Expect("viewer", (200,)),
    ("GET", "/api/v1/deployments/<uuid:deployment_id>"): Expect("viewer", (200,)),
    ("GET", "/api/v1/deployments/<uuid:deployment_id>/events"): Expect("viewer", (200,)),
    ("POST", "/api/v1/deployments/<uuid:deployment_id>/complete"): Expect("developer", (200,)),
    ("POST", "/api/v1/deployments/<uuid:deployment_id>/fail"): Expect("developer", (200,), "failure"),
    ("POST", "/api/v1/deployments/<uuid:deployment_id>/cancel"): Expect("developer", (200,)),
    ("GET", "/api/v1/deployments/<uuid:deployment_id>/logs"): Expect("viewer", (200,)),
    ("POST", "/api/v1/clusters/<uuid:cluster_id>/agent-tokens"): Expect("admin", (201,), "agent_token"),
    ("GET", "/api/v1/clusters/<uuid:cluster_id>/agent-tokens"): Expect("admin", (200,)),
    ("DELETE", "/api/v1/clusters/<uuid:cluster_id>/agent-tokens/<uuid:token_id>"): Expect("admin", (204,)),
    # RUNTIME.md: an agent token, of any cluster, acts on its own cluster; nothing else may call it.
    ("POST", "/api/v1/agent/sync"): Expect("agent", (200,), "sync"),
}

IDENTITIES = [
    "anonymous",
    "expired",
    "revoked",
    "viewer",
    "developer",
    "admin",
    "other-viewer",
    "other-developer",
    "other-admin",
    "agent",  # an agent token of the organization's agent cluster
    "other-agent",  # ... of the other organization's
]
TARGETS = ["own", "other", "missing"]


def _app_routes(app):
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith("api-docs"):
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((method, rule.rule))
    return routes


def test_every_route_is_in_the_matrix(app):
    assert _app_routes(app) == set(EXPECTED), "add the new route to EXPECTED, with who may call it"


class Org:
    def __init__(self, auth, session, fleet, name):
        from shared.agents import service as agents
        from shared.organizations import service as organizations

        self.organization, self.admin = auth.org(name)
        self.id = self.organization.id
        self.viewer = auth.member("viewer", self.organization)
        self.developer = auth.member("developer", self.organization)
        self.subject = auth.member("viewer", self.organization)  # the member that member routes act on
        self.invite = organizations.create_invite(
            session=session, organization_id=self.id, actor_id=self.admin.id, role=organizations.Role.VIEWER
        )
        self.cluster = fleet.cluster(self.organization, name="main")
        self.deployment = fleet.start(fleet.deployment(self.cluster, self.admin, gpu=1))
        self.agent_token_row, _ = agents.create_token(
            session=session, cluster_id=self.cluster.id, name="spare", actor_id=self.admin.id
        )
        agent_cluster = fleet.cluster(self.organization, name="agents", runtime="agent")
        _, self.agent_token = agents.create_token(
            session=session, cluster_id=agent_cluster.id, name="host", actor_id=self.admin.id
        )


class World:
    """Two organizations with a member of each role, built fresh for every case."""

    def __init__(self, app, auth, session, fleet, redis_client):
        self.app = app
        self.mine = Org(auth, session, fleet, "mine")
        self.theirs = Org(auth, session, fleet, "theirs")
        with app.app_context():
            self.expired = create_access_token(identity=str(self.mine.admin.id), expires_delta=timedelta(seconds=-5))
        revoked = auth.user()
        self.revoked = revoked.access_token
        import jwt as pyjwt

        from shared.identity import tokens

        tokens.end_session(redis_client, pyjwt.decode(revoked.access_token, options={"verify_signature": False})["sid"])

    def headers(self, identity):
        tokens = {"anonymous": None, "expired": self.expired, "revoked": self.revoked}
        if identity in tokens:
            token = tokens[identity]
        else:
            org = self.theirs if identity.startswith("other-") else self.mine
            role = identity.removeprefix("other-")
            token = org.agent_token if role == "agent" else getattr(org, role).access_token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def path(self, rule, target):
        org = {"own": self.mine, "other": self.theirs}.get(target)
        values = {
            "<uuid:org_id>": str(org.id) if org else str(uuid.uuid4()),
            "<uuid:user_id>": str(org.subject.id) if org else str(uuid.uuid4()),
            "<string:code>": org.invite.code if org else "no-such-code",
            "<uuid:cluster_id>": str(org.cluster.id) if org else str(uuid.uuid4()),
            "<uuid:deployment_id>": str(org.deployment.id) if org else str(uuid.uuid4()),
            "<uuid:token_id>": str(org.agent_token_row.id) if org else str(uuid.uuid4()),
        }
        for placeholder, value in values.items():
            rule = rule.replace(placeholder, value)
        return rule

    def body(self, name):
        if name is None:
            return None
        return {
            "register": {
                "username": f"new{uuid.uuid4().hex[:8]}",
                "email": f"{uuid.uuid4().hex[:8]}@example.com",
                "password": "correct horse battery",
            },
            "login": {"username": self.mine.admin.username, "password": "correct horse battery"},
            "password": {"current_password": "correct horse battery", "new_password": "a new horse battery"},
            "account": {"password": "correct horse battery"},
            "organization": {"name": "another"},
            "join": {"invite_code": self.mine.invite.code},
            "invite": {"role": "viewer"},
            "role": {"role": "developer"},
            "cluster": {"name": f"c-{uuid.uuid4().hex[:6]}", "cpu": 4, "ram_gb": 16, "gpu": 1},
            "resize": {"cpu": 64},
            "deployment": {"name": "train", "image": "ghcr.io/acme/train:1", "cpu": 1, "ram_gb": 2, "gpu": 0},
            "batch": {
                "deployments": [
                    {"name": "prep", "image": "ghcr.io/acme/prep:1", "cpu": 1, "ram_gb": 2, "gpu": 0},
                    {
                        "name": "train",
                        "image": "ghcr.io/acme/train:1",
                        "cpu": 1,
                        "ram_gb": 2,
                        "gpu": 0,
                        "depends_on": ["#0"],
                    },
                ]
            },
            "failure": {"reason": "out of memory"},
            "agent_token": {"name": "rack-2"},
            "sync": {"agent": {"name": "host-1", "driver": "process", "version": "0.1.0"}, "deployments": []},
        }[name]


def _snapshot(session) -> dict:
    snapshot = {}
    for table in Base.metadata.sorted_tables:
        snapshot[table.name] = session.execute(
            text(f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM \"{table.name}\" t")
        ).scalar()
    session.rollback()
    return snapshot


def _expected_status(expect: Expect, identity: str, target: str | None) -> int | tuple[int, ...]:
    if expect.who == "public":
        return expect.success
    if expect.who == "agent":
        return expect.success if identity.endswith("agent") else 401
    if identity in ("anonymous", "expired", "revoked", "agent", "other-agent") or expect.who == "refresh":
        return 401  # (the matrix's callers hold access or agent tokens: a refresh route refuses them all)
    if expect.who == "user":
        return expect.success
    if target == "missing":
        return 404
    caller_is_other = identity.startswith("other-")
    object_is_other = target == "other"
    if caller_is_other != object_is_other:
        return 404  # not a member of the object's organization: the same as missing
    role = identity.removeprefix("other-")
    return expect.success if ROLE_RANK[role] >= ROLE_RANK[expect.who] else 403


def _cases():
    for method, rule in sorted(EXPECTED):
        scoped = "<" in rule
        for identity in IDENTITIES:
            for target in TARGETS if scoped else [None]:
                label = f"{method} {rule} as {identity}" + (f" on {target}" if target else "")
                yield pytest.param(method, rule, identity, target, id=label)


@pytest.mark.parametrize("method, rule, identity, target", list(_cases()))
def test_authorization(app, client, auth, session, fleet, redis_client, method, rule, identity, target):
    expect = EXPECTED[(method, rule)]
    world = World(app, auth, session, fleet, redis_client)
    expected = _expected_status(expect, identity, target)
    before = _snapshot(session)

    response = client.open(
        world.path(rule, target or "own"), method=method, json=world.body(expect.body), headers=world.headers(identity)
    )

    allowed = expected if isinstance(expected, tuple) else (expected,)
    assert response.status_code in allowed, response.json
    if response.status_code in (401, 403, 404):
        assert set(response.json) == {"code", "status", "message"}
        assert _snapshot(session) == before, "a denied request changed the database"
