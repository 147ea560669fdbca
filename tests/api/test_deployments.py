"""Deployments over HTTP (API.md "Deployments"): submission, validation, listing and transitions."""

import json
import uuid

import pytest

from shared.scheduling.requests import pending_key
from tests.conftest import forget_pass_requests


@pytest.fixture
def org(auth):
    return auth.org()


@pytest.fixture
def cluster(fleet, org):
    return fleet.cluster(org[0], name="gpu-a", cpu=8, ram_gb=32, gpu=4)


def submit(client, cluster, identity, **body):
    payload = {"name": "train", "image": "ghcr.io/acme/train:1.2", "cpu": 1, "ram_gb": 2, "gpu": 1, **body}
    return client.post(f"/api/v1/clusters/{cluster.id}/deployments", json=payload, headers=identity.headers)


def test_submit_returns_202_with_a_queued_deployment(client, org, cluster):
    organization, admin = org
    response = submit(client, cluster, admin, cpu=0.5, ram_gb=1.5, run_seconds=30)
    assert response.status_code == 202
    body = response.json
    assert body["status"] == "queued" and body["reason"]
    assert body["resources"] == {"cpu": 0.5, "ram_gb": 1.5, "gpu": 1}
    assert body["priority"] == 500 and body["max_retries"] == 3 and body["depends_on"] == []
    assert body["attempts"] == 0 and body["preemptions"] == 0 and body["run_seconds"] == 30
    assert body["organization_id"] == str(organization.id) and body["cluster_id"] == str(cluster.id)
    assert body["created_by"] == str(admin.id)
    assert body["started_at"] is None and body["finished_at"] is None


def test_submit_requests_a_pass_on_the_cluster(client, org, cluster, redis_client):
    submit(client, cluster, org[1])
    assert redis_client.exists(pending_key(cluster.id))


def test_a_request_larger_than_the_cluster_is_422_naming_the_resource_and_both_numbers(client, org, cluster):
    response = submit(client, cluster, org[1], gpu=8)
    assert response.status_code == 422
    assert "8 GPU" in response.json["message"] and "4 GPU" in response.json["message"]
    assert list(response.json["errors"]["json"]) == ["gpu"]


@pytest.mark.parametrize(
    "field, value",
    [
        ("priority", -1),
        ("priority", 1001),
        ("priority", "high"),
        ("priority", 2.5),
        ("priority", True),
        ("max_retries", 11),
        ("max_retries", -1),
        ("run_seconds", 0),
        ("run_seconds", -5),
        ("run_seconds", "10"),
        ("image", "Not An Image!"),
        ("image", ""),
        ("image", "ghcr.io/acme/train:1\n"),
        ("image", "UPPER/case"),
        ("name", ""),
        ("name", "x" * 129),
        ("depends_on", ["not-a-uuid"]),
        ("depends_on", "x"),
        ("cpu", "1"),
        ("gpu", 0.5),
        ("status", "running"),
        ("attempts", 0),
        ("organization_id", str(uuid.uuid4())),
    ],
)
def test_invalid_input_is_422_naming_the_field(client, org, cluster, field, value):
    response = submit(client, cluster, org[1], **{field: value})
    assert response.status_code == 422
    assert field in response.json["errors"]["json"]


@pytest.mark.parametrize(
    "image",
    [
        "x:1",
        "nginx",
        "ghcr.io/acme/train:1.2",
        "localhost:5000/a/b_c:latest",
        "registry.example.com/ml/bert@sha256:" + "a" * 64,
    ],
)
def test_plausible_images_are_accepted(client, org, cluster, image):
    assert submit(client, cluster, org[1], image=image).status_code == 202


def test_a_dependency_must_exist_in_the_same_organization(client, auth, org, cluster, fleet):
    other_org, other_admin = auth.org("other")
    theirs = fleet.deployment(fleet.cluster(other_org), other_admin)
    for depends_on in ([str(theirs.id)], [str(uuid.uuid4())]):
        response = submit(client, cluster, org[1], depends_on=depends_on)
        assert response.status_code == 422
        assert "depends_on" in response.json["errors"]["json"]


