"""Batch submission over HTTP (API.md "Batch submission"): all or nothing, errors by index, "#<index>"
dependencies inside the batch, one pass requested, the single submit's validation and messages."""

import uuid

import pytest
from sqlalchemy import func, select

from shared.deployments.models import Deployment, DeploymentDependency, DeploymentEvent
from shared.queues import QUEUES
from shared.scheduling.requests import pending_key
from tests.conftest import forget_pass_requests


@pytest.fixture
def org(auth):
    return auth.org()


@pytest.fixture
def cluster(fleet, org):
    return fleet.cluster(org[0], name="gpu-a", cpu=8, ram_gb=32, gpu=4)


def item(name="train", **fields):
    return {"name": name, "image": "ghcr.io/acme/train:1.2", "cpu": 1, "ram_gb": 2, "gpu": 1, **fields}


def batch(client, cluster, identity, items):
    return client.post(
        f"/api/v1/clusters/{cluster.id}/deployments/batch", json={"deployments": items}, headers=identity.headers
    )


def single(client, cluster, identity, body):
    return client.post(f"/api/v1/clusters/{cluster.id}/deployments", json=body, headers=identity.headers)


def stored(session, cluster) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(Deployment).where(Deployment.cluster_id == cluster.id))


def test_a_batch_is_stored_in_the_order_given_and_asks_for_one_pass(client, org, cluster, session, redis_client):
    forget_pass_requests(redis_client)
    response = batch(client, cluster, org[1], [item(f"job-{i}", priority=300 + i) for i in range(5)])
    assert response.status_code == 202, response.json
    assert [d["name"] for d in response.json] == [f"job-{i}" for i in range(5)]
    assert all(d["status"] == "queued" and d["cluster_id"] == str(cluster.id) for d in response.json)
    assert [d["priority"] for d in response.json] == [300, 301, 302, 303, 304]
    assert stored(session, cluster) == 5
    # One pass for the whole batch, on the queue of the highest priority waiting (304: default).
    assert redis_client.exists(pending_key(cluster.id))
    assert {queue: redis_client.llen(queue) for queue in QUEUES} == {queue: int(queue == "default") for queue in QUEUES}
    # Each is readable as a single submit's deployment would be, with its submitted event.
    one = client.get(f"/api/v1/deployments/{response.json[3]['id']}", headers=org[1].headers).json
    assert one == response.json[3]
    events = session.scalars(select(DeploymentEvent.type).where(DeploymentEvent.deployment_id == one["id"])).all()
    assert events == ["submitted"]


def test_equal_items_keep_the_batch_order_in_the_scheduling_order(client, org, cluster):
    response = batch(client, cluster, org[1], [item(f"job-{i}") for i in range(20)])
    listed = client.get(f"/api/v1/clusters/{cluster.id}/deployments", headers=org[1].headers).json
    assert [d["id"] for d in listed] == [d["id"] for d in response.json]


def test_items_depend_on_earlier_items_and_existing_deployments(client, org, cluster, fleet, session):
    existing = fleet.deployment(cluster, org[1])
    items = [
        item("prep"),
        item("train", depends_on=["#0", str(existing.id)]),
        item("evaluate", depends_on=["#1", "#0", "#1"]),
    ]
    response = batch(client, cluster, org[1], items)
    assert response.status_code == 202, response.json
    prep, train, evaluate = (d["id"] for d in response.json)
    assert response.json[0]["depends_on"] == []
    assert response.json[1]["depends_on"] == [prep, str(existing.id)]
    assert response.json[2]["depends_on"] == [train, prep]
    rows = session.execute(
        select(DeploymentDependency.depends_on_id).where(DeploymentDependency.deployment_id == uuid.UUID(evaluate))
    ).scalars()
    assert {str(r) for r in rows} == {train, prep}
    # And they read back the same way.
    read = client.get(f"/api/v1/deployments/{evaluate}", headers=org[1].headers).json
    assert sorted(read["depends_on"]) == sorted([train, prep])


@pytest.mark.parametrize("index, reference", [(0, "#0"), (0, "#1"), (1, "#1"), (1, "#7")])
def test_a_reference_must_name_an_earlier_item(client, org, cluster, session, index, reference):
    items = [item("a"), item("b")]
    items[index]["depends_on"] = [reference]
    response = batch(client, cluster, org[1], items)
    assert response.status_code == 422
    assert response.json["errors"]["json"]["deployments"] == {
        str(index): {"depends_on": [f"{reference} must name an earlier item of this batch."]}
    }
    assert stored(session, cluster) == 0


def test_a_reference_is_refused_outside_a_batch(client, org, cluster):
    response = single(client, cluster, org[1], item(depends_on=["#0"]))
    assert response.status_code == 422
    assert response.json["errors"]["json"] == {"depends_on": {"0": ["Not a valid UUID."]}}


