"""Per-tenant limits: organizations per user, clusters per organization, queued work, dependencies."""

import dataclasses
import threading
import uuid

import pytest
from sqlalchemy import func, select

from shared import config
from shared.clusters.models import ClusterQueue
from shared.deployments.models import Deployment


@pytest.fixture
def limits(monkeypatch, settings):
    """Lower some limits for the test (the in-process API reads them on every request)."""

    def lower(**values):
        monkeypatch.setattr(config, "_settings", dataclasses.replace(config.get_settings(), **values))

    return lower


def submit(client, cluster, identity, **body):
    payload = {"name": "train", "image": "ghcr.io/acme/train:1.2", "cpu": 1, "ram_gb": 1, "gpu": 0, **body}
    return client.post(f"/api/v1/clusters/{cluster.id}/deployments", json=payload, headers=identity.headers)


def queued_counter(session, cluster) -> int:
    session.expire_all()
    return session.get(ClusterQueue, cluster.id).queued


def queued_rows(session, cluster) -> int:
    return session.scalar(
        select(func.count()).where(Deployment.cluster_id == cluster.id, Deployment.status == "queued")
    )


def test_the_defaults_leave_room_for_real_use(settings):
    assert settings.max_queued_per_cluster >= 10_000 and settings.max_queued_per_organization >= 10_000
    assert settings.max_clusters_per_organization >= 10 and settings.max_organizations_per_user >= 5


def test_a_full_cluster_queue_is_429_naming_the_limit_until_work_drains(client, auth, fleet, session, limits):
    limits(max_queued_per_cluster=3)
    organization, admin = auth.org()
    cluster = fleet.cluster(organization)
    accepted = [submit(client, cluster, admin) for _ in range(3)]
    assert [r.status_code for r in accepted] == [202] * 3
    refused = submit(client, cluster, admin)
    assert refused.status_code == 429
    assert "MAX_QUEUED_PER_CLUSTER" in refused.json["message"] and "3" in refused.json["message"]
    assert refused.json["code"] == 429 and refused.headers["Retry-After"]
    assert queued_rows(session, cluster) == 3 == queued_counter(session, cluster)
    cancelled = client.post(f"/api/v1/deployments/{accepted[0].json['id']}/cancel", headers=admin.headers)
    assert cancelled.status_code == 200
    assert queued_counter(session, cluster) == 2
    assert submit(client, cluster, admin).status_code == 202


def test_the_organization_queue_limit_spans_its_clusters(client, auth, fleet, limits):
    limits(max_queued_per_organization=4)
    organization, admin = auth.org()
    first, second = fleet.cluster(organization), fleet.cluster(organization)
    for cluster in (first, second, first, second):
        assert submit(client, cluster, admin).status_code == 202
    refused = submit(client, first, admin)
    assert refused.status_code == 429
    assert "MAX_QUEUED_PER_ORGANIZATION" in refused.json["message"] and "4" in refused.json["message"]
    other_organization, other_admin = auth.org()
    assert submit(client, fleet.cluster(other_organization), other_admin).status_code == 202


def test_the_cluster_queue_limit_is_exact_under_concurrent_submissions(app, auth, fleet, session, limits):
    limits(max_queued_per_cluster=12)
    organization, admin = auth.org()
    cluster = fleet.cluster(organization)
    statuses = []

    def submit_some():
        with app.test_client() as own_client:
            statuses.extend(submit(own_client, cluster, admin).status_code for _ in range(5))

    threads = [threading.Thread(target=submit_some) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [202] * 12 + [429] * 18
    assert queued_rows(session, cluster) == 12 == queued_counter(session, cluster)


def test_clusters_per_organization_are_limited_with_409(client, auth, limits):
    limits(max_clusters_per_organization=2)
    organization, admin = auth.org()
    url = f"/api/v1/organizations/{organization.id}/clusters"
    for name in ("a", "b"):
        assert (
            client.post(url, json={"name": name, "cpu": 1, "ram_gb": 1, "gpu": 0}, headers=admin.headers).status_code
            == 201
        )
    refused = client.post(url, json={"name": "c", "cpu": 1, "ram_gb": 1, "gpu": 0}, headers=admin.headers)
    assert refused.status_code == 409
    assert "MAX_CLUSTERS_PER_ORGANIZATION = 2" in refused.json["message"]


def test_organizations_per_user_are_limited_with_409_and_joining_is_not(client, auth, limits):
    limits(max_organizations_per_user=2)
    user = auth.user()
    for name in ("one", "two"):
        assert client.post("/api/v1/organizations", json={"name": name}, headers=user.headers).status_code == 201
    refused = client.post("/api/v1/organizations", json={"name": "three"}, headers=user.headers)
    assert refused.status_code == 409
    assert "MAX_ORGANIZATIONS_PER_USER = 2" in refused.json["message"]
    other = auth.user()
    invite = client.post("/api/v1/organizations", json={"name": "theirs"}, headers=other.headers).json["invite_code"]
    joined = client.post("/api/v1/organizations/join", json={"invite_code": invite}, headers=user.headers)
    assert joined.status_code == 200


def test_dependencies_per_deployment_are_limited_with_422(client, auth, fleet, limits):
    limits(max_dependencies_per_deployment=2)
    organization, admin = auth.org()
    cluster = fleet.cluster(organization)
    dependencies = [str(fleet.deployment(cluster, admin).id) for _ in range(3)]
    assert submit(client, cluster, admin, depends_on=dependencies[:2]).status_code == 202
    refused = submit(client, cluster, admin, depends_on=dependencies)
    assert refused.status_code == 422
    assert "MAX_DEPENDENCIES_PER_DEPLOYMENT" in refused.json["message"] and "2" in refused.json["message"]
    assert "depends_on" in refused.json["errors"]["json"]


def test_the_default_dependency_limit_is_the_setting_not_the_schema(client, auth, fleet, limits):
    limits(max_dependencies_per_deployment=150)
    organization, admin = auth.org()
    cluster = fleet.cluster(organization)
    response = submit(client, cluster, admin, depends_on=[str(uuid.uuid4()) for _ in range(120)])
    assert response.status_code == 422 and "No deployment" in response.json["message"]


def test_the_spec_documents_each_limit_status(client):
    paths = client.get("/openapi.json").json["paths"]
    assert "429" in paths["/api/v1/clusters/{cluster_id}/deployments"]["post"]["responses"]
    assert "MAX_CLUSTERS_PER_ORGANIZATION" in str(paths["/api/v1/organizations/{org_id}/clusters"]["post"]["responses"])
    assert "MAX_ORGANIZATIONS_PER_USER" in str(paths["/api/v1/organizations"]["post"]["responses"]["409"])
