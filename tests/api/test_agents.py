"""Agents over HTTP (RUNTIME.md): cluster runtimes, agent tokens, the sync (lease, reports, desired state),
two-phase cancel, logs, liveness, and deployments' command / env / grace_seconds / generation / runtime."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select, text

from shared.agents import service as agents
from shared.agents.models import AgentToken, ClusterAgent
from shared.clusters.models import Cluster, ClusterEvent
from shared.deployments.models import Deployment, DeploymentEvent

SYNC = "/api/v1/agent/sync"


@pytest.fixture
def org(auth):
    return auth.org()


@pytest.fixture
def cluster(fleet, org):
    return fleet.cluster(org[0], name="host-a", cpu=8, ram_gb=32, gpu=4, runtime="agent")


def create_token(client, cluster, admin, name="host-a"):
    response = client.post(f"/api/v1/clusters/{cluster.id}/agent-tokens", json={"name": name}, headers=admin.headers)
    assert response.status_code == 201, response.json
    return response.json


@pytest.fixture
def token(client, cluster, org):
    return create_token(client, cluster, org[1])["token"]


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def sync(client, token, reports=(), name="gpu-host-1"):
    body = {"agent": {"name": name, "driver": "process", "version": "0.1.0"}, "deployments": list(reports)}
    return client.post(SYNC, json=body, headers=bearer(token))


def report(deployment, state, generation=None, **fields):
    generation = deployment.generation if generation is None else generation
    return {"id": str(deployment.id), "generation": generation, "state": state, **fields}


def fresh(session, deployment):
    session.expire_all()
    return session.get(Deployment, deployment.id)


def fresh_cluster(session, cluster):
    return session.get(Cluster, cluster.id)


def cluster_json(client, cluster, identity):
    return client.get(f"/api/v1/clusters/{cluster.id}", headers=identity.headers).json


@pytest.fixture
def running(fleet, cluster, org):
    """A deployment started on the agent cluster: runtime `pending`, generation 1."""
    return fleet.start(
        fleet.deployment(cluster, org[1], cpu=2, ram_gb=4, gpu=1, command=["python", "train.py"], env={"SEED": "7"})
    )


# Cluster runtimes ------------------------------------------------------------------------------------------


def test_a_cluster_is_simulated_unless_told_and_shows_no_agent(client, org):
    response = client.post(
        f"/api/v1/organizations/{org[0].id}/clusters",
        json={"name": "sim", "cpu": 1, "ram_gb": 1, "gpu": 0},
        headers=org[1].headers,
    )
    assert response.status_code == 201
    assert response.json["runtime"] == "simulated" and response.json["agent"] is None


def test_an_agent_cluster_shows_its_agent_and_whether_it_is_live(client, session, cluster, org, token):
    assert cluster_json(client, cluster, org[1])["agent"] is None
    assert sync(client, token).status_code == 200
    agent = cluster_json(client, cluster, org[1])["agent"]
    assert agent["name"] == "gpu-host-1" and agent["driver"] == "process" and agent["version"] == "0.1.0"
    assert agent["live"] is True and agent["last_seen_at"]
    session.execute(text("UPDATE cluster_agents SET last_seen_at = now() - interval '31 seconds'"))
    session.commit()
    assert cluster_json(client, cluster, org[1])["agent"]["live"] is False
    listed = client.get(f"/api/v1/organizations/{org[0].id}/clusters", headers=org[1].headers).json
    assert listed[0]["agent"]["live"] is False


def test_an_unknown_runtime_is_422(client, org, cluster):
    response = client.patch(f"/api/v1/clusters/{cluster.id}", json={"runtime": "docker"}, headers=org[1].headers)
    assert response.status_code == 422 and "runtime" in response.json["errors"]["json"]


def test_the_runtime_changes_only_while_nothing_runs(client, org, cluster, running):
    path = f"/api/v1/clusters/{cluster.id}"
    refused = client.patch(path, json={"runtime": "simulated"}, headers=org[1].headers)
    assert refused.status_code == 409 and "1 running" in refused.json["message"]
    assert cluster_json(client, cluster, org[1])["runtime"] == "agent"
    other = client.post(
        f"/api/v1/organizations/{org[0].id}/clusters",
        json={"name": "idle", "cpu": 1, "ram_gb": 1, "gpu": 0},
        headers=org[1].headers,
    ).json
    changed = client.patch(f"/api/v1/clusters/{other['id']}", json={"runtime": "agent"}, headers=org[1].headers)
    assert changed.status_code == 200 and changed.json["runtime"] == "agent"


# Deployment fields -----------------------------------------------------------------------------------------


def submit(client, cluster, identity, **body):
    payload = {"name": "train", "image": "ghcr.io/acme/train:1.2", "cpu": 1, "ram_gb": 2, "gpu": 0, **body}
    return client.post(f"/api/v1/clusters/{cluster.id}/deployments", json=payload, headers=identity.headers)


def test_command_env_and_grace_are_stored_and_shown(client, org, cluster):
    response = submit(client, cluster, org[1], command=["sh", "-c", "echo hi"], env={"A_1": "x", "_B": ""})
    assert response.status_code == 202, response.json
    body = response.json
    assert body["command"] == ["sh", "-c", "echo hi"] and body["env"] == {"A_1": "x", "_B": ""}
    assert body["grace_seconds"] == 30 and body["generation"] == 0 and body["runtime"] is None
    default = submit(client, cluster, org[1], grace_seconds=0).json
    assert default["command"] is None and default["env"] == {} and default["grace_seconds"] == 0


@pytest.mark.parametrize(
    "field, value",
    [
        ("command", []),
        ("command", ["x"] * 65),
        ("command", "echo hi"),
        ("command", [1]),
        ("env", {"1A": "x"}),
        ("env", {"A-B": "x"}),
        ("env", {"A": 1}),
        ("env", {f"V{i}": "x" for i in range(65)}),
        ("env", {"BIG": "x" * 20000, "BIGGER": "y" * 13000}),
        ("env", ["A=1"]),
        ("grace_seconds", -1),
        ("grace_seconds", 3601),
        ("grace_seconds", 1.5),
        ("generation", 3),
        ("runtime", {"state": "running"}),
    ],
)
def test_invalid_command_env_or_grace_is_422_naming_the_field(client, org, cluster, session, field, value):
    response = submit(client, cluster, org[1], **{field: value})
    assert response.status_code == 422, response.json
    assert field in response.json["errors"]["json"]
    assert session.scalar(text("SELECT count(*) FROM deployments")) == 0


def test_run_seconds_is_refused_on_an_agent_cluster_saying_why(client, org, cluster):
    response = submit(client, cluster, org[1], run_seconds=10)
    assert response.status_code == 422
    assert "agent" in response.json["message"] and "run_seconds" in response.json["errors"]["json"]


def test_each_start_is_a_new_generation(fleet, session, cluster, org):
    deployment = fleet.start(fleet.deployment(cluster, org[1]))
    assert deployment.generation == 1 and deployment.runtime_state == "pending"
    from shared.clusters.accounting import lock_cluster
    from shared.deployments import transitions

    transitions.fail(session, lock_cluster(session, cluster.id), deployment, "test", "boom")
    session.commit()
    assert fleet.start(deployment).generation == 2


def test_a_simulated_cluster_shows_no_runtime_but_counts_generations(client, fleet, org):
    simulated = fleet.cluster(org[0], name="sim")
    deployment = fleet.start(fleet.deployment(simulated, org[1]))
    body = client.get(f"/api/v1/deployments/{deployment.id}", headers=org[1].headers).json
    assert body["generation"] == 1 and body["runtime"] is None


# Agent tokens ----------------------------------------------------------------------------------------------


def test_a_token_is_shown_once_and_stored_hashed(client, session, cluster, org):
    created = create_token(client, cluster, org[1], name="rack 1")
    assert set(created) == {"id", "name", "token", "created_at", "last_used_at"}
    assert created["token"].startswith("hva_") and len(created["token"]) >= 40
    assert created["last_used_at"] is None
    stored = session.execute(text("SELECT token_hash FROM agent_tokens")).scalar()
    assert created["token"] not in stored and len(stored) == 64
    listed = client.get(f"/api/v1/clusters/{cluster.id}/agent-tokens", headers=org[1].headers).json
    assert listed == [{k: created[k] for k in ("id", "name", "created_at", "last_used_at")}]


def test_a_sync_records_the_tokens_last_use(client, cluster, org, token):
    assert sync(client, token).status_code == 200
    listed = client.get(f"/api/v1/clusters/{cluster.id}/agent-tokens", headers=org[1].headers).json
    assert listed[0]["last_used_at"] is not None


def test_a_revoked_token_is_refused_at_once(client, cluster, org):
    created = create_token(client, cluster, org[1])
    assert sync(client, created["token"]).status_code == 200
    path = f"/api/v1/clusters/{cluster.id}/agent-tokens/{created['id']}"
    assert client.delete(path, headers=org[1].headers).status_code == 204
    refused = sync(client, created["token"])
    assert refused.status_code == 401 and "revoked" in refused.json["message"]
    assert client.delete(path, headers=org[1].headers).status_code == 404


def test_a_token_of_another_cluster_cannot_be_revoked_through_this_one(client, fleet, cluster, org):
    other = fleet.cluster(org[0], name="other", runtime="agent")
    created = create_token(client, other, org[1])
    path = f"/api/v1/clusters/{cluster.id}/agent-tokens/{created['id']}"
    assert client.delete(path, headers=org[1].headers).status_code == 404
    assert sync(client, created["token"]).status_code == 200


def test_an_empty_token_name_is_422(client, cluster, org):
    response = client.post(f"/api/v1/clusters/{cluster.id}/agent-tokens", json={"name": ""}, headers=org[1].headers)
    assert response.status_code == 422


def test_a_users_token_on_the_sync_and_an_agent_token_elsewhere_are_401(client, cluster, org, token):
    assert sync(client, org[1].access_token).status_code == 401
    assert client.post(SYNC, json={"agent": {}}).status_code == 401
    assert client.get(f"/api/v1/clusters/{cluster.id}", headers=bearer(token)).status_code == 401
    assert client.get("/api/v1/auth/me", headers=bearer(token)).status_code == 401


# The lease -------------------------------------------------------------------------------------------------


def test_a_simulated_cluster_has_nothing_for_an_agent(client, fleet, org):
    simulated = fleet.cluster(org[0], name="sim")
    refused = sync(client, create_token(client, simulated, org[1])["token"])
    assert refused.status_code == 409 and "simulated" in refused.json["message"]


def test_one_agent_holds_the_cluster_and_another_stands_by_until_the_lease_lapses(client, session, cluster, org, token):
    assert sync(client, token, name="first").status_code == 200
    second_token = create_token(client, cluster, org[1], name="spare")["token"]
    for other_token, name in ((second_token, "second"), (token, "second"), (second_token, "first")):
        held = sync(client, other_token, name=name)
        assert held.status_code == 409
        assert "first" in held.json["message"] and held.json["errors"]["holder"] == "first"
        assert 1 <= int(held.headers["Retry-After"]) <= 30
    assert sync(client, token, name="first").status_code == 200  # the holder renews
    session.execute(text("UPDATE cluster_agents SET last_seen_at = now() - interval '31 seconds'"))
    session.commit()
    assert sync(client, second_token, name="second").status_code == 200
    assert sync(client, token, name="first").status_code == 409
    events = session.query(ClusterEvent).filter_by(cluster_id=cluster.id, type="agent_took_over").all()
    assert any("second took over from agent first" in event.message for event in events)


# Reports and the desired state -----------------------------------------------------------------------------


def test_the_answer_lists_the_whole_set_to_run(client, cluster, token, running):
    body = sync(client, token).json
    assert body["cluster_id"] == str(cluster.id)
    assert body["sync_seconds"] == 2 and body["lease_seconds"] == 30
    assert 0 < body["fence_seconds"] < 300 - 30
    assert body["stop"] == []
    assert body["run"] == [
        {
            "id": str(running.id),
            "generation": 1,
            "state": "pending",
            "name": running.name,
            "image": running.image,
            "command": ["python", "train.py"],
            "env": {"SEED": "7"},
            "resources": {"cpu": 2, "ram_gb": 4, "gpu": 1},
            "grace_seconds": 30,
        }
    ]


def test_a_running_report_marks_the_run_running_once(client, session, token, running, org):
    assert sync(client, token, [report(running, "running", at="2026-11-23T10:00:00Z")]).json["run"][0]["state"] == (
        "running"
    )
    assert sync(client, token, [report(running, "running")]).status_code == 200
    deployment = fresh(session, running)
    assert deployment.runtime_state == "running" and deployment.runtime_agent == "gpu-host-1"
    events = session.query(DeploymentEvent).filter_by(deployment_id=running.id, type="running").all()
    assert len(events) == 1 and "gpu-host-1" in events[0].message
    runtime = client.get(f"/api/v1/deployments/{running.id}", headers=org[1].headers).json["runtime"]
    assert runtime["state"] == "running" and runtime["agent"] == "gpu-host-1"
    assert runtime["started_at"].startswith("2026-11-23T10:00:00")


def test_the_container_of_the_running_report_is_the_runtimes_container(client, session, token, running, org):
    container = "c0ffee" * 10 + "beef"  # a Docker container id: 64 hex digits
    assert sync(client, token, [report(running, "running", container=container)]).status_code == 200
    runtime = client.get(f"/api/v1/deployments/{running.id}", headers=org[1].headers).json["runtime"]
    assert (runtime["state"], runtime["container"]) == ("running", container)
    final = report(running, "exited", exit_code=0, container=container)
    assert sync(client, token, [final]).status_code == 200
    assert fresh(session, running).status == "completed" and fresh(session, running).runtime_container == container


def test_a_run_that_ended_before_it_was_reported_running_keeps_its_container(client, session, token, running):
    final = report(running, "exited", exit_code=3, container="abc123")
    assert sync(client, token, [final]).status_code == 200
    assert fresh(session, running).runtime_container == "abc123"


def test_exit_0_completes_frees_and_keeps_the_logs(client, session, cluster, token, running, org):
    final = report(running, "exited", exit_code=0, logs="epoch 1\nepoch 2\n")
    answer = sync(client, token, [final]).json
    assert answer["run"] == [] and answer["stop"] == []
    deployment = fresh(session, running)
    assert deployment.status == "completed" and deployment.runtime_exit_code == 0
    assert cluster_json(client, cluster, org[1])["allocated"] == {"cpu": 0, "ram_gb": 0, "gpu": 0}
    assert sync(client, token, [final]).status_code == 200  # repeated: changes nothing
    assert fresh(session, running).version == deployment.version
    logs = client.get(f"/api/v1/deployments/{running.id}/logs", headers=org[1].headers).json
    assert logs == {"generation": 1, "logs": "epoch 1\nepoch 2\n", "truncated": False}


def test_a_non_zero_exit_is_a_failed_run_retried_with_the_code_in_the_reason(client, session, cluster, token, running):
    sync(client, token, [report(running, "exited", exit_code=3, message="out of memory")])
    deployment = fresh(session, running)
    assert deployment.status == "queued" and "exit code 3" in deployment.reason and "out of memory" in deployment.reason
    assert deployment.runtime_exit_code == 3 and deployment.runtime_message == "out of memory"
    assert sync(client, token, [report(running, "exited", exit_code=3, generation=1)]).json["run"] == []


def test_an_exit_without_a_code_is_a_failed_run(client, session, token, running):
    sync(client, token, [report(running, "exited")])
    deployment = fresh(session, running)
    assert deployment.status == "queued" and "no exit code" in deployment.reason


def test_a_failed_run_without_retries_left_fails_with_the_agents_message(client, session, fleet, cluster, token, org):
    deployment = fleet.start(fleet.deployment(cluster, org[1], max_retries=0))
    sync(client, token, [report(deployment, "failed", message="image not found")])
    deployment = fresh(session, deployment)
    assert deployment.status == "failed" and "image not found" in deployment.reason


def test_a_report_of_a_stale_generation_changes_nothing(client, session, token, running):
    before = fresh(session, running).version
    for generation in (0, 2, 99):
        response = sync(client, token, [report(running, "exited", exit_code=1, generation=generation)])
        assert response.status_code == (422 if generation == 0 else 200)
    deployment = fresh(session, running)
    assert deployment.status == "running" and deployment.version == before


def test_an_unknown_or_foreign_deployment_is_ignored_and_the_other_reports_apply(
    client, session, fleet, org, token, running, auth
):
    other_org, other_admin = auth.org("theirs")
    theirs = fleet.start(fleet.deployment(fleet.cluster(other_org, runtime="agent"), other_admin))
    reports = [
        {"id": str(uuid.uuid4()), "generation": 1, "state": "exited", "exit_code": 0},
        report(theirs, "exited", exit_code=0),
        report(running, "running"),
    ]
    assert sync(client, token, reports).status_code == 200
    assert fresh(session, theirs).status == "running"
    assert fresh(session, running).runtime_state == "running"


def test_users_cannot_complete_or_fail_a_deployment_of_an_agent_cluster(client, org, running):
    for action in ("complete", "fail"):
        response = client.post(f"/api/v1/deployments/{running.id}/{action}", headers=org[1].headers)
        assert response.status_code == 409 and "process exits" in response.json["message"]


def test_cancelling_a_running_deployment_stops_it_first(client, session, cluster, token, running, org):
    sync(client, token, [report(running, "running")])
    path = f"/api/v1/deployments/{running.id}/cancel"
    cancelled = client.post(path, headers=org[1].headers)
    assert cancelled.status_code == 200
    assert cancelled.json["status"] == "running" and cancelled.json["runtime"]["state"] == "stopping"
    assert client.post(path, headers=org[1].headers).status_code == 200  # again: still stopping, no new event
    answer = sync(client, token, [report(running, "running")]).json
    assert answer["run"] == []
    assert answer["stop"] == [
        {"id": str(running.id), "generation": 1, "grace_seconds": 30, "reason": f"Cancelled by {org[1].username}."}
    ]
    assert cluster_json(client, cluster, org[1])["allocated"]["gpu"] == 1  # held until the process stopped
    sync(client, token, [report(running, "stopped", logs="bye")])
    deployment = fresh(session, running)
    assert deployment.status == "cancelled" and deployment.reason == f"Cancelled by {org[1].username}."
    assert cluster_json(client, cluster, org[1])["allocated"]["gpu"] == 0
    events = [e.type for e in session.query(DeploymentEvent).filter_by(deployment_id=running.id)]
    assert events.count("stopping") == 1 and events[-1] == "cancelled"


def test_a_queued_deployment_of_an_agent_cluster_is_cancelled_at_once(client, fleet, cluster, org):
    deployment = fleet.deployment(cluster, org[1])
    response = client.post(f"/api/v1/deployments/{deployment.id}/cancel", headers=org[1].headers)
    assert response.status_code == 200 and response.json["status"] == "cancelled"


def test_a_preempted_run_that_stopped_is_queued_again_with_its_room_freed(client, session, cluster, token, running):
    from shared.clusters.accounting import lock_cluster
    from shared.deployments import transitions
    from shared.deployments.models import StopIntent

    lock_cluster(session, cluster.id)
    deployment = fresh(session, running)
    transitions.request_stop(session, deployment, StopIntent.PREEMPT, "Preempted by urgent (priority 900).", "test")
    session.commit()
    assert sync(client, token).json["stop"][0]["reason"] == "Preempted by urgent (priority 900)."
    sync(client, token, [report(running, "exited", exit_code=143)])
    deployment = fresh(session, running)
    assert deployment.status == "queued" and deployment.preemptions == 1 and deployment.resumes_preempted
    assert session.scalar(text("SELECT gpu_allocated FROM clusters")) == 0


def test_a_cancel_overrides_a_preemption_in_progress(client, session, cluster, token, running, org):
    from shared.clusters.accounting import lock_cluster
    from shared.deployments import transitions
    from shared.deployments.models import StopIntent

    lock_cluster(session, cluster.id)
    deployment = fresh(session, running)
    transitions.request_stop(session, deployment, StopIntent.PREEMPT, "Preempted by urgent.", "test")
    session.commit()
    assert client.post(f"/api/v1/deployments/{running.id}/cancel", headers=org[1].headers).status_code == 200
    lock_cluster(session, cluster.id)
    assert not transitions.request_stop(session, fresh(session, running), StopIntent.PREEMPT, "again", "test")
    session.rollback()
    sync(client, token, [report(running, "stopped")])
    deployment = fresh(session, running)
    assert deployment.status == "cancelled" and deployment.preemptions == 0


def test_a_run_the_agent_stopped_unasked_is_a_failed_run(client, session, token, running):
    sync(client, token, [report(running, "stopped", message="the agent is shutting down")])
    deployment = fresh(session, running)
    assert deployment.status == "queued" and "shutting down" in deployment.reason


# Logs ------------------------------------------------------------------------------------------------------


def test_logs_are_empty_before_any_run_sent_them(client, org, running):
    logs = client.get(f"/api/v1/deployments/{running.id}/logs", headers=org[1].headers).json
    assert logs == {"generation": 1, "logs": "", "truncated": False}


def test_logs_longer_than_64_kib_keep_their_tail(client, token, running, org):
    output = "a" * 100_000 + "THE END"
    assert sync(client, token, [report(running, "exited", exit_code=0, logs=output)]).status_code == 200
    logs = client.get(f"/api/v1/deployments/{running.id}/logs", headers=org[1].headers).json
    assert logs["truncated"] is True and logs["logs"].endswith("THE END") and len(logs["logs"]) == 64 * 1024


def test_a_sync_may_carry_more_than_a_mebibyte_of_final_output(client, fleet, cluster, org, token):
    runs = [fleet.start(fleet.deployment(cluster, org[1], cpu=0.1, ram_gb=0.1)) for _ in range(20)]
    reports = [report(run, "exited", exit_code=0, logs="x" * 60_000) for run in runs]
    assert sync(client, token, reports).status_code == 200


def test_a_nul_in_the_output_is_kept_as_a_replacement_character(client, token, running, org):
    assert sync(client, token, [report(running, "exited", exit_code=0, logs="a\x00b")]).status_code == 200
    logs = client.get(f"/api/v1/deployments/{running.id}/logs", headers=org[1].headers).json
    assert logs["logs"] == "a\ufffdb"


# Bad bodies ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"agent": {"name": "x", "driver": "process"}},
        {"agent": {"name": "", "driver": "process", "version": "1"}},
        {"agent": {"name": "x", "driver": "process", "version": "1"}, "deployments": {}},
        {"agent": {"name": "x", "driver": "process", "version": "1"}, "deployments": [{"id": "nope"}]},
        {"agent": {"name": "x", "driver": "process", "version": "1"}, "unknown": 1},
    ],
)
def test_a_malformed_sync_is_422_and_changes_nothing(client, session, token, body):
    response = client.post(SYNC, json=body, headers=bearer(token))
    assert response.status_code == 422, response.json
    assert session.scalar(text("SELECT count(*) FROM cluster_agents")) == 0


@pytest.mark.parametrize(
    "fields",
    [
        {"state": "vanished"},
        {"state": "running", "generation": "1"},
        {"state": "running", "generation": True},
        {"state": "exited", "exit_code": 1.5},
        {"state": "exited", "exit_code": 2**40},
        {"state": "running", "generation": 2**40},
        {"state": "running", "at": "yesterday"},
        {"state": "running", "logs": 5},
        {"state": "running", "container": 5},
        {"state": "running", "container": ""},
        {"state": "running", "container": "c" * 256},
    ],
)
def test_a_malformed_report_is_422_and_applies_nothing(client, session, token, running, fields):
    good = report(running, "exited", exit_code=0)
    response = sync(client, token, [good, {**report(running, "running"), **fields}])
    assert response.status_code == 422, response.json
    assert fresh(session, running).status == "running"


def test_more_reports_than_the_bound_is_422(client, token, running, session):
    reports = [report(running, "running")] * 1001
    response = sync(client, token, reports)
    assert response.status_code == 422 and "deployments" in response.json["errors"]["json"]
    assert fresh(session, running).runtime_state == "pending"


# Liveness for the scheduler --------------------------------------------------------------------------------


def test_admissions_pause_on_an_agent_cluster_without_a_live_agent(app, client, session, fleet, cluster, org, token):
    with app.app_context():
        simulated = fleet.cluster(org[0], name="sim")
        assert agents.admissions_paused_reason(session, simulated) is None
        assert "No agent has synced" in agents.admissions_paused_reason(session, cluster)
        sync(client, token)
        assert agents.admissions_paused_reason(session, cluster) is None
        session.execute(text("UPDATE cluster_agents SET last_seen_at = '2026-01-01 12:00:03+00'"))
        session.commit()
        reason = agents.admissions_paused_reason(session, cluster)
        assert reason.startswith("No live agent since 2026-01-01 12:00:33 UTC") and "gpu-host-1" in reason
        assert agents.agent_status(session=session, cluster=cluster).live is False


def test_fence_seconds_leave_the_largest_grace_and_some_slack_before_the_lost_threshold(app):
    with app.app_context():
        assert agents.fence_seconds(30) == 300 - 30 - 2 * 2 - agents.FENCE_SLACK_SECONDS
        assert agents.fence_seconds(3600) == 1  # never zero: fencing early is safe


# Lost agents -----------------------------------------------------------------------------------------------


def _stop(session, cluster, deployment, intent, stop_for=None):
    from shared.clusters.accounting import lock_cluster
    from shared.deployments import transitions

    lock_cluster(session, cluster.id)
    transitions.request_stop(session, fresh(session, deployment), intent, "Stop it.", "test", stop_for=stop_for)
    session.commit()


def test_a_lost_agents_runs_are_requeued_cancelled_or_preempted_as_their_stops_said(
    client, session, fleet, cluster, org, token
):
    from shared.deployments.models import StopIntent

    plain, cancelling, preempted = (fleet.start(fleet.deployment(cluster, org[1], gpu=1)) for _ in range(3))
    beneficiary = fleet.deployment(cluster, org[1], gpu=4, priority=900)
    assert sync(client, token).status_code == 200
    _stop(session, cluster, cancelling, StopIntent.CANCEL)
    _stop(session, cluster, preempted, StopIntent.PREEMPT, stop_for=beneficiary.id)
    assert agents.requeue_lost(session, cluster.id) == 0  # it synced just now: not lost
    session.execute(text("UPDATE cluster_agents SET last_seen_at = now() - interval '301 seconds'"))
    session.commit()

    assert agents.requeue_lost(session, cluster.id) == 3
    requeued = fresh(session, plain)
    assert requeued.status == "queued" and requeued.reason == "Requeued: lost with agent gpu-host-1."
    assert requeued.attempts == 1 and requeued.resumes_preempted and requeued.preemptions == 0
    assert fresh(session, cancelling).status == "cancelled"
    stopped = fresh(session, preempted)
    assert stopped.status == "queued" and stopped.preemptions == 1
    assert session.scalar(text("SELECT gpu_allocated FROM clusters")) == 0
    lost_event = session.query(DeploymentEvent).filter_by(deployment_id=plain.id, type="lost").one()
    assert "agent gpu-host-1" in lost_event.message
    [event] = session.query(ClusterEvent).filter_by(cluster_id=cluster.id, type="agent_lost").all()
    assert "2 requeued, 1 cancelled" in event.message
    assert agents.requeue_lost(session, cluster.id) == 0  # nothing left: no second event

    fleet.start(fresh(session, plain))
    assert fresh(session, plain).generation == 2 and fresh(session, plain).attempts == 1  # resumed, new run


def test_a_takeover_leaves_the_previous_holders_runs_to_it_until_it_is_lost(
    client, session, fleet, cluster, org, token
):
    handed, reported = (fleet.start(fleet.deployment(cluster, org[1], gpu=1)) for _ in range(2))
    assert len(sync(client, token, name="first").json["run"]) == 2  # both handed out as pending
    assert sync(client, token, [report(reported, "running")], name="first").status_code == 200
    never_handed = fleet.start(fleet.deployment(cluster, org[1], gpu=1))  # no answer listed it
    session.execute(text("UPDATE cluster_agents SET last_seen_at = now() - interval '31 seconds'"))
    session.commit()

    second_token = create_token(client, cluster, org[1], name="spare")["token"]
    claims = [report(reported, "failed", message="lost by the agent"), report(handed, "stopped")]
    answer = sync(client, second_token, claims, name="second").json
    assert [(item["id"], item["state"]) for item in answer["run"]] == [(str(never_handed.id), "pending")]
    assert answer["stop"] == []
    for deployment, state in ((reported, "running"), (handed, "pending")):  # the claims changed nothing
        still = fresh(session, deployment)
        assert (still.status, still.runtime_state, still.generation, still.attempts) == ("running", state, 1, 1)
    assert fresh(session, reported).runtime_agent == "first"
    assert sync(client, token, name="first").status_code == 409
    assert agents.requeue_lost(session, cluster.id) == 0  # first is silent, not lost yet

    session.execute(text("UPDATE cluster_agents SET previous_last_seen_at = now() - interval '301 seconds'"))
    session.commit()
    assert agents.requeue_lost(session, cluster.id) == 2
    for deployment in (handed, reported):
        requeued = fresh(session, deployment)
        assert requeued.status == "queued" and requeued.reason == "Requeued: lost with agent first."
    assert fresh(session, never_handed).status == "running"
    [event] = session.query(ClusterEvent).filter_by(cluster_id=cluster.id, type="agent_lost").all()
    assert "Agent first silent since" in event.message
    assert agents.requeue_lost(session, cluster.id) == 0  # the previous holder is gone from the books

    fleet.start(fresh(session, handed))  # a new generation: the holder's
    answer = sync(client, second_token, name="second").json
    assert {(item["id"], item["generation"], item["state"]) for item in answer["run"]} == {
        (str(never_handed.id), 1, "pending"),
        (str(handed.id), 2, "pending"),
    }


def test_a_sync_that_lost_the_lease_while_it_ran_hands_nothing_out(client, session, fleet, cluster, org, token):
    assert sync(client, token, name="first").status_code == 200
    first = session.scalar(select(ClusterAgent))
    session.expunge(first)  # the lease as the first agent's sync read it
    deployment = fleet.start(fleet.deployment(cluster, org[1], gpu=1))
    session.execute(text("UPDATE cluster_agents SET last_seen_at = now() - interval '31 seconds'"))
    session.commit()
    second_token = create_token(client, cluster, org[1], name="spare")["token"]
    assert sync(client, second_token, name="second").json["run"][0]["id"] == str(deployment.id)
    listed_at = session.scalar(text("SELECT listed_at FROM cluster_agents"))
    assert listed_at >= deployment.started_at  # handed out: a later takeover would leave it to "second"

    # The first agent's sync, slow, reaches its answer only now: it must not hand the run out too.
    token_row = session.scalar(select(AgentToken).where(AgentToken.id == first.token_id))
    with pytest.raises(agents.LeaseHeld, match="held by agent second"):
        agents._record_hand_out(
            session,
            fresh_cluster(session, cluster),
            first,
            token_row,
            agents.AgentInfo("first", "process", "0.1.0"),
            deployment.started_at,
        )
