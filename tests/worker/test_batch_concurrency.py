"""Concurrent batches: 4 client threads submit pipelines as batches (items depending on earlier items by
"#<index>") into one cluster while 2 worker processes schedule and complete them; a sampler checks the
books all along. Every item runs, after everything it depends on completed, and the books balance."""

import threading
from datetime import datetime

import pytest
from sqlalchemy import text

from shared.db import db
from tests.conftest import WorkerProcess
from tests.worker.conftest import Api, wait_for
from tests.worker.test_concurrency import Sampler, violations

THREADS = 4
BATCHES_PER_THREAD = 3
WIDTH = 12  # independent steps per pipeline, then one step depending on all of them


@pytest.fixture
def two_workers(celery_app):
    workers = [WorkerProcess(f"batch-{i}", concurrency=2).start(celery_app) for i in range(2)]
    yield workers
    for process in workers:
        process.stop()


def _pipeline(thread: int, number: int) -> list[dict]:
    step = {"image": "ghcr.io/acme/step:1", "cpu": 0.5, "ram_gb": 1, "gpu": 0, "run_seconds": 0.3}
    items = [{"name": f"t{thread}-b{number}-step{i}", **step} for i in range(WIDTH)]
    items.append({"name": f"t{thread}-b{number}-join", **step, "depends_on": [f"#{i}" for i in range(WIDTH)]})
    return items


def test_concurrent_batches_with_in_batch_dependencies_all_run_in_order(app, auth, two_workers, redis_client):
    organization, admin = auth.org("batches")
    setup = Api(app.test_client(), admin, organization)
    cluster = setup.cluster("pool", cpu=4, ram_gb=64, gpu=0)
    accepted, errors = [], []
    sampler = Sampler()
    sampler.start()

    def client_thread(thread):
        client = app.test_client()
        for number in range(BATCHES_PER_THREAD):
            try:
                response = client.post(
                    f"/api/v1/clusters/{cluster}/deployments/batch",
                    json={"deployments": _pipeline(thread, number)},
                    headers=admin.headers,
                )
                assert response.status_code == 202, response.json
                accepted.append([d["id"] for d in response.json])
            except Exception as error:  # collected and asserted below
                errors.append(repr(error))

    threads = [threading.Thread(target=client_thread, args=(thread,)) for thread in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    every = [deployment for pipeline in accepted for deployment in pipeline]

    def finished():
        with db.engine.connect() as connection:
            return connection.execute(
                text("SELECT count(*) FROM deployments WHERE id::text = ANY(:ids) AND status = 'completed'"),
                {"ids": every},
            ).scalar()

    assert wait_for(finished, lambda n: n == len(every), timeout=120) == len(every)
    sampler.stop.set()
    sampler.join()
    assert sampler.samples > 20 and sampler.violations == []
    with db.engine.connect() as connection:
        assert violations(connection) == []
        times: dict[str, tuple[datetime, datetime]] = {
            row[0]: (row[1], row[2])
            for row in connection.execute(
                text("SELECT id::text, started_at, finished_at FROM deployments WHERE id::text = ANY(:ids)"),
                {"ids": every},
            )
        }
    assert len(accepted) == THREADS * BATCHES_PER_THREAD
    for pipeline in accepted:
        *steps, join = pipeline
        assert times[join][0] >= max(times[step][1] for step in steps), "a step started before its dependencies ended"
