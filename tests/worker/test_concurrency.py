"""Concurrency: 8 client threads submit, complete, fail and cancel on 3 clusters while 2 worker processes
schedule; a sampler checks the capacity invariant all along; at the end the books balance and nothing
is lost."""

import random
import threading
import time

import pytest
from sqlalchemy import text

from shared.db import db
from tests.conftest import WorkerProcess
from tests.worker.conftest import Api, wait_for

THREADS = 8
ACTIONS_PER_THREAD = 30

# Per cluster: capacity and what is allocated, what the ledger holds, what running deployments request.
BOOKS = text(
    """
    SELECT c.id,
           c.cpu_capacity_millis, c.ram_capacity_mb, c.gpu_capacity,
           c.cpu_allocated_millis, c.ram_allocated_mb, c.gpu_allocated,
           coalesce(l.cpu, 0), coalesce(l.ram, 0), coalesce(l.gpu, 0),
           coalesce(r.cpu, 0), coalesce(r.ram, 0), coalesce(r.gpu, 0)
    FROM clusters c
    LEFT JOIN (SELECT cluster_id, sum(cpu_millis) cpu, sum(ram_mb) ram, sum(gpu) gpu FROM allocations
               GROUP BY cluster_id) l ON l.cluster_id = c.id
    LEFT JOIN (SELECT cluster_id, sum(cpu_millis) cpu, sum(ram_mb) ram, sum(gpu) gpu FROM deployments
               WHERE status = 'running' GROUP BY cluster_id) r ON r.cluster_id = c.id
    """
)


def violations(connection) -> list[str]:
    """Every way the books are wrong right now (committed state, one consistent snapshot)."""
    found = []
    for row in connection.execute(BOOKS):
        cluster, capacity, allocated, ledger, running = row[0], row[1:4], row[4:7], row[7:10], row[10:13]
        for name, cap, value in zip(("cpu", "ram", "gpu"), capacity, running, strict=True):
            if value > cap:
                found.append(f"{cluster}: running {name} {value} > capacity {cap}")
        if tuple(allocated) != tuple(ledger):
            found.append(f"{cluster}: counters {tuple(allocated)} != ledger {tuple(ledger)}")
        if tuple(ledger) != tuple(running):
            found.append(f"{cluster}: ledger {tuple(ledger)} != running requests {tuple(running)}")
    return found


class Sampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.stop, self.samples, self.violations = threading.Event(), 0, []

    def run(self):
        with db.engine.connect() as connection:
            while not self.stop.is_set():
                with connection.begin():
                    connection.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
                    self.violations.extend(violations(connection))
                self.samples += 1
                time.sleep(0.01)


@pytest.fixture
def two_workers(celery_app):
    workers = [WorkerProcess(f"concurrent-{i}", concurrency=2).start(celery_app) for i in range(2)]
    yield workers
    for process in workers:
        process.stop()


def test_concurrent_clients_and_workers_keep_the_books(app, auth, two_workers, celery_app, redis_client):
    organization, admin = auth.org("busy")
    setup = Api(app.test_client(), admin, organization)
    clusters = [setup.cluster(f"c{i}", cpu=8, ram_gb=32, gpu=4) for i in range(3)]
    accepted, errors = [], []
    sampler = Sampler()
    sampler.start()

    def client_thread(seed):
        rng = random.Random(seed)
        api = Api(app.test_client(), admin, organization)
        mine = []
        for _ in range(ACTIONS_PER_THREAD):
            action = rng.choice(["submit", "submit", "submit", "complete", "fail", "cancel"])
            try:
                if action == "submit" or not mine:
                    deployment = api.submit(
                        rng.choice(clusters),
                        f"t{seed}-{len(mine)}",
                        priority=rng.choice([100, 500, 900]),
                        cpu=rng.choice([0.5, 1, 2]),
                        ram_gb=rng.choice([1, 4]),
                        gpu=rng.choice([0, 1, 2]),
                        max_retries=1,
                    )
                    mine.append(deployment)
                    accepted.append(deployment)
                else:
                    response = api.act(rng.choice(mine), action)
                    assert response.status_code in (200, 409), response.json
            except Exception as error:  # collected and asserted below: a thread must not swallow failures
                errors.append(repr(error))

    threads = [threading.Thread(target=client_thread, args=(seed,)) for seed in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    def settled():
        # No pass pending and both workers idle: everything asked for has been done.
        pending = redis_client.keys("hv:pass:pending:*")
        active = celery_app.control.inspect(timeout=1).active() or {}
        return not pending and all(not tasks for tasks in active.values())

    wait_for(settled, bool, timeout=60)
    sampler.stop.set()
    sampler.join()

    assert errors == []
    assert sampler.samples > 20 and sampler.violations == []
    with db.engine.connect() as connection:
        assert violations(connection) == []
        statuses = dict(
            connection.execute(
                text("SELECT id::text, status FROM deployments WHERE id::text = ANY(:ids)"), {"ids": accepted}
            ).all()
        )
        unexplained = connection.execute(
            text("SELECT count(*) FROM deployments WHERE status = 'queued' AND reason IS NULL")
        ).scalar()
    assert len(accepted) > 50
    assert set(statuses) == set(accepted), "an accepted deployment was lost"
    assert set(statuses.values()) <= {"queued", "running", "completed", "failed", "cancelled"}
    assert unexplained == 0
