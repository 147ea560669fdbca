"""The reconciler, run by a real worker (and by a real beat): nothing waits forever on a lost message."""

import subprocess
import sys

import pytest
from sqlalchemy import text

from shared.clusters.models import Cluster, ClusterEvent
from shared.db import db
from shared.deployments.models import Deployment
from shared.scheduling.requests import pending_key
from tests.conftest import ROOT
from tests.worker.conftest import wait_for


def reconcile(celery_app) -> dict:
    return celery_app.send_task("maintenance.reconcile", queue="critical").get(timeout=30)


@pytest.fixture
def org(auth, worker):
    return auth.org("reconciled")


def _lose_every_message(redis_client):
    """A broker that lost its messages (and the coalescing markers with them)."""
    redis_client.flushdb()


def test_a_lost_pass_request_is_recovered(session, fleet, org, celery_app, redis_client):
    organization, admin = org
    cluster = fleet.cluster(organization)
    deployment = fleet.deployment(cluster, admin)
    _lose_every_message(redis_client)
    report = reconcile(celery_app)
    assert report["passes_requested"] >= 1
    status = wait_for(lambda: _status(session, deployment.id), lambda s: s == "running")
    assert status == "running"


def test_clusters_with_nothing_to_do_get_no_pass(session, fleet, org, celery_app, redis_client):
    organization, admin = org
    cluster = fleet.cluster(organization, gpu=1)
    fleet.start(fleet.deployment(cluster, admin, gpu=1, priority=900))
    fleet.deployment(cluster, admin, gpu=1, priority=900)  # cannot fit, cannot preempt an equal
    session.execute(text("UPDATE clusters SET last_pass_at = now() WHERE id = :id"), {"id": cluster.id})
    session.commit()
    _lose_every_message(redis_client)
    reconcile(celery_app)
    assert not redis_client.exists(pending_key(cluster.id))


def test_a_due_run_seconds_is_completed_even_if_its_timer_was_lost(session, fleet, org, celery_app, redis_client):
    organization, admin = org
    cluster = fleet.cluster(organization)
    deployment = fleet.start(fleet.deployment(cluster, admin, gpu=1, run_seconds=3600))
    session.execute(
        text("UPDATE deployments SET completes_at = now() - interval '1 second' WHERE id = :id"), {"id": deployment.id}
    )
    session.commit()
    _lose_every_message(redis_client)
    assert reconcile(celery_app)["completions_sent"] == 1
    assert wait_for(lambda: _status(session, deployment.id), lambda s: s == "completed") == "completed"
    session.expire_all()
    assert session.get(Cluster, cluster.id).gpu_allocated == 0


def test_drifted_counters_are_repaired_and_recorded(session, fleet, org, celery_app):
    organization, admin = org
    cluster = fleet.cluster(organization, gpu=4)
    fleet.start(fleet.deployment(cluster, admin, gpu=2))
    session.execute(text("UPDATE clusters SET gpu_allocated = 3 WHERE id = :id"), {"id": cluster.id})
    session.commit()
    report = reconcile(celery_app)
    assert report["repaired"] == [str(cluster.id)]
    session.expire_all()
    assert session.get(Cluster, cluster.id).gpu_allocated == 2
    event = session.query(ClusterEvent).filter_by(cluster_id=cluster.id).one()
    assert event.type == "counters_repaired" and "gpu 1" in event.message and event.actor == "reconciler"
    assert reconcile(celery_app)["repaired"] == []


def test_two_reconcilers_at_once_do_no_harm(session, fleet, org, celery_app, redis_client):
    organization, admin = org
    cluster = fleet.cluster(organization, gpu=4)
    deployment = fleet.start(fleet.deployment(cluster, admin, gpu=2, run_seconds=3600))
    session.execute(text("UPDATE deployments SET completes_at = now() WHERE id = :id"), {"id": deployment.id})
    session.execute(text("UPDATE clusters SET gpu_allocated = 1 WHERE id = :id"), {"id": cluster.id})
    session.commit()
    results = [celery_app.send_task("maintenance.reconcile", queue="critical") for _ in range(2)]
    reports = [result.get(timeout=30) for result in results]
    assert sum(r["completions_sent"] for r in reports) == 1
    assert wait_for(lambda: _status(session, deployment.id), lambda s: s == "completed") == "completed"
    session.expire_all()
    books = session.get(Cluster, cluster.id)
    assert books.gpu_allocated == 0
    assert session.execute(text("SELECT count(*) FROM allocations")).scalar() == 0


def test_beat_runs_the_reconciler_on_its_own(session, fleet, org, redis_client, tmp_path):
    organization, admin = org
    cluster = fleet.cluster(organization)
    deployment = fleet.deployment(cluster, admin)
    _lose_every_message(redis_client)
    env = {"RECONCILE_SECONDS": "1"}
    import os

    beat = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.app",
            "beat",
            "--loglevel",
            "INFO",
            "--schedule",
            str(tmp_path / "schedule"),
        ],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        status = wait_for(lambda: _status(session, deployment.id), lambda s: s == "running", timeout=30)
    finally:
        beat.terminate()
        beat.wait(10)
    assert status == "running"


def _status(session, deployment_id) -> str:
    session.expire_all()
    return session.get(Deployment, deployment_id).status


def test_the_database_session_of_a_task_is_not_shared_with_the_next(celery_app, worker):
    # Two pings in a row each open and close their own session (a leaked transaction would hold locks).
    for _ in range(2):
        assert celery_app.send_task("maintenance.ping", queue="default").get(timeout=30)["database"] is True
    with db.engine.connect() as connection:
        idle_in_transaction = connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' "
                "AND datname = current_database()"
            )
        ).scalar()
    assert idle_in_transaction == 0