def test_a_dependency_on_another_cluster_of_the_organization_is_accepted(client, org, cluster, fleet):
    organization, admin = org
    elsewhere = fleet.deployment(fleet.cluster(organization, name="cpu-pool"), admin)
    response = submit(client, cluster, admin, depends_on=[str(elsewhere.id)])
    assert response.status_code == 202 and response.json["depends_on"] == [str(elsewhere.id)]


def test_a_viewer_cannot_submit(client, auth, org, cluster):
    viewer = auth.member("viewer", org[0])
    assert submit(client, cluster, viewer).status_code == 403


def test_the_list_is_in_scheduling_order_and_filters_by_status(client, org, cluster, fleet):
    _, admin = org
    low = fleet.deployment(cluster, admin, name="low", priority=100)
    high_old = fleet.deployment(cluster, admin, name="high-old", priority=900)
    high_young = fleet.deployment(cluster, admin, name="high-young", priority=900)
    fleet.start(low)
    listed = client.get(f"/api/v1/clusters/{cluster.id}/deployments", headers=admin.headers).json
    assert [d["name"] for d in listed] == ["high-old", "high-young", "low"]
    running = client.get(f"/api/v1/clusters/{cluster.id}/deployments?status=running", headers=admin.headers).json
    assert [d["id"] for d in running] == [str(low.id)]
    assert {high_old.id, high_young.id}  # (kept alive for the order assertion above)


def test_the_list_is_paginated(client, org, cluster, fleet):
    _, admin = org
    for i in range(5):
        fleet.deployment(cluster, admin, name=f"d{i}")
    response = client.get(f"/api/v1/clusters/{cluster.id}/deployments?page=2&page_size=2", headers=admin.headers)
    assert [d["name"] for d in response.json] == ["d2", "d3"]
    assert json.loads(response.headers["X-Pagination"]) == {
        "total": 5,
        "total_pages": 3,
        "first_page": 1,
        "last_page": 3,
        "page": 2,
        "previous_page": 1,
        "next_page": 3,
    }


def test_an_unknown_status_filter_is_422(client, org, cluster):
    response = client.get(f"/api/v1/clusters/{cluster.id}/deployments?status=sleeping", headers=org[1].headers)
    assert response.status_code == 422


# --- transitions ------------------------------------------------------------------------------


def act(client, deployment, identity, action, **body):
    return client.post(f"/api/v1/deployments/{deployment.id}/{action}", json=body or None, headers=identity.headers)


def test_complete_frees_resources_and_requests_a_pass(client, org, cluster, fleet, redis_client):
    _, admin = org
    deployment = fleet.start(fleet.deployment(cluster, admin, gpu=2))
    redis_client.delete(pending_key(cluster.id))
    response = act(client, deployment, admin, "complete")
    assert response.status_code == 200
    assert response.json["status"] == "completed" and response.json["finished_at"]
    assert client.get(f"/api/v1/clusters/{cluster.id}", headers=admin.headers).json["allocated"]["gpu"] == 0
    assert redis_client.exists(pending_key(cluster.id))


@pytest.mark.parametrize("action", ["complete", "fail"])
def test_complete_and_fail_need_a_running_deployment(client, org, cluster, fleet, action):
    deployment = fleet.deployment(cluster, org[1])
    response = act(client, deployment, org[1], action)
    assert response.status_code == 409
    assert "is queued" in response.json["message"]


