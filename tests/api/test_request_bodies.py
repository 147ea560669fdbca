"""What a request may carry, over every route of the spec (so that a new route is covered by itself):
JSON bodies only, bounded in depth and members, no NUL in any string, pages within bigint."""

import json
import logging
import re

import pytest

from api.bodies import MAX_DEPTH, MAX_MEMBERS
from api.pagination import MAX_PAGE


@pytest.fixture
def world(auth, fleet):
    """An admin's organization with a cluster, a running deployment and an invite; path values for each."""
    organization, admin = auth.org()
    cluster = fleet.cluster(organization)
    deployment = fleet.start(fleet.deployment(cluster, admin))
    from shared.agents import service as agents

    agent_cluster = fleet.cluster(organization, name="agents", runtime="agent")
    _, admin.agent_token = agents.create_token(
        session=fleet.session, cluster_id=agent_cluster.id, name="host", actor_id=admin.id
    )
    values = {
        "org_id": organization.id,
        "cluster_id": cluster.id,
        "deployment_id": deployment.id,
        "user_id": admin.id,
        "code": "some-invite-code",
    }
    return admin, values


METHODS = {"get", "put", "post", "patch", "delete"}


def operations(client, predicate):
    """(method, path template, operation) of every operation in /openapi.json that `predicate` accepts."""
    spec = client.get("/openapi.json").json
    found = [
        (method.upper(), path, operation)
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
        if method in METHODS and predicate(operation)
    ]
    assert found, "no operation matched: the spec changed shape?"
    return spec, found


def fill(path, values):
    return re.sub(r"\{(\w+)\}", lambda match: str(values[match.group(1)]), path)


def credentials(admin, operation):
    """The admin's token, or the agent token of their agent cluster for the agents' routes."""
    if any("agentToken" in scheme for scheme in operation.get("security", [])):
        return {"Authorization": f"Bearer {admin.agent_token}"}
    return admin.headers


def takes_a_body(operation):
    return "requestBody" in operation


def assert_error(response, status):
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    body = response.json
    assert body["code"] == status and body["status"] and body["message"]
    return body


def assert_nothing_logged(caplog):
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info]
    assert not errors, [record.getMessage() for record in errors]


HOSTILE_BODIES = {
    "arrays nested 1,000 deep": "[" * 1000 + "]" * 1000,
    "objects nested 1,000 deep": '{"a":' * 1000 + "0" + "}" * 1000,
    "arrays nested just too deep": "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1),
    "a field nested 100 deep": json.dumps({"name": json.loads("[" * 100 + "]" * 100)}),
    "an object with too many keys": json.dumps({f"k{i}": 0 for i in range(MAX_MEMBERS + 1)}),
    "an array with too many items": json.dumps({"depends_on": ["x"] * (MAX_MEMBERS + 1)}),
    "a lone surrogate": '{"name": "\\ud800"}',
}


@pytest.mark.parametrize("hostile", HOSTILE_BODIES)
def test_a_hostile_json_body_is_a_400_on_every_route_that_takes_a_body(client, world, caplog, hostile):
    admin, values = world
    _, found = operations(client, takes_a_body)
    for method, path, operation in found:
        response = client.open(
            fill(path, values),
            method=method,
            data=HOSTILE_BODIES[hostile],
            content_type="application/json",
            headers=credentials(admin, operation),
        )
        body = assert_error(response, 400)
        assert body["message"] != "The request body is not valid JSON.", (method, path)
    assert_nothing_logged(caplog)


def test_the_login_rate_limiter_survives_a_deep_body(client, caplog):
    # The limiter reads the username from the body before the view: the first place the 500 came from.
    response = client.post("/api/v1/auth/login", data="[" * 1000 + "]" * 1000, content_type="application/json")
    assert "nested deeper than 32 levels" in assert_error(response, 400)["message"]
    assert_nothing_logged(caplog)


