"""The docker driver against a real Docker Engine (skipped without one unless HV_REQUIRE_DOCKER=1):
exits, OOM kills, limits, stops with a grace, pulls, GPUs by device id, adoption after a restart."""

from __future__ import annotations

import time
import uuid

import pytest

from agent.drivers.base import DriverUnavailable, RunSpec
from tests.agent.conftest import wait_until
from tests.agent.docker_engine import IMAGE, engine, remove_cluster_containers

# A shell that traps TERM: on a stop it cleans up for a second, then exits 0.
TRAPS_TERM = "trap 'sleep 1; echo cleaned up; exit 0' TERM; echo ready; while true; do sleep 0.1; done"
IGNORES_TERM = "trap '' TERM; echo ready; while true; do sleep 0.1; done"


@pytest.fixture
def cluster():
    """A cluster id of its own, and no container of it left after the test."""
    client = engine()
    cluster_id = f"test-{uuid.uuid4()}"
    yield cluster_id
    remove_cluster_containers(client, cluster_id)


def make_driver(cluster_id, gpus=(), network="none"):
    from agent.drivers.docker import DockerDriver

    driver = DockerDriver(gpus=list(gpus), network=network)
    driver.claim(cluster_id)
    return driver


@pytest.fixture
def driver(cluster):
    return make_driver(cluster)


def spec(command, deployment_id=None, generation=1, **extra) -> RunSpec:
    return RunSpec(deployment_id or f"d-{uuid.uuid4()}", generation, "job", extra.pop("image", IMAGE), command, **extra)


def shell(script: str) -> list[str]:
    return ["sh", "-c", script]


def finished(driver, run, timeout=20.0):
    return wait_until(lambda: driver.result(run), timeout, interval=0.1)


def container_of(run) -> dict:
    return engine().inspect_container(f"hv-{run.deployment_id}-{run.generation}")


def output(run) -> str:
    return engine().logs(container_of(run)["Id"]).decode()


def test_exit_0_with_its_output_env_and_labels(driver, cluster):
    run = driver.start(
        spec(shell("echo hello $GREETING $HV_GENERATION; echo oops >&2"), generation=3, env={"GREETING": "you"})
    )
    result = finished(driver, run)
    assert (result.state, result.exit_code, result.message) == ("exited", 0, None)
    # stdout and stderr reach the engine through two pipes: their order between them is not kept.
    assert sorted(result.logs.splitlines()) == ["hello you 3", "oops"]
    labels = container_of(run)["Config"]["Labels"]
    assert labels == {
        "hypervisor.deployment": run.deployment_id,
        "hypervisor.generation": "3",
        "hypervisor.cluster": cluster,
        "hypervisor.grace": "30",
        "hypervisor.gpus": "",
    }
    assert run.handle == "container " + container_of(run)["Id"][:12]
    assert run.container == container_of(run)["Id"]  # the full id: the server shows it as runtime.container


def test_a_non_zero_exit_is_reported_with_its_code(driver):
    result = finished(driver, driver.start(spec(shell("exit 3"))))
    assert (result.state, result.exit_code, result.message) == ("exited", 3, None)


def test_a_container_killed_by_the_kernel_at_its_memory_limit_is_out_of_memory(driver):
    allocate = shell("x=$(head -c 50000000 /dev/zero | tr '\\0' a); echo survived")
    result = finished(driver, driver.start(spec(allocate, ram_gb=8 / 1024)))
    assert (result.state, result.exit_code) == ("exited", 137)
    assert result.message == "out of memory: killed by the kernel at its memory limit of 8 MiB"
    assert "survived" not in result.logs


def test_cpu_and_memory_limits_are_the_request_and_the_network_the_agents(driver):
    run = driver.start(spec(["sleep", "30"], cpu=1.5, ram_gb=0.25))
    host = container_of(run)["HostConfig"]
    assert host["NanoCpus"] == 1_500_000_000
    assert host["Memory"] == host["MemorySwap"] == 256 * 2**20
    assert host["NetworkMode"] == "none"
    assert not host.get("DeviceRequests")


