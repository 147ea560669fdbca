"""Two-phase preemption and agent liveness for real (RUNTIME.md): real `python -m agent --driver process`
processes against the API served over HTTP, passes in a real worker, the reconciler sent to it as beat does.

The commands write what they did to files (their pid and generation, when they started, when they exited on
SIGTERM), so the tests check the processes themselves, not only what the server believes. Thresholds are short:
sync 1 s, lease 3 s, lost 20 s (so that fence_seconds, lost - grace - two syncs - 5 s, stays above a sync).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from datetime import datetime

import pytest

from tests.conftest import FIGURES, WorkerProcess
from tests.worker.conftest import wait_for
from tests.worker.test_agents_e2e import AgentApi, agents, served  # noqa: F401 (fixtures)

SYNC, LEASE, LOST = 1, 3, 20


@pytest.fixture(scope="module")
def worker(celery_app):
    """A worker with the same agent thresholds as the served API (it decides liveness and loss)."""
    env = {"AGENT_SYNC_SECONDS": str(SYNC), "AGENT_LEASE_SECONDS": str(LEASE), "AGENT_LOST_SECONDS": str(LOST)}
    process = WorkerProcess("agents-liveness", env=env).start(celery_app)
    yield process
    process.stop()


@pytest.fixture
def short_agent_settings(monkeypatch, settings):
    import shared.config

    short = dataclasses.replace(settings, agent_sync_seconds=SYNC, agent_lease_seconds=LEASE, agent_lost_seconds=LOST)
    monkeypatch.setattr(shared.config, "_settings", short)


@pytest.fixture
def api(client, auth, worker, served):  # noqa: F811
    organization, admin = auth.org("agents-liveness")
    return AgentApi(client, admin, organization)


@pytest.fixture
def beat(celery_app, worker):
    """The reconciler every second, sent to the worker as Celery beat sends it."""
    stop = threading.Event()

    def tick():
        while not stop.wait(1):
            celery_app.send_task("maintenance.reconcile", queue="critical")

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(5)


def sh(script):
    return ["sh", "-c", script]


# Records "<generation> <pid>" of each run, then loops until told to stop.
PID_LOOP = 'echo "$HV_GENERATION $$" >> "$DIR/pids"; while :; do sleep 0.1; done'
# The same, taking 3 s to stop on SIGTERM: a stale run still stopping when its new generation is due.
SLOW_PID_LOOP = 'echo "$HV_GENERATION $$" >> "$DIR/pids"; trap "sleep 3; exit 0" TERM; while :; do sleep 0.1; done'


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (an ended child its agent has not reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # it ended while being read
        return False


def runs(directory) -> list[tuple[int, int]]:
    """(generation, pid) of every run the command recorded, in order."""
    path = directory / "pids"
    if not path.exists():
        return []
    return [tuple(int(word) for word in line.split()) for line in path.read_text().splitlines() if line.strip()]


class LiveRuns:
    """Samples the recorded runs every few milliseconds: the most that were alive at once."""

    def __init__(self, directory):
        self.directory, self.most = directory, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self):
        while not self._stop.wait(0.02):
            self.most = max(self.most, sum(alive(pid) for _, pid in runs(self.directory)))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.most


def event_at(events, kind) -> datetime:
    return datetime.fromisoformat(next(e["at"] for e in events if e["type"] == kind))


def test_a_preempted_run_stops_before_the_deployment_it_makes_room_for_starts(api, agents, tmp_path):  # noqa: F811
    cluster = api.agent_cluster(cpu=2)
    agents(api.token(cluster)["token"])
    trap = 'trap "sleep 1; date +%s.%N > $DIR/victim-exit; exit 0" TERM; while :; do sleep 0.1; done'
    victim = api.submit(
        cluster, "victim", priority=100, cpu=2, grace_seconds=5, command=sh(trap), env={"DIR": str(tmp_path)}
    )
    api.wait_runtime(victim, "running")
    urgent = api.submit(
        cluster,
        "urgent",
        priority=900,
        cpu=2,
        grace_seconds=1,
        command=sh("date +%s.%N > $DIR/urgent-start; sleep 60"),
        env={"DIR": str(tmp_path)},
    )
    stopping = api.wait_runtime(victim, "stopping")
    assert stopping["status"] == "running", stopping
    waiting = api.get(urgent)
    assert waiting["status"] == "queued" and waiting["reason"] == "waiting for 1 preempted deployment to stop"
    assert api.cluster_state(cluster)["allocated"]["cpu"] == 2  # the victim keeps its room while it stops

    running = api.wait_runtime(urgent, "running", timeout=30)
    assert running["status"] == "running", running
    victim_exit = float((tmp_path / "victim-exit").read_text())
    urgent_start = float((tmp_path / "urgent-start").read_text())
    assert urgent_start > victim_exit  # the beneficiary's process started after the victim's had exited

    requeued = api.get(victim)
    assert requeued["status"] == "queued" and requeued["preemptions"] == 1 and requeued["attempts"] == 1
    victim_events = api.events(victim)
    stop_event = next(e for e in victim_events if e["type"] == "stopping")
    assert f"urgent ({urgent})" in stop_event["message"]
    assert [e["type"] for e in victim_events][-2:] == ["stopping", "preempted"]
    handover = (event_at(api.events(urgent), "running") - event_at(victim_events, "preempted")).total_seconds()
    FIGURES.append(
        f"agent preemption handover: victim stopped (reported) -> beneficiary running {handover:.2f} s; "
        f"victim process exit -> beneficiary process start {urgent_start - victim_exit:.2f} s "
        f"(sync {SYNC} s, pass debounce 0.2 s)"
    )


def test_a_lower_priority_does_not_start_in_the_room_kept_for_a_nominee(api, agents, tmp_path):  # noqa: F811
    cluster = api.agent_cluster(cpu=4)
    agents(api.token(cluster)["token"])
    slow_stop = 'trap "sleep 3; exit 0" TERM; while :; do sleep 0.1; done'
    victim = api.submit(cluster, "victim", priority=100, cpu=2, grace_seconds=5, command=sh(slow_stop))
    api.wait_runtime(victim, "running")
    # Needs all 4: the victim's 2 once it stopped, and the 2 free now, kept for it meanwhile.
    nominee = api.submit(cluster, "nominee", priority=900, cpu=4, grace_seconds=1, command=sh("sleep 60"))
    api.wait_runtime(victim, "stopping")
    low = api.submit(cluster, "backfill", priority=50, cpu=2, grace_seconds=1, command=sh("sleep 60"))
    waiting = api.wait_reason(low, "needs")
    assert api.get(victim)["runtime"]["state"] == "stopping", "the low one's pass must run while the victim stops"
    assert waiting["status"] == "queued", waiting

    assert api.wait_runtime(nominee, "running", timeout=30)["status"] == "running"
    assert api.get(low)["status"] == "queued"
    assert "started" not in [e["type"] for e in api.events(low)]


def test_nothing_starts_without_a_live_agent_and_the_reason_says_so(api, agents):  # noqa: F811
    cluster = api.agent_cluster()
    token = api.token(cluster)["token"]
    first = api.submit(cluster, "early", grace_seconds=1, command=sh("echo ran"))
    waiting = api.wait_reason(first, "No agent has synced with this cluster yet")
    assert waiting["status"] == "queued", waiting

    agent = agents(token)  # its first sync makes the cluster live: a pass starts what waited
    assert api.wait_status(first, "completed", timeout=20)["status"] == "completed"

    assert agent.stop() == 0
    time.sleep(LEASE + 0.5)
    later = api.submit(cluster, "late", grace_seconds=1, command=sh("echo ran"))
    waiting = api.wait_reason(later, "No live agent since")
    assert waiting["status"] == "queued" and "agent host-1 last synced at" in waiting["reason"], waiting


def test_an_agent_killed_and_restarted_on_its_state_dir_reports_its_run_lost_and_it_retries(
    api,
    agents,  # noqa: F811
    tmp_path,
):
    cluster = api.agent_cluster()
    token = api.token(cluster)["token"]
    agent = agents(token, "host-1")
    deployment = api.submit(
        cluster, "looper", max_retries=2, grace_seconds=1, command=sh(PID_LOOP), env={"DIR": str(tmp_path)}
    )
    api.wait_runtime(deployment, "running")
    [(generation, pid)] = wait_for(lambda: runs(tmp_path), bool)
    assert generation == 1 and alive(pid)

    agent.process.kill()
    agent.process.wait(10)
    assert not wait_for(lambda: alive(pid), lambda live: not live, timeout=5)  # the run died with its agent

    agents(token, "host-1")  # the same state dir: nothing to adopt; the server thinks it runs
    second = wait_for(
        lambda: api.get(deployment),
        lambda d: d["generation"] == 2 and (d["runtime"] or {}).get("state") == "running",
        timeout=30,
    )
    assert second["attempts"] == 2, second  # a failed run: it counts
    retry = next(e for e in api.events(deployment) if e["type"] == "retrying")
    assert "lost by the agent" in retry["message"]
    recorded = wait_for(lambda: runs(tmp_path), lambda r: len(r) == 2)
    assert [g for g, _ in recorded] == [1, 2] and alive(recorded[1][1]) and not alive(pid)


def test_a_frozen_agent_is_lost_and_on_its_return_fences_its_stale_run_before_the_new_one(
    api,
    agents,  # noqa: F811
    beat,
    tmp_path,
):
    cluster = api.agent_cluster()
    agent = agents(api.token(cluster)["token"], "host-1")
    deployment = api.submit(cluster, "looper", grace_seconds=5, command=sh(SLOW_PID_LOOP), env={"DIR": str(tmp_path)})
    api.wait_runtime(deployment, "running")
    wait_for(lambda: runs(tmp_path), bool)
    watch = LiveRuns(tmp_path)

    agent.process.send_signal(signal.SIGSTOP)
    try:
        lost = wait_for(lambda: api.get(deployment), lambda d: d["status"] == "queued", timeout=LOST + 15)
        assert lost["status"] == "queued", lost
        assert lost["attempts"] == 1 and lost["preemptions"] == 0  # no attempt counted
        assert lost["reason"] == "Requeued: lost with agent host-1.", lost
        assert api.cluster_state(cluster)["allocated"]["cpu"] == 0
        event = next(e for e in api.events(deployment) if e["type"] == "lost")
        assert "agent host-1" in event["message"]
        # No live agent: it waits, and nothing else runs it meanwhile.
        assert "No live agent since" in api.wait_reason(deployment, "No live agent")["reason"]
    finally:
        agent.process.send_signal(signal.SIGCONT)

    again = wait_for(
        lambda: api.get(deployment),
        lambda d: d["generation"] == 2 and (d["runtime"] or {}).get("state") == "running",
        timeout=30,
    )
    assert again["status"] == "running" and again["attempts"] == 1, again  # resumed: no attempt counted
    recorded = wait_for(lambda: runs(tmp_path), lambda r: len(r) == 2)
    (first_generation, first_pid), (second_generation, second_pid) = recorded
    assert (first_generation, second_generation) == (1, 2)
    assert not alive(first_pid) and alive(second_pid)
    assert watch.stop() == 1  # never two live processes for the deployment
    assert "stopping all 1 run(s)" in agent.log()  # it fenced as it woke up


def test_a_standby_that_takes_over_leaves_the_silent_agents_run_alone_until_that_agent_is_lost(
    api,
    agents,  # noqa: F811
    beat,
    tmp_path,
):
    cluster = api.agent_cluster()
    old = agents(api.token(cluster, "old")["token"], "host-1")
    deployment = api.submit(cluster, "looper", grace_seconds=1, command=sh(PID_LOOP), env={"DIR": str(tmp_path)})
    api.wait_runtime(deployment, "running")
    [(_, first_pid)] = wait_for(lambda: runs(tmp_path), bool)
    watch = LiveRuns(tmp_path)

    # host-1 stops syncing (frozen; its run goes on), past its lease: host-2, another token, takes over.
    old.process.send_signal(signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        time.sleep(LEASE + 0.5)
        new = agents(api.token(cluster, "new")["token"], "host-2")
        wait_for(lambda: api.cluster_state(cluster)["agent"], lambda agent: agent and agent["name"] == "host-2")
        time.sleep(2 * SYNC + 1)  # a few syncs of host-2: it must not restart host-1's run
        assert [pid for _, pid in runs(tmp_path)] == [first_pid], "host-2 started a run host-1 still has"
        held = api.get(deployment)
        assert held["generation"] == 1 and held["runtime"]["agent"] == "host-1", held
    finally:
        old.process.send_signal(signal.SIGCONT)  # back before its fencing deadline: it finds the lease taken

    wait_for(old.log, lambda text: "held by agent host-2" in text)
    again = wait_for(
        lambda: api.get(deployment),
        lambda d: d["generation"] == 2 and (d["runtime"] or {}).get("state") == "running",
        timeout=LOST + 20,
    )
    assert again["runtime"]["agent"] == "host-2" and again["attempts"] == 1, again  # lost, not failed
    assert time.monotonic() - frozen_at > LOST - 2  # not before host-1 was lost
    event = next(e for e in api.events(deployment) if e["type"] == "lost")
    assert "agent host-1" in event["message"]
    recorded = wait_for(lambda: runs(tmp_path), lambda r: len(r) == 2)
    assert [g for g, _ in recorded] == [1, 2] and not alive(first_pid) and alive(recorded[1][1])
    assert watch.stop() == 1  # never two live processes for the deployment
    assert "stopping all 1 run(s)" in old.log()  # host-1 fenced its run, having no sync since the freeze
    assert "started " + deployment in new.log()