def test_a_body_within_the_bounds_is_still_read(client, auth):
    admin = auth.user()
    nested = json.loads("[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1))
    response = client.post("/api/v1/organizations", json={"name": nested}, headers=admin.headers)
    assert assert_error(response, 422)["errors"]["json"]["name"] == ["Not a valid string."]


def test_a_form_body_is_415_asking_for_json_on_every_route_that_takes_a_body(client, world, caplog):
    admin, values = world
    _, found = operations(client, takes_a_body)
    for method, path, operation in found:
        response = client.open(
            fill(path, values),
            method=method,
            data={"name": "research"},
            headers=credentials(admin, operation),
        )
        body = assert_error(response, 415)
        assert body["message"] == "Send the body as JSON (Content-Type: application/json).", (method, path)
        assert "415" in operation["responses"], (method, path)
    assert_nothing_logged(caplog)


def test_a_missing_body_says_so_where_required_and_is_fine_where_optional(client, world):
    admin, values = world
    _, found = operations(client, takes_a_body)
    for method, path, operation in found:
        response = client.open(fill(path, values), method=method, headers=credentials(admin, operation))
        if operation["requestBody"].get("required"):
            body = assert_error(response, 422)
            assert body["message"] == "This request needs a JSON body (Content-Type: application/json).", path
        else:
            assert response.status_code < 400, (method, path, response.json)


def _string_fields(spec, operation):
    reference = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = spec["components"]["schemas"][reference.rsplit("/", 1)[1]]
    return [name for name, field in schema["properties"].items() if field.get("type") == "string"]


def test_a_nul_in_any_string_field_is_a_422_naming_the_field(client, world, caplog):
    admin, values = world
    spec, found = operations(client, takes_a_body)
    tried = 0
    for method, path, operation in found:
        for field in _string_fields(spec, operation):
            response = client.open(
                fill(path, values), method=method, json={field: "a\x00b"}, headers=credentials(admin, operation)
            )
            body = assert_error(response, 422)
            assert body["errors"]["json"] == {field: ["Must not contain NUL characters."]}, (method, path)
            tried += 1
    assert tried >= 10
    assert_nothing_logged(caplog)


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("POST", "/api/v1/auth/login", {"username": "ada\x00", "password": "x"}),
        ("POST", "/api/v1/organizations/join", {"invite_code": "code\x00"}),
        ("POST", "/api/v1/deployments/{deployment_id}/fail", {"reason": "oom\x00"}),
        ("DELETE", "/api/v1/organizations/{org_id}/invites/a%00b", None),
        ("GET", "/api/v1/clusters/{cluster_id}/deployments?status=queued%00", None),
    ],
)
def test_nul_bytes_in_bodies_paths_and_queries_are_422(client, world, caplog, method, path, body):
    admin, values = world
    response = client.open(fill(path, values), method=method, json=body, headers=admin.headers)
    assert_error(response, 422)
    assert_nothing_logged(caplog)


def test_a_page_beyond_the_bound_is_422_on_every_list(client, world, caplog):
    admin, values = world

    def paginated(operation):
        return any(parameter["name"] == "page" for parameter in operation.get("parameters", []))

    _, found = operations(client, paginated)
    for method, path, operation in found:
        page = next(p for p in operation["parameters"] if p["name"] == "page")
        assert page["schema"]["maximum"] == MAX_PAGE
        url = fill(path, values)
        assert (
            client.open(url, method=method, query_string={"page": MAX_PAGE}, headers=admin.headers).status_code == 200
        )
        response = client.open(url, method=method, query_string={"page": 99999999999999999}, headers=admin.headers)
        assert "page" in assert_error(response, 422)["errors"]["query"], (method, path)
    assert_nothing_logged(caplog)


def test_a_refused_nul_login_costs_no_attempt(client, app, monkeypatch):
    """No password was tried: like a malformed body, the 422 does not count toward the login limits."""
    import dataclasses

    from tests.api.test_auth import login, register

    settings = dataclasses.replace(app.extensions["settings"], login_limits="2/minute", login_address_limit="2/minute")
    monkeypatch.setitem(app.extensions, "settings", settings)
    register(client)
    for _ in range(5):
        assert login(client, username="alice\x00").status_code == 422
    assert login(client).status_code == 200


@pytest.mark.parametrize(("schema", "field"), [("DeploymentIn", "run_seconds"), ("InviteIn", "expires_in_hours")])
def test_the_spec_says_a_strictly_positive_number_is_strictly_positive(client, schema, field):
    # API.md: run_seconds > 0; the spec said minimum 0, and 0 was refused.
    properties = client.get("/openapi.json").json["components"]["schemas"][schema]["properties"][field]
    assert properties["type"] == "number"
    assert properties["minimum"] == 0 and properties["exclusiveMinimum"] is True
