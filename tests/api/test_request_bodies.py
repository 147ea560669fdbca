"""What a request may carry, over every route of the spec (so that a new route is covered by itself):
JSON bodies only, bounded in depth and members."""

import json
import logging
import re

import pytest

from api.bodies import MAX_DEPTH, MAX_MEMBERS


@pytest.fixture
def world(auth, fleet):
    """An admin's organization with a cluster, a running deployment and an invite; path values for each."""
    organization, admin = auth.org()
    cluster = fleet.cluster(organization)
    deployment = fleet.start(fleet.deployment(cluster, admin))
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
    for method, path, _ in found:
        response = client.open(
            fill(path, values),
            method=method,
            data=HOSTILE_BODIES[hostile],
            content_type="application/json",
            headers=admin.headers,
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
            headers=admin.headers,
        )
        body = assert_error(response, 415)
        assert body["message"] == "Send the body as JSON (Content-Type: application/json).", (method, path)
        assert "415" in operation["responses"], (method, path)
    assert_nothing_logged(caplog)


def test_a_missing_body_says_so_where_required_and_is_fine_where_optional(client, world):
    admin, values = world
    _, found = operations(client, takes_a_body)
    for method, path, operation in found:
        response = client.open(fill(path, values), method=method, headers=admin.headers)
        if operation["requestBody"].get("required"):
            body = assert_error(response, 422)
            assert body["message"] == "This request needs a JSON body (Content-Type: application/json).", path
        else:
            assert response.status_code < 400, (method, path, response.json)
