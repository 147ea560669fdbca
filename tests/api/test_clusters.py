"""Clusters over HTTP (API.md "Clusters")."""

import json
import uuid

import pytest

from shared.scheduling.requests import pending_key


@pytest.fixture
def org(auth):
    return auth.org()


def create(client, organization, admin, **body):
    payload = {"name": "gpu-a", "cpu": 8, "ram_gb": 32, "gpu": 4, **body}
    return client.post(f"/api/v1/organizations/{organization.id}/clusters", json=payload, headers=admin.headers)


def test_create_returns_the_cluster_with_its_books(client, org):
    organization, admin = org
    response = create(client, organization, admin, cpu=2.5, ram_gb=0.512)
    assert response.status_code == 201
    body = response.json
    assert body["organization_id"] == str(organization.id) and body["name"] == "gpu-a"
    assert body["capacity"] == {"cpu": 2.5, "ram_gb": 0.512, "gpu": 4}
    assert body["allocated"] == {"cpu": 0, "ram_gb": 0, "gpu": 0}
    assert body["available"] == body["capacity"]
    assert body["deployments"] == {"queued": 0, "running": 0, "completed": 0, "failed": 0, "cancelled": 0}


def test_names_are_unique_within_an_organization_only(client, auth, org):
    organization, admin = org
    assert create(client, organization, admin).status_code == 201
    duplicate = create(client, organization, admin)
    assert duplicate.status_code == 409 and "gpu-a" in duplicate.json["message"]
    other, other_admin = auth.org("other")
    assert create(client, other, other_admin).status_code == 201


@pytest.mark.parametrize(
    "field, value",
    [
        ("cpu", -1),
        ("cpu", "4"),
        ("cpu", True),
        ("cpu", 0.0001),
        ("cpu", None),
        ("ram_gb", 1.2345),
        ("ram_gb", [1]),
        ("gpu", 1.5),
        ("gpu", "2"),
        ("gpu", False),
        ("gpu", -2),
        ("cpu", 10**12),
    ],
)
def test_quantities_must_be_exact_non_negative_numbers(client, org, field, value):
    organization, admin = org
    response = create(client, organization, admin, **{field: value})
    assert response.status_code == 422
    assert field in response.json["errors"]["json"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(client, org, literal):
    organization, admin = org
    raw = f'{{"name": "x", "cpu": {literal}, "ram_gb": 1, "gpu": 0}}'
    response = client.post(
        f"/api/v1/organizations/{organization.id}/clusters",
        data=raw,
        content_type="application/json",
        headers=admin.headers,
    )
    assert response.status_code in (400, 422)
    assert response.json["code"] == response.status_code


def test_server_owned_fields_cannot_be_set(client, org):
    organization, admin = org
    for field, value in (("allocated", {"gpu": 0}), ("id", str(uuid.uuid4())), ("organization_id", "x")):
        assert create(client, organization, admin, **{field: value}).status_code == 422


def test_three_tenths_of_a_core_fit_a_three_tenths_cluster(client, org, fleet, session):
    organization, admin = org
    cluster_id = create(client, organization, admin, cpu=0.3, ram_gb=1, gpu=0).json["id"]
    from shared.clusters.models import Cluster

    cluster = session.get(Cluster, uuid.UUID(cluster_id))
    for _ in range(3):
        fleet.start(fleet.deployment(cluster, admin, cpu=0.1, ram_gb=0))
    body = client.get(f"/api/v1/clusters/{cluster_id}", headers=admin.headers).json
    assert body["allocated"]["cpu"] == 0.3 and body["available"]["cpu"] == 0
    assert body["deployments"]["running"] == 3


def test_list_is_paginated(client, org):
    organization, admin = org
    for i in range(3):
        create(client, organization, admin, name=f"c{i}")
    response = client.get(f"/api/v1/organizations/{organization.id}/clusters?page=2&page_size=2", headers=admin.headers)
    assert response.status_code == 200
    assert [c["name"] for c in response.json] == ["c2"]
    assert json.loads(response.headers["X-Pagination"])["total"] == 3


def test_shrinking_below_the_allocation_is_409(client, org, fleet):
    organization, admin = org
    cluster = fleet.cluster(organization, gpu=4)
    fleet.start(fleet.deployment(cluster, admin, gpu=3))
    response = client.patch(f"/api/v1/clusters/{cluster.id}", json={"gpu": 2}, headers=admin.headers)
    assert response.status_code == 409 and "3 GPU allocated" in response.json["message"]
    assert client.patch(f"/api/v1/clusters/{cluster.id}", json={"gpu": 3}, headers=admin.headers).status_code == 200


def test_growing_requests_a_scheduling_pass(client, org, fleet, redis_client):
    organization, admin = org
    cluster = fleet.cluster(organization, gpu=1)
    redis_client.delete(pending_key(cluster.id))
    response = client.patch(f"/api/v1/clusters/{cluster.id}", json={"gpu": 2}, headers=admin.headers)
    assert response.status_code == 200 and response.json["capacity"]["gpu"] == 2
    assert redis_client.exists(pending_key(cluster.id))


def test_renaming_keeps_names_unique(client, org, fleet):
    organization, admin = org
    fleet.cluster(organization, name="taken")
    cluster = fleet.cluster(organization, name="mine")
    clash = client.patch(f"/api/v1/clusters/{cluster.id}", json={"name": "taken"}, headers=admin.headers)
    assert clash.status_code == 409
    renamed = client.patch(f"/api/v1/clusters/{cluster.id}", json={"name": "better"}, headers=admin.headers)
    assert renamed.json["name"] == "better"


def test_deleting_a_cluster_with_queued_or_running_work_is_409(client, org, fleet):
    organization, admin = org
    cluster = fleet.cluster(organization)
    fleet.deployment(cluster, admin)
    response = client.delete(f"/api/v1/clusters/{cluster.id}", headers=admin.headers)
    assert response.status_code == 409 and "queued or running" in response.json["message"]


def test_deleting_an_idle_cluster(client, org, fleet):
    organization, admin = org
    cluster = fleet.cluster(organization)
    assert client.delete(f"/api/v1/clusters/{cluster.id}", headers=admin.headers).status_code == 204
    assert client.get(f"/api/v1/clusters/{cluster.id}", headers=admin.headers).status_code == 404
