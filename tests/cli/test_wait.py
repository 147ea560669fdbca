"""`hv submit --wait` follows a deployment through real scheduling passes (a worker process) until it runs."""

from __future__ import annotations

import json
import subprocess

from tests.cli.test_cli import api_json
from tests.conftest import ROOT
from tests.worker.conftest import wait_for


def submit_arguments(cluster_id, name, gpu):
    return ["submit", "--cluster", str(cluster_id), "--name", name, "--image", "busybox:1", "--cpu", "1",
            "--ram-gb", "1", "--gpu", str(gpu), "--wait"]  # fmt: skip


def test_submit_wait_follows_it_to_running(hv, auth, fleet, client, worker):
    organization, admin = auth.org()
    cluster = fleet.cluster(organization)
    hv.login(admin)
    result = hv(*submit_arguments(cluster.id, "quick", gpu=1), "--json")
    deployment = result.json()
    assert deployment["status"] == "running"
    assert "queued" in result.stderr and "running" in result.stderr  # the progress, off the JSON's way
    assert deployment == {**api_json(client, admin, f"/deployments/{deployment['id']}"), "reason": deployment["reason"]}


def test_submit_wait_shows_each_reason_while_it_waits_then_running(hv, auth, fleet, client, worker):
    organization, admin = auth.org()
    cluster = fleet.cluster(organization, gpu=4)
    blocker = fleet.start(fleet.deployment(cluster, admin, name="blocker", gpu=4))
    hv.login(admin)
    follower = subprocess.Popen(
        hv.command(*submit_arguments(cluster.id, "follower", gpu=2)),
        cwd=ROOT,
        env=hv.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def waiting():
            found = api_json(client, admin, f"/clusters/{cluster.id}/deployments", status="queued")
            return found[0] if found else None

        queued = wait_for(waiting, lambda deployment: deployment is not None and deployment["reason"])
        assert queued is not None and queued["reason"], "the pass never said why it waits"
        answer = client.post(f"/api/v1/deployments/{blocker.id}/complete", headers=admin.headers)
        assert answer.status_code == 200, answer.json
        stdout, stderr = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()
    assert follower.returncode == 0, stderr
    lines = stdout.splitlines()
    assert lines[0].startswith("Submitted follower")
    assert any("queued" in line and queued["reason"] in line for line in lines), stdout
    assert "running" in lines[-1], stdout
    assert api_json(client, admin, f"/deployments/{queued['id']}")["status"] == "running"


def test_submit_wait_exits_1_when_it_ends_without_running(hv, auth, fleet, client, worker):
    organization, admin = auth.org()
    cluster = fleet.cluster(organization, gpu=4)
    dependency = fleet.deployment(cluster, admin, name="never", gpu=4)
    fleet.start(fleet.deployment(cluster, admin, name="blocker", gpu=4))
    hv.login(admin)
    follower = subprocess.Popen(
        hv.command(*submit_arguments(cluster.id, "dependent", gpu=0), "--depends-on", str(dependency.id), "--json"),
        cwd=ROOT,
        env=hv.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        queued = wait_for(
            lambda: api_json(client, admin, f"/organizations/{organization.id}/clusters"),
            lambda clusters: clusters[0]["deployments"]["queued"] == 2,
        )
        assert queued[0]["deployments"]["queued"] == 2
        dependent = next(
            deployment
            for deployment in api_json(client, admin, f"/clusters/{cluster.id}/deployments")
            if deployment["name"] == "dependent"
        )
        assert client.post(f"/api/v1/deployments/{dependent['id']}/cancel", headers=admin.headers).status_code == 200
        stdout, stderr = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()
    assert follower.returncode == 1, stderr
    assert json.loads(stdout)["status"] == "cancelled"
