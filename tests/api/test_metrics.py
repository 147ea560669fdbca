"""`GET /metrics`: the database's figures at scrape time, requests counted by route template, the optional token."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families


def scrape(client, headers=None) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    response = client.get("/metrics", headers=headers or {})
    assert response.status_code == 200, response.data
    assert response.content_type.startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


def requests_counted(figures, method, endpoint, status) -> float:
    labels = (("endpoint", endpoint), ("method", method), ("status", status))
    return figures.get(("hypervisor_http_requests_total", labels), 0.0)


def test_deployments_and_cluster_figures_come_from_the_database_in_the_api_units(client, auth, fleet):
    organization, admin = auth.org("metrics")
    cluster = fleet.cluster(organization, cpu=8, ram_gb=32.5, gpu=4)
    idle = fleet.cluster(organization, cpu=1, ram_gb=1, gpu=0)
    fleet.start(fleet.deployment(cluster, admin, cpu=0.5, ram_gb=1.25, gpu=1))
    fleet.deployment(cluster, admin)
    fleet.deployment(cluster, admin)

    figures = scrape(client)

    def value(name, **labels):
        return figures[(name, tuple(sorted(labels.items())))]

    own = str(cluster.id)
    assert value("hypervisor_deployments", cluster_id=own, status="running") == 1
    assert value("hypervisor_deployments", cluster_id=own, status="queued") == 2
    assert value("hypervisor_deployments", cluster_id=own, status="failed") == 0
    assert value("hypervisor_deployments", cluster_id=str(idle.id), status="queued") == 0
    assert value("hypervisor_cluster_capacity", cluster_id=own, resource="cpu") == 8
    assert value("hypervisor_cluster_capacity", cluster_id=own, resource="ram_gb") == 32.5
    assert value("hypervisor_cluster_capacity", cluster_id=own, resource="gpu") == 4
    assert value("hypervisor_cluster_allocated", cluster_id=own, resource="cpu") == 0.5
    assert value("hypervisor_cluster_allocated", cluster_id=own, resource="ram_gb") == 1.25
    assert value("hypervisor_cluster_allocated", cluster_id=own, resource="gpu") == 1
    assert value("hypervisor_cluster_allocated", cluster_id=str(idle.id), resource="gpu") == 0


def test_requests_are_counted_by_route_template_never_by_raw_path(client, auth, fleet):
    organization, admin = auth.org("metrics")
    cluster = fleet.cluster(organization)
    template = "/api/v1/clusters/<uuid:cluster_id>"
    before = scrape(client)

    assert client.get(f"/api/v1/clusters/{cluster.id}", headers=admin.headers).status_code == 200
    assert client.get(f"/api/v1/clusters/{uuid.uuid4()}", headers=admin.headers).status_code == 404
    assert client.get(f"/no/such/route/{cluster.id}").status_code == 404

    response = client.get("/metrics")
    after = scrape(client)
    assert requests_counted(after, "GET", template, "200") - requests_counted(before, "GET", template, "200") == 1
    assert requests_counted(after, "GET", template, "404") - requests_counted(before, "GET", template, "404") == 1
    assert requests_counted(after, "GET", "unmatched", "404") - requests_counted(before, "GET", "unmatched", "404") == 1
    assert str(cluster.id) not in "".join(
        line for line in response.get_data(as_text=True).splitlines() if line.startswith("hypervisor_http_requests")
    )


def test_an_unknown_method_is_one_label_whatever_its_name(client):
    before = scrape(client)
    for method in ("BREW", "PROPFIND"):
        client.open("/healthz", method=method)
    after = scrape(client)
    assert (
        requests_counted(after, "other", "unmatched", "405") - requests_counted(before, "other", "unmatched", "405")
        == 2
    )


@pytest.fixture
def metrics_token(app, monkeypatch):
    token = "a-scrape-token-of-the-operator"
    settings = dataclasses.replace(app.extensions["settings"], metrics_token=token)
    monkeypatch.setitem(app.extensions, "settings", settings)
    return token


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", "Basic YTpi", "Bearer"],
    ids=["none", "wrong", "other-scheme", "empty"],
)
def test_with_metrics_token_set_a_scrape_without_it_is_a_json_401(client, metrics_token, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.json["code"] == 401 and response.json["message"]
    assert b"hypervisor_" not in response.data


def test_with_metrics_token_set_the_token_opens_the_metrics(client, metrics_token):
    assert scrape(client, {"Authorization": f"Bearer {metrics_token}"})
    assert scrape(client, {"Authorization": f"bearer {metrics_token}"})


def test_without_metrics_token_no_credential_is_needed(client, auth):
    _, admin = auth.org("metrics")
    assert scrape(client)
    assert scrape(client, admin.headers)
