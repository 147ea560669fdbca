"""GET /organizations/{org_id}/deployments (API.md, "History and views across the organization"): every
cluster of the organization, newest first, filtered and paginated."""

import json
import uuid

import pytest

BODY = {"image": "ghcr.io/acme/train:1", "cpu": 1, "ram_gb": 1, "gpu": 0}


@pytest.fixture
def org(auth):
    return auth.org()


@pytest.fixture
def world(client, auth, fleet, org):
    """Two clusters, two submitters, five deployments (one cancelled), submitted in this order."""
    organization, admin = org
    developer = auth.member("developer", organization)
    first, second = fleet.cluster(organization, name="gpu-a"), fleet.cluster(organization, name="gpu-b")
    made = {}
    for name, cluster, who in [
        ("Prep-Data", first, admin),
        ("train-big", first, developer),
        ("train_small", second, admin),
        ("eval%50", second, developer),
        ("serve", second, admin),
    ]:
        response = client.post(
            f"/api/v1/clusters/{cluster.id}/deployments", json={**BODY, "name": name}, headers=who.headers
        )
        assert response.status_code == 202, response.json
        made[name] = response.json
    assert client.post(f"/api/v1/deployments/{made['serve']['id']}/cancel", headers=admin.headers).status_code == 200
    return organization, admin, developer, first, second, made


def names(client, organization, identity, query=""):
    response = client.get(f"/api/v1/organizations/{organization.id}/deployments{query}", headers=identity.headers)
    assert response.status_code == 200, response.json
    return [d["name"] for d in response.json]


def test_every_cluster_newest_first(client, auth, world):
    organization, *_ = world
    viewer = auth.member("viewer", organization)
    assert names(client, organization, viewer) == ["serve", "eval%50", "train_small", "train-big", "Prep-Data"]


def test_filters_combine(client, world):
    organization, admin, developer, first, second, _ = world
    assert names(client, organization, admin, "?status=cancelled") == ["serve"]
    assert names(client, organization, admin, f"?cluster_id={first.id}") == ["train-big", "Prep-Data"]
    assert names(client, organization, admin, f"?created_by={developer.id}") == ["eval%50", "train-big"]
    assert names(client, organization, admin, f"?created_by={admin.id}&cluster_id={second.id}&status=queued") == [
        "train_small"
    ]


def test_the_name_filter_is_a_case_insensitive_substring_with_no_wildcards(client, world):
    organization, admin, *_ = world
    assert names(client, organization, admin, "?name=TRAIN") == ["train_small", "train-big"]
    assert names(client, organization, admin, "?name=data") == ["Prep-Data"]
    assert names(client, organization, admin, "?name=n_s") == ["train_small"]  # "_" is no wildcard
    assert names(client, organization, admin, "?name=%25") == ["eval%50"]  # nor is "%"
    assert names(client, organization, admin, "?name=nothing-like-it") == []


def test_pages(client, world):
    organization, admin, *_ = world
    response = client.get(
        f"/api/v1/organizations/{organization.id}/deployments?page=2&page_size=2", headers=admin.headers
    )
    assert response.status_code == 200
    assert [d["name"] for d in response.json] == ["train_small", "train-big"]
    assert json.loads(response.headers["X-Pagination"])["total"] == 5


def test_another_organizations_cluster_or_user_filters_to_nothing(client, auth, fleet, world):
    organization, admin, *_ = world
    other_org, other_admin = auth.org("theirs")
    theirs = fleet.cluster(other_org, name="theirs")
    fleet.deployment(theirs, other_admin, name="secret")
    assert names(client, organization, admin, f"?cluster_id={theirs.id}") == []
    assert names(client, organization, admin, f"?created_by={other_admin.id}") == []
    assert "secret" not in names(client, organization, admin)


def test_another_organization_is_404(client, auth, world):
    organization, *_ = world
    _, stranger = auth.org("theirs")
    response = client.get(f"/api/v1/organizations/{organization.id}/deployments", headers=stranger.headers)
    assert response.status_code == 404
    missing = client.get(f"/api/v1/organizations/{uuid.uuid4()}/deployments", headers=stranger.headers)
    assert missing.status_code == 404 and missing.json == response.json


@pytest.mark.parametrize(
    "query, field",
    [
        ("status=sleeping", "status"),
        ("cluster_id=not-a-uuid", "cluster_id"),
        ("created_by=42", "created_by"),
        ("name=", "name"),
        ("page=0", "page"),
        ("page_size=100000", "page_size"),
    ],
)
def test_wrong_filters_are_422_naming_the_field(client, world, query, field):
    organization, admin, *_ = world
    response = client.get(f"/api/v1/organizations/{organization.id}/deployments?{query}", headers=admin.headers)
    assert response.status_code == 422, response.json
    assert field in response.json["errors"]["query"]
