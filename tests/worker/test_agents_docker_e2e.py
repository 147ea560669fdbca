"""Deployments run as containers: a real `python -m agent --driver docker` against the API over HTTP, with
scheduling passes in a real worker process, on a real Docker Engine (skipped without one unless
HV_REQUIRE_DOCKER=1; see tests/agent/docker_engine.py). Sync every second, lease 3 s."""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from datetime import datetime

import pytest

from agent.reconcile import NOT_WANTED_REASON
from tests.agent.docker_engine import IMAGE, EngineProxy, engine, remove_cluster_containers, restart_engine
from tests.worker import test_agents_e2e as e2e
from tests.worker.conftest import wait_for

# The process-driver e2e module's fixtures: the API served over HTTP, agents, the admin's helper.
short_agent_settings = e2e.short_agent_settings
served = e2e.served
agents = e2e.agents
api = e2e.api

TRAPS_TERM = "trap 'sleep 1; echo cleaned up; exit 0' TERM; echo ready; while true; do sleep 0.1; done"


@pytest.fixture
def docker():
    """The engine's client; every container of the clusters a test made is removed after it."""
    client = engine()
    clusters = []
    yield client, clusters
    for cluster_id in clusters:
        remove_cluster_containers(client, cluster_id)


@pytest.fixture
def host(api, docker, agents):
    """An agent cluster with a docker agent: (cluster id, start_agent). Agents stop before `docker` cleans up."""
    _, clusters = docker

    def make(cpu=4, ram_gb=8, gpu=0, arguments=()):
        cluster_id = api.agent_cluster(cpu=cpu, ram_gb=ram_gb, gpu=gpu)
        clusters.append(cluster_id)
        token = api.token(cluster_id)["token"]

        def start_agent(name="docker-host"):
            return agents(token, name, driver="docker", arguments=["--network", "none", *arguments])

        return cluster_id, start_agent

    return make


def submit(api, cluster_id, name, script, **extra):
    return api.submit(cluster_id, name, image=IMAGE, command=["sh", "-c", script], **extra)


def containers(cluster_id, **options):
    return engine().containers(filters={"label": f"hypervisor.cluster={cluster_id}"}, **options)


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_an_exit_0_completes_with_its_logs_and_the_container_is_removed(api, host):
    cluster, start_agent = host()
    agent = start_agent()
    deployment = submit(api, cluster, "hello", "echo hello from $GREETING", env={"GREETING": "a container"})
    done = api.wait_status(deployment, "completed", "failed", timeout=30)
    assert done["status"] == "completed", done
    assert done["runtime"]["exit_code"] == 0 and done["runtime"]["agent"] == "docker-host"
    logs = wait_for(lambda: api.logs(deployment), lambda body: body["logs"])
    assert logs == {"generation": 1, "logs": "hello from a container\n", "truncated": False}
    wait_for(lambda: containers(cluster, all=True), lambda found: found == [])
    assert containers(cluster, all=True) == []
    assert f"started {deployment} generation 1" in agent.log()


def test_a_non_zero_exit_and_an_out_of_memory_kill_fail_the_deployment_saying_why(api, host):
    cluster, start_agent = host()
    start_agent()
    crash = submit(api, cluster, "crash", "exit 3", max_retries=0)
    hungry = submit(api, cluster, "hungry", "x=$(head -c 50000000 /dev/zero | tr '\\0' a)", ram_gb=0.008, max_retries=0)
    failed = api.wait_status(crash, "failed", "completed", timeout=30)
    assert failed["status"] == "failed" and "exit code 3" in failed["reason"]
    killed = api.wait_status(hungry, "failed", "completed", timeout=30)
    assert killed["status"] == "failed", killed
    assert "out of memory" in killed["reason"] and killed["runtime"]["exit_code"] == 137


def test_cancel_stops_a_container_that_traps_term_and_waits_for_its_cleanup(api, host):
    cluster, start_agent = host()
    start_agent()
    deployment = submit(api, cluster, "trapper", TRAPS_TERM, cpu=2, grace_seconds=10)
    api.wait_runtime(deployment, "running", timeout=30)
    wait_for(lambda: containers(cluster), lambda found: len(found) == 1)
    assert api.act(deployment, "cancel").json["runtime"]["state"] == "stopping"
    assert api.cluster_state(cluster)["allocated"]["cpu"] == 2  # held until the container stopped
    cancelled = api.wait_status(deployment, "cancelled", timeout=30)
    assert cancelled["status"] == "cancelled"
    assert api.cluster_state(cluster)["allocated"]["cpu"] == 0
    assert "cleaned up" in wait_for(lambda: api.logs(deployment), lambda body: body["logs"])["logs"]


