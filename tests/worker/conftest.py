"""Helpers for end-to-end tests: the API in-process, scheduling in real worker processes."""

import time

import pytest


def wait_for(fetch, condition, timeout=20.0, interval=0.05):
    """Poll `fetch()` until `condition(value)` holds; return the last value (the caller asserts on it)."""
    deadline = time.monotonic() + timeout
    value = fetch()
    while not condition(value) and time.monotonic() < deadline:
        time.sleep(interval)
        value = fetch()
    return value


class Api:
    """One admin of one organization, driving the HTTP API in-process."""

    def __init__(self, client, admin, organization):
        self.client, self.admin, self.organization = client, admin, organization

    def cluster(self, name="gpu", cpu=16, ram_gb=64, gpu=4):
        response = self.client.post(
            f"/api/v1/organizations/{self.organization.id}/clusters",
            json={"name": name, "cpu": cpu, "ram_gb": ram_gb, "gpu": gpu},
            headers=self.admin.headers,
        )
        assert response.status_code == 201, response.json
        return response.json["id"]

    def submit(self, cluster_id, name, priority=500, cpu=1, ram_gb=1, gpu=0, **extra):
        body = {
            "name": name,
            "image": "ghcr.io/acme/job:1",
            "cpu": cpu,
            "ram_gb": ram_gb,
            "gpu": gpu,
            "priority": priority,
            **extra,
        }
        response = self.client.post(f"/api/v1/clusters/{cluster_id}/deployments", json=body, headers=self.admin.headers)
        assert response.status_code == 202, response.json
        return response.json["id"]

    def get(self, deployment_id):
        return self.client.get(f"/api/v1/deployments/{deployment_id}", headers=self.admin.headers).json

    def events(self, deployment_id):
        return self.client.get(f"/api/v1/deployments/{deployment_id}/events", headers=self.admin.headers).json

    def act(self, deployment_id, action, **body):
        return self.client.post(
            f"/api/v1/deployments/{deployment_id}/{action}", json=body or None, headers=self.admin.headers
        )

    def cluster_state(self, cluster_id):
        return self.client.get(f"/api/v1/clusters/{cluster_id}", headers=self.admin.headers).json

    def wait_status(self, deployment_id, *statuses, timeout=20.0):
        return wait_for(lambda: self.get(deployment_id), lambda d: d["status"] in statuses, timeout)

    def wait_reason(self, deployment_id, fragment, timeout=20.0):
        return wait_for(lambda: self.get(deployment_id), lambda d: fragment in (d["reason"] or ""), timeout)


@pytest.fixture
def api(client, auth, worker):
    organization, admin = auth.org("e2e")
    return Api(client, admin, organization)
