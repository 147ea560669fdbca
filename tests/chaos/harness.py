"""Chaos: real workers, beat, PostgreSQL and Redis, and a seeded schedule of faults among them.

    python -m tests.chaos.harness            # brief (what `make test` runs)
    python -m tests.chaos.harness --long     # `make chaos`

It always runs on embedded servers of its own (under .hypervisor/chaos), whatever DATABASE_URL and
REDIS_URL say, because it restarts them. Three workers and one beat schedule a burst of deployments
(each completes by itself after run_seconds) while faults hit them in a seeded order: SIGKILL a worker
mid-pass, SIGSTOP one past its lock timeout and resume it, restart Redis, restart PostgreSQL, kill beat
and start it again. A sampler checks the books all along. After each fault, a probe deployment measures
how long until the system schedules new work again; after a calm period every deployment must have
finished. Prints the figures; exits 1 on any violation, lost deployment or unsettled end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import secrets
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
FAULTS = ("kill_worker", "stop_worker", "restart_redis", "restart_postgres", "restart_beat")


class Process:
    """A worker or beat process of its own session, so a fault can hit it and all its children."""

    def __init__(self, name: str, command: list[str]) -> None:
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
    rng = random.Random(options.seed)

    STATE.mkdir(parents=True, exist_ok=True)
    for old_log in STATE.glob("*.log"):
        old_log.unlink()
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
    )
    import redis

    redis.Redis.from_url(services.redis_url).flushdb()
    migrate(database_url)
    processes: list[Process] = []
    try:
        return _run(services, processes, deployments, rounds, rng)
    finally:
        for process in processes:
            process.stop()
        services.stop()


def _run(services, processes, deployment_count: int, rounds: int, rng: random.Random) -> int:
    from sqlalchemy import text
    from sqlalchemy.orm import Session

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
    api = Api(app.test_client(), admin, organization)

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

    schedule = [fault for _ in range(rounds) for fault in rng.sample(FAULTS, len(FAULTS))]
    recoveries: dict[str, list[float]] = {fault: [] for fault in FAULTS}
    for fault in schedule:
        time.sleep(rng.uniform(1.0, 3.0))
        print(f"fault: {fault}", flush=True)
        _inject(fault, services, processes, workers, rng, app.extensions["celery"])
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
    print(f"after the calm period: {dict(by_status)}; unfinished: {unfinished}")
    print(f"recovery overall: p50 {statistics.median(all_recoveries):.1f} s, max {max(all_recoveries):.1f} s")
    for violation in (sampler.violations + final_violations)[:10]:
        print(f"  violation: {violation}")
    ok = not sampler.violations and not final_violations and lost == 0 and unfinished == 0
    print("chaos: PASS" if ok else "chaos: FAIL")
    return 0 if ok else 1


def _inject(
    fault: str, services, processes: list[Process], workers: list[Process], rng: random.Random, celery_app
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