def test_preemption_stops_the_victims_container_before_the_beneficiary_starts(api, host):
    cluster, start_agent = host(cpu=2)
    start_agent()
    victim = submit(api, cluster, "low", TRAPS_TERM, cpu=2, priority=100, grace_seconds=10)
    api.wait_runtime(victim, "running", timeout=30)
    urgent = submit(api, cluster, "high", "sleep 30", cpu=2, priority=900, grace_seconds=1)
    requeued = api.wait_status(victim, "queued", timeout=30)
    assert requeued["preemptions"] == 1, requeued
    running = api.wait_runtime(urgent, "running", timeout=30)
    assert running["status"] == "running"
    found = containers(cluster)
    assert [container["Labels"]["hypervisor.deployment"] for container in found] == [urgent]


def test_a_restarted_agent_adopts_the_running_container_and_it_completes_once(api, host):
    cluster, start_agent = host()
    agent = start_agent()
    deployment = submit(api, cluster, "long", "echo begin; sleep 6; echo end", grace_seconds=5)
    running = api.wait_runtime(deployment, "running", timeout=30)
    (container,) = containers(cluster)
    assert agent.stop() == 0
    assert [found["Id"] for found in containers(cluster)] == [container["Id"]]  # it outlives its agent
    again = start_agent()
    wait_for(again.log, lambda text: f"adopted {deployment} generation 1" in text)
    done = api.wait_status(deployment, "completed", "failed", timeout=30)
    assert done["status"] == "completed" and done["generation"] == 1, done
    assert done["runtime"]["started_at"] == running["runtime"]["started_at"]
    assert f"adopted {deployment} generation 1 (container {container['Id'][:12]})" in again.log()
    assert again.log().count(f"started {deployment}") == 1  # by the first agent only
    assert [event["type"] for event in api.events(deployment)].count("running") == 1
    assert wait_for(lambda: api.logs(deployment), lambda body: body["logs"])["logs"] == "begin\nend\n"


def test_a_container_that_ended_while_no_agent_ran_is_reported_by_the_next(api, host):
    cluster, start_agent = host()
    agent = start_agent()
    deployment = submit(api, cluster, "short", "sleep 2; echo finished; exit 5", max_retries=0)
    api.wait_runtime(deployment, "running", timeout=30)
    assert agent.stop() == 0
    wait_for(lambda: containers(cluster, all=True), lambda found: found and found[0]["State"] == "exited")
    assert api.get(deployment)["status"] == "running"
    start_agent()
    failed = api.wait_status(deployment, "failed", "completed", timeout=30)
    assert failed["status"] == "failed" and "exit code 5" in failed["reason"], failed
    assert wait_for(lambda: api.logs(deployment), lambda body: body["logs"])["logs"] == "finished\n"
    wait_for(lambda: containers(cluster, all=True), lambda found: found == [])
    assert containers(cluster, all=True) == []


def test_a_stale_generations_container_is_stopped_and_removed(api, host, docker):
    client, _ = docker
    cluster, start_agent = host()
    gone = str(uuid.uuid4())  # a deployment the server no longer runs here
    stale = client.create_container(
        IMAGE,
        command=["sleep", "300"],
        name=f"hv-{gone}-1",
        labels={
            "hypervisor.deployment": gone,
            "hypervisor.generation": "1",
            "hypervisor.cluster": cluster,
            "hypervisor.grace": "1",
        },
        host_config=client.create_host_config(network_mode="none"),
    )
    client.start(stale["Id"])
    agent = start_agent()
    wait_for(lambda: containers(cluster, all=True), lambda found: found == [], timeout=30)
    assert containers(cluster, all=True) == []
    assert f"stopping {gone} generation 1 (grace 1 s): {NOT_WANTED_REASON}" in agent.log()


def test_an_image_that_does_not_exist_fails_with_the_engines_message(api, host):
    cluster, start_agent = host()
    start_agent()
    deployment = api.submit(cluster, "ghost", image="hv-test/does-not-exist:1", command=["true"], max_retries=0)
    failed = api.wait_status(deployment, "failed", "completed", timeout=60)
    assert failed["status"] == "failed"
    assert "cannot pull image 'hv-test/does-not-exist:1': " in failed["reason"], failed["reason"]


def test_a_run_asking_for_a_gpu_the_agent_does_not_have_fails_saying_so(api, host):
    cluster, start_agent = host(gpu=1)
    start_agent()  # no --gpus: its inventory is empty
    deployment = submit(api, cluster, "trainer", "true", gpu=1, max_retries=0)
    failed = api.wait_status(deployment, "failed", "completed", timeout=30)
    assert failed["status"] == "failed"
    assert "needs 1 GPU(s) but this agent has none" in failed["reason"], failed["reason"]