def test_fail_requeues_until_the_retries_are_spent(client, org, cluster, fleet):
    _, admin = org
    deployment = fleet.deployment(cluster, admin, max_retries=1)
    fleet.start(deployment)
    first = act(client, deployment, admin, "fail", reason="out of memory")
    assert first.status_code == 200
    assert first.json["status"] == "queued" and first.json["attempts"] == 1
    assert "out of memory" in first.json["reason"]
    fleet.start(deployment)
    second = act(client, deployment, admin, "fail")
    assert second.json["status"] == "failed" and second.json["attempts"] == 2
    assert second.json["reason"].startswith("Failed after 2 attempts:")
    assert second.json["finished_at"]
    assert client.get(f"/api/v1/clusters/{cluster.id}", headers=admin.headers).json["allocated"]["gpu"] == 0


def test_fail_with_no_retries_fails_at_once(client, org, cluster, fleet):
    deployment = fleet.start(fleet.deployment(cluster, org[1], max_retries=0))
    response = act(client, deployment, org[1], "fail", reason="oom")
    assert response.json["status"] == "failed"
    assert response.json["reason"] == "Failed after 1 attempt: oom."
    events = client.get(f"/api/v1/deployments/{deployment.id}/events", headers=org[1].headers).json
    assert "after 1 attempt;" in events[-1]["message"]


def test_cancel_from_queued_and_from_running(client, org, cluster, fleet):
    _, admin = org
    queued = fleet.deployment(cluster, admin)
    running = fleet.start(fleet.deployment(cluster, admin, gpu=4))
    assert act(client, queued, admin, "cancel").json["status"] == "cancelled"
    assert act(client, running, admin, "cancel").json["status"] == "cancelled"
    assert client.get(f"/api/v1/clusters/{cluster.id}", headers=admin.headers).json["available"]["gpu"] == 4


def test_cancel_of_a_finished_deployment_is_409_saying_its_status(client, org, cluster, fleet):
    deployment = fleet.start(fleet.deployment(cluster, org[1]))
    act(client, deployment, org[1], "complete")
    response = act(client, deployment, org[1], "cancel")
    assert response.status_code == 409 and "is completed" in response.json["message"]


def test_every_status_change_is_an_event_naming_its_cause(client, org, cluster, fleet):
    _, admin = org
    deployment = fleet.start(fleet.deployment(cluster, admin))
    act(client, deployment, admin, "fail", reason="segfault")
    events = client.get(f"/api/v1/deployments/{deployment.id}/events", headers=admin.headers).json
    assert [e["type"] for e in events] == ["submitted", "started", "retrying"]
    assert events[0]["actor"] == admin.username and events[1]["actor"] == "scheduler"
    assert "segfault" in events[2]["message"] and events[2]["actor"] == admin.username
    assert all(e["at"] for e in events)


def test_a_dependency_ending_requests_passes_where_dependents_wait(client, org, cluster, fleet, redis_client):
    organization, admin = org
    other = fleet.cluster(organization, name="downstream")
    upstream = fleet.start(fleet.deployment(cluster, admin))
    fleet.deployment(other, admin, depends_on=[upstream.id])
    redis_client.delete(pending_key(other.id))
    act(client, upstream, admin, "complete")
    assert redis_client.exists(pending_key(other.id))


def test_another_organizations_deployment_is_404_like_a_missing_one(client, auth, org, cluster, fleet):
    deployment = fleet.deployment(cluster, org[1])
    _, outsider = auth.org("outsiders")
    theirs = client.get(f"/api/v1/deployments/{deployment.id}", headers=outsider.headers)
    missing = client.get(f"/api/v1/deployments/{uuid.uuid4()}", headers=outsider.headers)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json == missing.json


def test_the_pass_goes_on_the_queue_of_the_highest_priority_waiting(client, org, cluster, fleet, redis_client):
    fleet.deployment(cluster, org[1], priority=950)
    forget_pass_requests(redis_client)  # the pass that submission asked for: the next request must send one
    assert submit(client, cluster, org[1], priority=100).status_code == 202
    assert redis_client.llen("critical") == 1
    assert redis_client.llen("low") == 0