def test_gpus_are_requested_by_device_id_never_by_count():
    from agent.drivers.docker import host_options

    options = host_options(spec(None, gpu=2), ["2", "5"], None)
    (request,) = options["device_requests"]
    assert request["DeviceIDs"] == ["2", "5"] and request["Capabilities"] == [["gpu"]]
    assert not request.get("Count")


def test_stop_waits_for_a_container_that_traps_term_to_clean_up(driver):
    run = driver.start(spec(shell(TRAPS_TERM)))
    wait_until(lambda: "ready" in output(run))
    began = time.monotonic()
    driver.stop(run, grace_seconds=10, reason="preempted")
    result = finished(driver, run)
    assert time.monotonic() - began >= 1
    assert (result.state, result.exit_code, result.message) == ("stopped", 0, "preempted: exited with code 0")
    assert "cleaned up" in result.logs


def test_a_container_that_ignores_term_is_killed_after_the_grace(driver):
    run = driver.start(spec(shell(IGNORES_TERM)))
    wait_until(lambda: "ready" in output(run))
    began = time.monotonic()
    driver.stop(run, grace_seconds=2, reason="cancelled")
    time.sleep(1.2)
    assert driver.result(run) is None, "killed before its grace was over"
    result = finished(driver, run)
    assert 2 <= time.monotonic() - began < 8
    assert (result.state, result.exit_code, result.message) == ("stopped", 137, "cancelled: killed by SIGKILL")


def test_a_second_stop_with_no_grace_kills_now(driver):
    run = driver.start(spec(shell(IGNORES_TERM)))
    wait_until(lambda: "ready" in output(run))
    driver.stop(run, grace_seconds=60)
    time.sleep(0.5)
    began = time.monotonic()
    driver.stop(run, grace_seconds=0)
    assert finished(driver, run).exit_code == 137
    assert time.monotonic() - began < 10


def test_an_image_that_cannot_be_pulled_fails_with_the_engines_message(driver):
    missing = spec(["true"], image="hv-test/does-not-exist:1")
    run = driver.start(missing)
    assert run.preparing and driver.runs() == []
    run = wait_until(lambda: (again := driver.start(missing)) and not again.preparing and again, timeout=60)
    result = driver.result(run)
    assert result.state == "failed"
    assert result.message.startswith("cannot pull image 'hv-test/does-not-exist:1': ")
    assert len(result.message) > len("cannot pull image 'hv-test/does-not-exist:1': ")
    assert [listed.key for listed in driver.runs()] == [missing.key]


def test_a_command_that_cannot_be_executed_fails_and_leaves_no_container(driver, cluster):
    run = driver.start(spec(["no-such-program-hv"]))
    result = driver.result(run)
    assert result.state == "failed"
    assert result.message.startswith("cannot start its container: ")
    assert "no-such-program-hv" in result.message
    assert engine().containers(all=True, filters={"label": f"hypervisor.cluster={cluster}"}) == []


def test_a_run_asking_for_gpus_of_an_agent_without_any_fails_saying_so(driver, cluster):
    result = driver.result(driver.start(spec(["true"], gpu=1)))
    assert result.state == "failed"
    assert result.message == "needs 1 GPU(s) but this agent has none (start it with --gpus, e.g. --gpus 0,1)"
    assert engine().containers(all=True, filters={"label": f"hypervisor.cluster={cluster}"}) == []


def labelled_container(cluster, deployment_id, generation, command, gpus=""):
    """A container as an earlier agent left it (started)."""
    client = engine()
    created = client.create_container(
        IMAGE,
        command=command,
        name=f"hv-{deployment_id}-{generation}",
        labels={
            "hypervisor.deployment": deployment_id,
            "hypervisor.generation": str(generation),
            "hypervisor.cluster": cluster,
            "hypervisor.grace": "5",
            "hypervisor.gpus": gpus,
        },
        host_config=client.create_host_config(network_mode="none"),
    )
    client.start(created["Id"])
    return created["Id"]