def test_twenty_containers_through_one_agent_never_exceed_the_cluster(api, host):
    cluster, start_agent = host(cpu=2)
    start_agent()
    deployments = [submit(api, cluster, f"short-{index}", "sleep 2", cpu=1) for index in range(20)]
    samples, done = [], threading.Event()

    def sample():
        while not done.is_set():
            samples.append(len(containers(cluster)))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        finished = [api.wait_status(deployment, "completed", "failed", timeout=120) for deployment in deployments]
    finally:
        done.set()
        sampler.join()
    assert [item["status"] for item in finished] == ["completed"] * 20
    assert max(samples) <= 2, samples
    assert 2 in samples  # it did run two at once
    # From admission (started_at) to the container's start as the agent reported it running; a container
    # that ended before the agent's next sync was never reported running and is not counted.
    latencies = [
        (moment(item["runtime"]["started_at"]) - moment(item["started_at"])).total_seconds()
        for item in finished
        if item["runtime"]["started_at"]
    ]
    assert len(latencies) >= 10
    print(
        f"\ncontainer start latency, admission -> running (s): min {min(latencies):.2f}, "
        f"median {statistics.median(latencies):.2f}, max {max(latencies):.2f} over {len(latencies)}"
    )


def test_the_runtime_shows_the_container_id_docker_ps_shows(api, host):
    cluster, start_agent = host()
    start_agent()
    deployment = submit(api, cluster, "shown", "sleep 30", grace_seconds=1)
    running = api.wait_runtime(deployment, "running", timeout=30)
    (container,) = containers(cluster)
    assert running["runtime"]["container"] == container["Id"] and len(container["Id"]) == 64


@pytest.mark.parametrize("moment", ["after create, before start", "just after start"])
def test_an_agent_killed_while_it_starts_a_container_leaves_one_container_and_one_run(
    api, host, monkeypatch, tmp_path, moment
):
    """SIGKILL through a proxy to the engine that sees the agent's start request: deterministic moments."""
    cluster, start_agent = host()
    victim = []

    def kill_at_start(request: bytes) -> bool:
        if not (victim and request.startswith(b"POST ") and b"/start HTTP/1.1" in request.split(b"\r\n", 1)[0]):
            return False
        agent = victim.pop()
        if moment == "after create, before start":
            agent.process.kill()  # SIGKILL; the engine never gets the start
            agent.process.wait()
            return True
        threading.Timer(0.05, agent.process.kill).start()  # the engine starts it; its agent dies meanwhile
        return False

    proxy = EngineProxy(str(tmp_path / "engine.sock"), kill_at_start)
    with monkeypatch.context() as patch:
        patch.setenv("DOCKER_HOST", proxy.address)  # this agent only
        first = start_agent()
    victim.append(first)
    deployment = submit(api, cluster, "once", "echo begin; sleep 3; echo end", grace_seconds=1)
    assert first.process.wait(30) == -9
    proxy.close()
    state = "created" if moment.startswith("after create") else "running"
    left = wait_for(lambda: containers(cluster, all=True), lambda found: [item["State"] for item in found] == [state])
    assert [item["State"] for item in left] == [state], left
    assert api.get(deployment)["runtime"]["state"] == "pending"  # never reported running
    samples, done = [], threading.Event()

    def sample():
        while not done.is_set():
            samples.append(len(containers(cluster, all=True)))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        again = start_agent()  # the same name, so the same state dir
        finished = api.wait_status(deployment, "completed", "failed", timeout=60)
    finally:
        done.set()
        sampler.join()
    assert finished["status"] == "completed" and finished["generation"] == 1, finished
    assert max(samples) == 1, samples  # never a second container for the run
    assert [event["type"] for event in api.events(deployment)].count("running") == 1
    assert wait_for(lambda: api.logs(deployment), lambda body: body["logs"])["logs"] == "begin\nend\n"
    if moment == "just after start":
        assert f"adopted {deployment} generation 1 (container {left[0]['Id'][:12]})" in again.log()
        assert finished["runtime"]["container"] == left[0]["Id"]
    else:
        assert f"started {deployment} generation 1" in again.log()
    wait_for(lambda: containers(cluster, all=True), lambda found: found == [])


def test_an_engine_restarted_mid_run_ends_the_run_which_is_retried_without_a_duplicate(api, host):
    cluster, start_agent = host()
    agent = start_agent()
    # Generation 1 runs until the engine stops it (its TERM exits 7); the retry, generation 2, completes.
    script = 'if [ "$HV_GENERATION" = 1 ]; then trap "exit 7" TERM; while true; do sleep 0.1; done; fi; echo retried'
    deployment = submit(api, cluster, "survivor", script, max_retries=1, grace_seconds=1)
    first = api.wait_runtime(deployment, "running", timeout=30)
    (container,) = containers(cluster)
    restart_engine()
    stopped = engine().inspect_container(container["Id"])["State"]
    assert (stopped["Status"], stopped["ExitCode"]) == ("exited", 7)  # no restart policy: it stays exited
    done = api.wait_status(deployment, "completed", "failed", timeout=60)
    assert done["status"] == "completed" and done["generation"] == 2, done
    assert first["runtime"]["container"] == container["Id"] != done["runtime"]["container"]
    reasons = [event["message"] for event in api.events(deployment)]
    assert any("exit code 7" in reason for reason in reasons), reasons
    assert agent.process.poll() is None  # the agent rode it out
    assert wait_for(lambda: api.logs(deployment), lambda body: body["logs"])["logs"] == "retried\n"
    wait_for(lambda: containers(cluster, all=True), lambda found: found == [])
