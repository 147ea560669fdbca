"""Deployments really run: a real `python -m agent --driver process` against the API served over HTTP on a
loopback port, with scheduling passes in a real worker process (RUNTIME.md). Sync and lease are shortened
(AGENT_SYNC_SECONDS=1, AGENT_LEASE_SECONDS=3) so that each test takes a few seconds."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading

import pytest
from werkzeug.serving import make_server

from tests.conftest import ROOT
from tests.worker.conftest import Api, wait_for

PYTHON = sys.executable


@pytest.fixture
def short_agent_settings(monkeypatch, settings):
    """Agent thresholds short enough for tests, for the API served in this process."""
    import shared.config

    monkeypatch.setattr(
        shared.config, "_settings", dataclasses.replace(settings, agent_sync_seconds=1, agent_lease_seconds=3)
    )


@pytest.fixture
def served(app, clean, short_agent_settings):
    """The test app over real HTTP on a free loopback port: its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(10)


class AgentProcess:
    """`python -m agent --driver process` (or another driver) as an operator starts it, with a state dir of
    its own."""

    def __init__(self, url, token, name, state_dir, log_path, driver="process", arguments=()):
        self.name, self.log_path = name, log_path
        env = {**os.environ, "HV_AGENT_TOKEN": token, "LOG_LEVEL": "INFO"}
        command = [PYTHON, "-m", "agent", "--api", url, "--driver", driver, "--name", name, "--state-dir", state_dir]
        with open(log_path, "a") as log:
            self.process = subprocess.Popen(
                [*command, *arguments],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture
def agents(served, tmp_path):
    """Start agents against the served API; every one is stopped after the test."""
    started = []

    def start(token, name="host-1", driver="process", arguments=()):
        agent = AgentProcess(served, token, name, tmp_path / name, tmp_path / f"{name}.log", driver, arguments)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


class AgentApi(Api):
    """The e2e helper, plus agent clusters and their tokens."""

    def agent_cluster(self, name="host", cpu=4, ram_gb=8, gpu=0):
        response = self.client.post(
            f"/api/v1/organizations/{self.organization.id}/clusters",
            json={"name": name, "cpu": cpu, "ram_gb": ram_gb, "gpu": gpu, "runtime": "agent"},
            headers=self.admin.headers,
        )
        assert response.status_code == 201, response.json
        return response.json["id"]

    def token(self, cluster_id, name="host"):
        response = self.client.post(
            f"/api/v1/clusters/{cluster_id}/agent-tokens", json={"name": name}, headers=self.admin.headers
        )
        assert response.status_code == 201, response.json
        return response.json

    def logs(self, deployment_id):
        return self.client.get(f"/api/v1/deployments/{deployment_id}/logs", headers=self.admin.headers).json

    def wait_runtime(self, deployment_id, state, timeout=20.0):
        return wait_for(lambda: self.get(deployment_id), lambda d: (d["runtime"] or {}).get("state") == state, timeout)


@pytest.fixture
def api(client, auth, worker, served):
    organization, admin = auth.org("agents-e2e")
    return AgentApi(client, admin, organization)


def python(code):
    return [PYTHON, "-c", code]


def test_an_exit_0_completes_the_deployment_with_its_logs_and_env(api, agents):
    cluster = api.agent_cluster()
    agents(api.token(cluster)["token"])
    deployment = api.submit(
        cluster,
        "hello",
        command=python("import os; print('hello from', os.environ['GREETING'])"),
        env={"GREETING": "the agent"},
    )
    done = api.wait_status(deployment, "completed", "failed")
    assert done["status"] == "completed", done
    assert done["runtime"]["exit_code"] == 0 and done["runtime"]["agent"] == "host-1"
    logs = wait_for(lambda: api.logs(deployment), lambda body: body["logs"])
    assert logs == {"generation": 1, "logs": "hello from the agent\n", "truncated": False}
    assert api.cluster_state(cluster)["allocated"] == {"cpu": 0, "ram_gb": 0, "gpu": 0}


def test_a_non_zero_exit_is_retried_to_the_bound_with_the_code_in_the_reason(api, agents):
    cluster = api.agent_cluster()
    agents(api.token(cluster)["token"])
    deployment = api.submit(cluster, "crash", max_retries=1, command=python("import sys; sys.exit(3)"))
    failed = api.wait_status(deployment, "failed", "completed", timeout=30)
    assert failed["status"] == "failed", failed
    assert failed["attempts"] == 2 and failed["generation"] == 2
    assert "exit code 3" in failed["reason"]
    events = [event["type"] for event in api.events(deployment)]
    assert events.count("retrying") == 1 and events[-1] == "failed"


def test_cancelling_a_running_deployment_stops_its_process_first(api, agents):
    cluster = api.agent_cluster()
    agent = agents(api.token(cluster)["token"])
    deployment = api.submit(cluster, "sleeper", cpu=2, grace_seconds=1, command=python("import time; time.sleep(60)"))
    api.wait_runtime(deployment, "running")
    stopping = api.act(deployment, "cancel").json
    assert stopping["status"] == "running" and stopping["runtime"]["state"] == "stopping"
    assert api.cluster_state(cluster)["allocated"]["cpu"] == 2  # held until the process stopped
    cancelled = api.wait_status(deployment, "cancelled")
    assert cancelled["status"] == "cancelled"
    assert api.cluster_state(cluster)["allocated"]["cpu"] == 0
    assert "stopping " + deployment in agent.log()


def test_two_agents_on_one_cluster_one_runs_the_other_stands_by_and_takes_over(api, agents):
    cluster = api.agent_cluster()
    token = api.token(cluster)["token"]
    first = agents(token, "first")
    wait_for(lambda: api.cluster_state(cluster)["agent"], lambda agent: agent and agent["name"] == "first")
    second = agents(token, "second")
    wait_for(second.log, lambda text: "standing by" in text)
    assert "held by agent first" in second.log()
    deployment = api.submit(cluster, "sleeper", grace_seconds=1, command=python("import time; time.sleep(60)"))
    running = api.wait_runtime(deployment, "running")
    assert running["runtime"]["agent"] == "first"
    assert "started " + deployment not in second.log()

    assert first.stop() == 0  # its run ends with it, reported stopped: a failed run, requeued
    taken = wait_for(
        lambda: api.get(deployment),
        lambda d: d["generation"] == 2 and (d["runtime"] or {}).get("state") == "running",
        timeout=30,
    )
    assert taken["runtime"]["agent"] == "second", taken
    assert api.cluster_state(cluster)["agent"]["name"] == "second"


def test_an_agent_whose_token_is_revoked_mid_run_exits_3(api, agents):
    cluster = api.agent_cluster()
    created = api.token(cluster)
    agent = agents(created["token"])
    deployment = api.submit(cluster, "sleeper", grace_seconds=1, command=python("import time; time.sleep(60)"))
    api.wait_runtime(deployment, "running")
    revoked = api.client.delete(f"/api/v1/clusters/{cluster}/agent-tokens/{created['id']}", headers=api.admin.headers)
    assert revoked.status_code == 204
    assert agent.process.wait(20) == 3
    assert "refused the agent token" in agent.log()