def test_gpus_held_by_adopted_containers_are_never_given_twice(cluster):
    labelled_container(cluster, f"d-{uuid.uuid4()}", 1, ["sleep", "60"], gpus="0")
    driver = make_driver(cluster, gpus=["0"])
    (holder,) = driver.runs()
    result = driver.result(driver.start(spec(["true"], gpu=1)))
    assert result.state == "failed"
    assert result.message == "needs 1 GPU(s) but only 0 of this agent's 1 (--gpus 0) are free"
    driver.stop(holder, grace_seconds=0)
    finished(driver, holder)
    assert driver.gpus.free() == ["0"]  # an ended run gives its GPUs back


def test_a_new_driver_adopts_the_running_container_of_its_cluster_only(cluster):
    first = make_driver(cluster)
    run = first.start(spec(shell(TRAPS_TERM), grace_seconds=7))
    other = labelled_container(f"{cluster}-other", f"d-{uuid.uuid4()}", 1, ["sleep", "60"])
    try:
        second = make_driver(cluster)
        (adopted,) = second.runs()
        assert (adopted.key, adopted.handle, adopted.grace_seconds) == (run.key, run.handle, 7)
        assert adopted.container == run.container
        assert second.result(adopted) is None
        assert second.claim(cluster) == []  # once
        second.stop(adopted, 5, "cancelled")
        assert finished(second, adopted).message == "cancelled: exited with code 0"
    finally:
        remove_cluster_containers(engine(), f"{cluster}-other")
    assert other


def test_a_new_driver_reports_how_a_container_ended_while_no_agent_ran(cluster):
    first = make_driver(cluster)
    run = first.start(spec(shell("echo done; exit 4")))
    wait_until(lambda: container_of(run)["State"]["Status"] == "exited")
    second = make_driver(cluster)
    (adopted,) = second.runs()
    result = second.result(adopted)
    assert (result.state, result.exit_code, result.logs) == ("exited", 4, "done\n")
    second.remove(adopted)
    assert second.runs() == []
    assert engine().containers(all=True, filters={"label": f"hypervisor.cluster={cluster}"}) == []


def test_a_container_created_but_never_started_is_removed_not_adopted(cluster):
    client = engine()
    client.create_container(
        IMAGE,
        command=["true"],
        name=f"hv-{cluster}-created-1",
        labels={"hypervisor.deployment": "d-created", "hypervisor.generation": "1", "hypervisor.cluster": cluster},
    )
    assert make_driver(cluster).runs() == []
    assert client.containers(all=True, filters={"label": f"hypervisor.cluster={cluster}"}) == []


def test_a_container_an_agent_killed_mid_start_left_after_the_claim_is_replaced_not_failed(driver, cluster):
    # An agent SIGKILLed while it created the container: the engine finished the create after this driver's
    # claim had looked, so the name is taken by a container never started. Starting the run replaces it.
    wanted = spec(shell("echo replaced; sleep 30"))
    client = engine()
    left = client.create_container(
        IMAGE,
        command=["true"],
        name=f"hv-{wanted.deployment_id}-1",
        labels={
            "hypervisor.deployment": wanted.deployment_id,
            "hypervisor.generation": "1",
            "hypervisor.cluster": cluster,
        },
        host_config=client.create_host_config(network_mode="none"),
    )
    run = driver.start(wanted)
    assert driver.result(run) is None, driver.result(run)
    (found,) = client.containers(all=True, filters={"label": f"hypervisor.cluster={cluster}"})
    assert found["Id"] == run.container != left["Id"] and found["State"] == "running"


def test_starting_a_run_twice_starts_one_container(driver, cluster):
    wanted = spec(["sleep", "30"])
    assert driver.start(wanted) == driver.start(wanted)
    assert len(engine().containers(filters={"label": f"hypervisor.cluster={cluster}"})) == 1


def test_an_engine_that_does_not_answer_makes_the_driver_unavailable(monkeypatch):
    engine()
    from agent.drivers.docker import DockerDriver

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(DriverUnavailable, match="cannot reach the Docker engine"):
        DockerDriver(gpus=[])
