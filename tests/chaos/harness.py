"""Chaos: real workers, beat, PostgreSQL and Redis, and a seeded schedule of faults among them.

    python -m tests.chaos.harness            # brief (what `make test` runs)
    python -m tests.chaos.harness --long     # `make chaos`

It always runs on embedded servers of its own (under .hypervisor/chaos), whatever DATABASE_URL and
REDIS_URL say, because it restarts them. Three workers and one beat schedule a burst of deployments
(each completes by itself after run_seconds) while faults hit them in a seeded order: SIGKILL a worker
mid-pass, SIGSTOP one past its lock timeout and resume it, restart Redis, restart PostgreSQL, kill beat
and start it again. Beside them, an agent cluster served over HTTP with two real `python -m agent --driver
process` agents (one holds it, one stands by) runs real processes; agent faults SIGKILL an agent and start it
again, or SIGSTOP one past its lease (the other takes over) and resume it before its fencing deadline. A
sampler checks the books all along, and another the pid files the agent runs write: no deployment may ever
have two live processes. After each fault, a probe deployment measures how long until the system schedules
new work again; after a calm period every deployment must have finished. Prints the figures; exits 1 on any
violation, lost deployment, duplicate run or unsettled end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from devtools.services import die_with_parent

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / ".hypervisor" / "chaos"
LOCK_SECONDS = 3
FAULTS = ("kill_worker", "stop_worker", "restart_redis", "restart_postgres", "restart_beat", "kill_agent", "stop_agent")
# Agent thresholds: fence_seconds = lost - grace (1) - two syncs - 5 s = 8 s.
AGENT_SYNC, AGENT_LEASE, AGENT_LOST = 1, 3, 16
PIDS = STATE / "pids"
# Each run of an agent deployment records "<generation> <pid>" in a file named after its deployment.
RUN_SCRIPT = 'echo "$HV_GENERATION $$" >> "$PIDS/$HV_DEPLOYMENT_ID"; sleep "$SECONDS_TO_RUN"'


class Process:
    """A worker or beat process of its own session, so a fault can hit it and all its children."""

    def __init__(self, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        self.name, self.command = name, command
        self.log = open(STATE / f"{name}.log", "a")  # noqa: SIM115  (open for the process's lifetime)
        # A session of its own (a fault hits it and its children); gone with the harness if it dies.
        self.popen = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
            env={**os.environ, **(env or {})},
        )

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self) -> None:
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(15)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.popen.wait()


WORKER_COMMAND = [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--loglevel", "WARNING",
                  "--concurrency", "1", "--queues", "critical,high,default,low", "--without-gossip",
                  "--without-mingle"]  # fmt: skip


def worker(index: int) -> Process:
    node = f"chaos{index}-{secrets.token_hex(2)}"
    process = Process(f"worker-{index}", [*WORKER_COMMAND, "--hostname", f"{node}@%h"])
    process.node = node
    return process


def busy_worker(workers: list[Process], celery_app, rng: random.Random) -> Process:
    """A worker in the middle of a task if one can be caught within a few tries (mid-pass), else any."""
    for _ in range(20):
        try:
            active = celery_app.control.inspect(timeout=0.3).active() or {}
        except Exception:  # the harness's own broker connection can be the one a fault just cut
            active = {}
        busy = [w for w in workers if any(host.startswith(w.node + "@") and tasks for host, tasks in active.items())]
        if busy:
            return rng.choice(busy)
    return rng.choice(workers)


def beat() -> Process:
    return Process(
        "beat",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.app",
            "beat",
            "--loglevel",
            "WARNING",
            "--schedule",
            str(STATE / "beat-schedule"),
        ],
    )


def agent(name: str, url: str, token: str) -> Process:
    """A process-driver agent on a state dir of its own (its runs are process groups of their own, so a
    fault on the agent's group does not hit them; they die with it)."""
    command = [sys.executable, "-m", "agent", "--api", url, "--driver", "process", "--name", name,
               "--state-dir", str(STATE / "agents" / name)]  # fmt: skip
    process = Process(f"agent-{name}", command, {"HV_AGENT_TOKEN": token})
    process.url, process.token = url, token
    return process


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie its agent has not reaped yet."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


class RunSampler(threading.Thread):
    """Reads the agent runs' pid files every few milliseconds: a deployment with two live processes at once is
    a duplicate run."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop, self.samples, self.duplicates = threading.Event(), 0, {}

    def run(self) -> None:
        while not self.stop.is_set():
            for path in PIDS.glob("*"):
                pids = [int(line.split()[1]) for line in path.read_text().splitlines() if len(line.split()) == 2]
                live = [pid for pid in pids if _alive(pid)]
                if len(live) > 1:
                    self.duplicates.setdefault(path.name, set()).update(live)
            self.samples += 1
            time.sleep(0.02)


class Sampler(threading.Thread):
    """Checks the books every few milliseconds; an outage of the database is a gap, not a violation."""

    def __init__(self, engine) -> None:
        super().__init__(daemon=True)
        self.engine, self.stop, self.samples, self.violations = engine, threading.Event(), 0, []

    def run(self) -> None:
        from sqlalchemy import text

        from tests.worker.test_concurrency import violations

        while not self.stop.is_set():
            try:
                with self.engine.connect() as connection, connection.begin():
                    connection.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
                    self.violations.extend(violations(connection))
                self.samples += 1
            except Exception:  # noqa: S110  (the database is down on purpose; the next sample retries)
                pass
            time.sleep(0.02)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--long", action="store_true", help="more deployments and three rounds of faults")
    parser.add_argument("--seed", type=int, default=20261122)
    options = parser.parse_args()
    deployments, rounds = (400, 3) if options.long else (120, 1)
    agent_deployments = 90 if options.long else 24
    rng = random.Random(options.seed)

    STATE.mkdir(parents=True, exist_ok=True)
    for old_log in STATE.glob("*.log"):
        old_log.unlink()
    for old in (PIDS, STATE / "agents"):
        shutil.rmtree(old, ignore_errors=True)
    PIDS.mkdir()
    from devtools.scratch import migrate
    from devtools.services import EmbeddedServices, ensure_database

    services = EmbeddedServices(STATE).start()
    ensure_database(services.database_server_uri, "hypervisor_chaos", recreate=True)
    database_url = services.database_url("hypervisor_chaos")
    os.environ.update(
        DATABASE_URL=database_url,
        REDIS_URL=services.redis_url,
        HV_ENV="test",
        SECRET_KEY=secrets.token_urlsafe(48),
        PASS_LOCK_SECONDS=str(LOCK_SECONDS),
        RECONCILE_SECONDS="1",
        LOG_LEVEL="WARNING",
        HV_STATE_DIR=str(STATE),
        AGENT_SYNC_SECONDS=str(AGENT_SYNC),
        AGENT_LEASE_SECONDS=str(AGENT_LEASE),
        AGENT_LOST_SECONDS=str(AGENT_LOST),
    )
    import redis

    redis.Redis.from_url(services.redis_url).flushdb()
    migrate(database_url)
    processes: list[Process] = []
    try:
        return _run(services, processes, deployments, agent_deployments, rounds, rng)
    finally:
        for process in processes:
            process.stop()
        services.stop()


def _run(services, processes, deployment_count: int, agent_count: int, rounds: int, rng: random.Random) -> int:
    import logging

    from sqlalchemy import text
    from sqlalchemy.orm import Session
    from werkzeug.serving import make_server

    from api import create_app
    from shared.db import db
    from tests.conftest import Auth, Fleet
    from tests.worker.conftest import Api

    app = create_app()
    with Session(db.engine, expire_on_commit=False) as session:
        from shared.identity.passwords import hash_password

        auth = Auth(app, session, hash_password("correct horse battery"))
        organization, admin = auth.org("chaos")
        fleet = Fleet(session)
        clusters = [fleet.cluster(organization, name=f"c{i}", cpu=16, ram_gb=64, gpu=4).id for i in range(3)]
        probe_cluster = fleet.cluster(organization, name="probe", cpu=1000, ram_gb=1000, gpu=0).id
        agent_cluster = fleet.cluster(organization, name="agents", cpu=8, ram_gb=16, gpu=0, runtime="agent").id
    api = Api(app.test_client(), admin, organization)

    # The agents need the API over HTTP: served from this process, on a free loopback port.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    tokens = []
    for name in ("host-a", "host-b"):
        created = api.client.post(
            f"/api/v1/clusters/{agent_cluster}/agent-tokens", json={"name": name}, headers=admin.headers
        )
        assert created.status_code == 201, created.json
        tokens.append(created.json["token"])
    agents = {name: agent(name, url, token) for name, token in zip(("host-a", "host-b"), tokens, strict=True)}
    processes.extend(agents.values())
    run_sampler = RunSampler()
    run_sampler.start()

    workers = [worker(i) for i in range(3)]
    scheduler_beat = beat()
    processes.extend([*workers, scheduler_beat])
    sampler = Sampler(db.engine)
    sampler.start()

    accepted = []
    for index in range(deployment_count):
        accepted.append(
            api.submit(
                str(rng.choice(clusters)),
                f"burst-{index}",
                priority=rng.choice([100, 500, 900]),
                cpu=rng.choice([0.5, 1, 2]),
                ram_gb=rng.choice([1, 4, 8]),
                gpu=rng.choice([0, 0, 1, 2]),
                run_seconds=rng.choice([1, 2, 3]),
                max_retries=1,
            )
        )

    for index in range(agent_count):
        accepted.append(
            api.submit(
                str(agent_cluster),
                f"agent-run-{index}",
                priority=rng.choice([100, 500, 900]),
                cpu=rng.choice([1, 2]),
                grace_seconds=1,
                max_retries=3,
                command=["sh", "-c", RUN_SCRIPT],
                env={"PIDS": str(PIDS), "SECONDS_TO_RUN": str(rng.choice([1, 2, 8]))},
            )
        )

    schedule = [fault for _ in range(rounds) for fault in rng.sample(FAULTS, len(FAULTS))]
    recoveries: dict[str, list[float]] = {fault: [] for fault in FAULTS}
    for fault in schedule:
        time.sleep(rng.uniform(1.0, 3.0))
        print(f"fault: {fault}", flush=True)
        _inject(fault, services, processes, workers, agents, rng, app.extensions["celery"])
        recoveries[fault].append(_probe(api, str(probe_cluster)))

    calm_deadline = time.monotonic() + (240 if rounds > 1 else 150)
    unfinished = None
    while time.monotonic() < calm_deadline:
        with contextlib.suppress(Exception), db.engine.connect() as connection:
            unfinished = connection.execute(
                text("SELECT count(*) FROM deployments WHERE status IN ('queued', 'running')")
            ).scalar()
            if unfinished == 0:
                break
        time.sleep(1)
    sampler.stop.set()
    sampler.join()
    run_sampler.stop.set()
    run_sampler.join()
    server.shutdown()

    with db.engine.connect() as connection:
        from tests.worker.test_concurrency import violations

        final_violations = violations(connection)
        found = dict(
            connection.execute(
                text("SELECT id::text, status FROM deployments WHERE id::text = ANY(:ids)"), {"ids": accepted}
            ).all()
        )
        by_status = Counter(found.values())
    lost = len(set(accepted) - set(found))
    all_recoveries = [seconds for values in recoveries.values() for seconds in values]

    print(
        f"\nchaos: {deployment_count} deployments, {len(schedule)} faults "
        f"({', '.join(f'{k} x{v}' for k, v in Counter(schedule).items())})"
    )
    print(f"{'fault':<18}{'count':>6}{'recovery p50 s':>16}{'max s':>8}")
    for fault in FAULTS:
        values = recoveries[fault]
        if values:
            print(f"{fault:<18}{len(values):>6}{statistics.median(values):>16.1f}{max(values):>8.1f}")
    print(f"capacity violations: {len(sampler.violations) + len(final_violations)} in {sampler.samples} samples")
    print(f"lost deployments: {lost}")
    print(
        f"duplicate runs: {len(run_sampler.duplicates)} deployment(s) with two live processes, in "
        f"{run_sampler.samples} samples of {len(list(PIDS.glob('*')))} agent deployments' pid files"
    )
    print(f"after the calm period: {dict(by_status)}; unfinished: {unfinished}")
    print(f"recovery overall: p50 {statistics.median(all_recoveries):.1f} s, max {max(all_recoveries):.1f} s")
    for violation in (sampler.violations + final_violations)[:10]:
        print(f"  violation: {violation}")
    for deployment_id, pids in list(run_sampler.duplicates.items())[:10]:
        print(f"  duplicate: deployment {deployment_id}, live at once: {sorted(pids)}")
    ok = (
        not sampler.violations and not final_violations and lost == 0 and unfinished == 0 and not run_sampler.duplicates
    )
    print("chaos: PASS" if ok else "chaos: FAIL")
    return 0 if ok else 1


def _inject(
    fault: str,
    services,
    processes: list[Process],
    workers: list[Process],
    agents: dict[str, Process],
    rng: random.Random,
    celery_app,
) -> None:
    if fault == "kill_worker":
        victim = busy_worker(workers, celery_app, rng)
        victim.signal(signal.SIGKILL)
        victim.popen.wait()
        replacement = worker(len(processes) + 10)
        workers[workers.index(victim)] = replacement
        processes.append(replacement)
    elif fault == "stop_worker":
        victim = busy_worker(workers, celery_app, rng)
        victim.signal(signal.SIGSTOP)
        time.sleep(LOCK_SECONDS + 2)  # past its lock's lifetime
        victim.signal(signal.SIGCONT)
    elif fault == "restart_redis":
        services.restart_redis()
    elif fault == "restart_postgres":
        services.restart_postgres()
    elif fault == "restart_beat":
        old = next(p for p in processes if p.name == "beat" and p.popen.poll() is None)
        old.signal(signal.SIGKILL)
        old.popen.wait()
        processes.append(beat())
    elif fault == "kill_agent":
        name = _holder_name(agents)
        victim = agents[name]
        victim.signal(signal.SIGKILL)  # its runs die with it
        victim.popen.wait()
        time.sleep(rng.uniform(0.5, AGENT_LEASE + 2))  # before or after the other takes over
        agents[name] = agent(name, victim.url, victim.token)
        processes.append(agents[name])
    elif fault == "stop_agent":
        victim = agents[_holder_name(agents)]
        victim.signal(signal.SIGSTOP)  # it stops syncing; its runs go on
        # Past its lease (the other takes over), back before its fencing deadline (8 s): a frozen agent cannot
        # fence, so one frozen past it would break the promise fencing makes.
        time.sleep(rng.uniform(AGENT_LEASE + 2, 7))
        victim.signal(signal.SIGCONT)


def _holder_name(agents: dict[str, Process]) -> str:
    """The agent holding the agent cluster now (either, before any synced)."""
    from sqlalchemy import text

    from shared.db import db

    with contextlib.suppress(Exception), db.engine.connect() as connection:
        name = connection.execute(text("SELECT name FROM cluster_agents")).scalar()
        if name in agents:
            return name
    return next(iter(agents))


def _probe(api, cluster_id: str, timeout: float = 120.0) -> float:
    """Seconds from now until a fresh deployment is running: how long the system took to recover."""
    start = time.monotonic()
    deployment = None
    while deployment is None and time.monotonic() - start < timeout:
        try:
            deployment = api.submit(cluster_id, "probe", priority=1000, cpu=0.001, ram_gb=0.001, run_seconds=1)
        except AssertionError:  # the API answered 503 while the database restarts
            time.sleep(0.2)
    while time.monotonic() - start < timeout:
        with contextlib.suppress(Exception):
            if api.get(deployment)["status"] in ("running", "completed"):
                break
        time.sleep(0.1)
    return time.monotonic() - start


if __name__ == "__main__":
    sys.exit(main())
