"""The Redis lock only saves work; PostgreSQL keeps the books. Here the lock of a pass expires while
the pass is stuck mid-transaction, and a second worker process runs a pass on the same cluster.

Worker A starts `first` but blocks on a row lock the test holds; its Redis lock (2 s) expires. Worker B
takes the lock for a pass on behalf of `urgent` (higher priority), and must wait for A's transaction
at the cluster row (SELECT ... FOR UPDATE). Without that row lock and the CHECK constraints, B would
plan on stale counters and start `urgent` beside `first`: two GPUs on a one-GPU cluster.
"""

import time

import pytest
from sqlalchemy import text

from shared.db import db
from tests.conftest import WorkerProcess
from tests.worker.conftest import wait_for

SHORT_LOCK = {"PASS_LOCK_SECONDS": "2"}


@pytest.fixture
def workers(celery_app):
    started = []

    def start(name):
        process = WorkerProcess(name, concurrency=1, env=SHORT_LOCK).start(celery_app)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def _waiting_backends() -> int:
    with db.engine.connect() as connection:
        return connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
        ).scalar()


def _books(cluster_id):
    with db.engine.connect() as connection:
        return connection.execute(
            text(
                "SELECT c.gpu_capacity, c.gpu_allocated, "
                "(SELECT coalesce(sum(gpu), 0) FROM allocations a WHERE a.cluster_id = c.id), "
                "(SELECT coalesce(sum(gpu), 0) FROM deployments d WHERE d.cluster_id = c.id AND d.status = 'running') "
                "FROM clusters c WHERE c.id = :id"
            ),
            {"id": cluster_id},
        ).one()


def _idle(celery_app) -> bool:
    active = celery_app.control.inspect(timeout=1).active() or {}
    return all(not tasks for tasks in active.values())


def test_an_expired_lock_mid_pass_never_over_allocates(client, auth, workers, celery_app):
    from tests.worker.conftest import Api

    organization, admin = auth.org("locks")
    api = Api(client, admin, organization)
    cluster = api.cluster(gpu=1)

    holder = db.engine.connect()
    transaction = holder.begin()
    try:
        worker_a = workers("worker-a")
        first = api.submit(cluster, "first", priority=500, gpu=1)
        # Block A mid-pass: it will have locked the cluster row and moved the counters, then wait here.
        holder.execute(text("SELECT 1 FROM deployments WHERE id = :id FOR UPDATE"), {"id": first})
        assert wait_for(_waiting_backends, lambda n: n >= 1, timeout=15) >= 1, "worker A never got stuck"

        time.sleep(2.5)  # A's Redis lock expires; A is still inside its transaction
        worker_b = workers("worker-b")
        urgent = api.submit(cluster, "urgent", priority=900, gpu=1)
        assert wait_for(_waiting_backends, lambda n: n >= 2, timeout=15) >= 2, "worker B never reached the row lock"
        capacity, allocated, ledger, running = _books(cluster)
        assert allocated <= capacity and ledger <= capacity and running <= capacity
    finally:
        transaction.rollback()
        holder.close()

    final = api.wait_status(urgent, "running", timeout=30)
    assert final["status"] == "running"
    # Let both workers finish whatever they were doing before reading the books.
    wait_for(lambda: (_waiting_backends(), _idle(celery_app)), lambda state: state == (0, True), timeout=30)
    time.sleep(0.5)
    wait_for(lambda: _idle(celery_app), bool, timeout=30)
    capacity, allocated, ledger, running = _books(cluster)
    assert (capacity, allocated, ledger, running) == (1, 1, 1, 1)
    first_now = api.get(first)
    assert first_now["status"] == "queued" and first_now["preemptions"] == 1
    assert "expired during the pass" in worker_a.log()
    # B ran a pass of its own on the same cluster (the one that found A's work committed and preempted it).
    assert "scheduler.schedule_deployment" in worker_b.log() and "succeeded" in worker_b.log()