def test_one_bad_item_stores_nothing_and_is_named_by_index_with_the_single_submits_message(
    client, org, cluster, session, redis_client
):
    forget_pass_requests(redis_client)
    items = [item("a"), item("b"), item("too-big", gpu=8), item("d")]
    response = batch(client, cluster, org[1], items)
    assert response.status_code == 422
    alone = single(client, cluster, org[1], item("too-big", gpu=8))
    assert response.json["errors"]["json"]["deployments"] == {"2": alone.json["errors"]["json"]}
    assert response.json["message"] == f"Item 2: {alone.json['message']}"
    assert stored(session, cluster) == 0
    assert not redis_client.exists(pending_key(cluster.id))


def test_schema_errors_name_every_bad_item_with_the_single_submits_messages(client, org, cluster, session):
    bad = {
        1: item(priority="high"),
        3: {"image": "ghcr.io/acme/train:1", "cpu": 1, "ram_gb": 1, "gpu": 0},
        4: item(cpu=0.0001, surprise=True),
        5: item(depends_on=["not-an-id"]),
    }
    items = [bad.get(i, item(f"ok-{i}")) for i in range(6)]
    response = batch(client, cluster, org[1], items)
    assert response.status_code == 422
    errors = response.json["errors"]["json"]["deployments"]
    assert sorted(errors) == ["1", "3", "4", "5"]
    for index, body in bad.items():
        assert errors[str(index)] == single(client, cluster, org[1], body).json["errors"]["json"]
    assert stored(session, cluster) == 0


def test_an_unknown_or_foreign_dependency_is_named_by_index(client, auth, org, cluster, fleet, session):
    other_org, other_admin = auth.org("other")
    theirs = fleet.deployment(fleet.cluster(other_org), other_admin)
    missing = uuid.uuid4()
    response = batch(
        client, cluster, org[1], [item(), item(depends_on=[str(theirs.id)]), item(depends_on=[str(missing)])]
    )
    assert response.status_code == 422
    errors = response.json["errors"]["json"]["deployments"]
    assert errors == {
        "1": single(client, cluster, org[1], item(depends_on=[str(theirs.id)])).json["errors"]["json"],
        "2": {"depends_on": [f"No deployment {missing} in this organization to depend on."]},
    }
    assert stored(session, cluster) == 0


@pytest.mark.parametrize("count", [0, 1001])
def test_a_batch_holds_1_to_1000_items(client, org, cluster, session, count):
    response = batch(client, cluster, org[1], [item(f"job-{i}", gpu=0, cpu=0.001, ram_gb=0.001) for i in range(count)])
    assert response.status_code == 422
    assert "deployments" in response.json["errors"]["json"]
    assert stored(session, cluster) == 0


def test_a_batch_of_1000_is_accepted(client, org, cluster, session):
    items = [item(f"job-{i}", gpu=0, cpu=0.001, ram_gb=0.001) for i in range(1000)]
    response = batch(client, cluster, org[1], items)
    assert response.status_code == 202, response.json
    assert len(response.json) == 1000 and response.json[999]["name"] == "job-999"
    assert stored(session, cluster) == 1000


@pytest.mark.parametrize("body", [None, {}, {"deployments": "x"}, {"deployments": [item()], "extra": 1}])
def test_a_malformed_batch_is_an_error_in_the_usual_format(client, org, cluster, body):
    response = client.post(f"/api/v1/clusters/{cluster.id}/deployments/batch", json=body, headers=org[1].headers)
    assert response.status_code in (400, 415, 422)
    assert response.json["code"] == response.status_code and response.json["message"]


def test_who_may_submit_a_batch(client, auth, org, cluster, session):
    organization, _ = org
    viewer = auth.member("viewer", organization)
    developer = auth.member("developer", organization)
    _, outsider = auth.org("outsiders")
    assert batch(client, cluster, viewer, [item()]).status_code == 403
    assert batch(client, cluster, outsider, [item()]).status_code == 404
    missing = client.post(
        f"/api/v1/clusters/{uuid.uuid4()}/deployments/batch",
        json={"deployments": [item()]},
        headers=outsider.headers,
    )
    assert missing.status_code == 404 and missing.json == batch(client, cluster, outsider, [item()]).json
    assert (
        client.post(f"/api/v1/clusters/{cluster.id}/deployments/batch", json={"deployments": [item()]}).status_code
        == 401
    )
    assert stored(session, cluster) == 0
    response = batch(client, cluster, developer, [item()])
    assert response.status_code == 202 and response.json[0]["created_by"] == str(developer.id)
