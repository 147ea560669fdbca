"""The reconciler, run by a real worker (and by a real beat): nothing waits forever on a lost message."""

import dataclasses
import subprocess
import sys
import time

import pytest
from sqlalchemy import event, text

from shared import config
from shared.clusters import service as clusters
from shared.clusters.models import Cluster, ClusterEvent, ClusterQueue
from shared.db import db
from shared.deployments import service as deployments
from shared.deployments.models import Deployment
from shared.scheduling import reconcile as reconciler
from shared.scheduling.requests import pending_key
from tests.conftest import FIGURES, ROOT
from tests.worker.conftest import wait_for


def reconcile(celery_app) -> dict:
    return celery_app.send_task("maintenance.reconcile", queue="critical", ignore_result=False).get(timeout=30)


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
    assert wait_for(lambda: _settled(session, cluster.id), bool)
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
    results = [celery_app.send_task("maintenance.reconcile", queue="critical", ignore_result=False) for _ in range(2)]
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


def _settled(session, cluster_id) -> bool:
    """A pass has looked at the cluster since its last change."""
    session.expire_all()
    queue = session.get(ClusterQueue, cluster_id)
    return queue.changes == queue.passed_changes


def _lose_the_next_request(redis_client, cluster_id):
    """The next request for a pass on the cluster coalesces into a pass that will never come."""
    redis_client.set(pending_key(cluster_id), "1", ex=60)


def test_a_blocked_cluster_gets_no_pass_until_something_changes(session, fleet, org, celery_app, redis_client):
    organization, admin = org
    cluster = fleet.cluster(organization, gpu=2)
    low = fleet.start(fleet.deployment(cluster, admin, gpu=1, priority=100))
    high = fleet.start(fleet.deployment(cluster, admin, gpu=1, priority=1000))
    # Needs both GPUs: preempting `low` frees one, the equal-priority `high` cannot be preempted.
    blocked = fleet.deployment(cluster, admin, gpu=2, priority=1000)
    assert wait_for(lambda: _settled(session, cluster.id), bool)
    _lose_every_message(redis_client)
    for _ in range(3):
        assert reconcile(celery_app)["passes_requested"] == 0
        assert not redis_client.exists(pending_key(cluster.id))

    # Something changes, and the pass it asks for is lost: the next round still finds it.
    _lose_the_next_request(redis_client, cluster.id)
    deployments.cancel(session=session, deployment_id=high.id, actor=admin.username)
    redis_client.delete(pending_key(cluster.id))
    assert reconcile(celery_app)["passes_requested"] == 1
    assert wait_for(lambda: _status(session, blocked.id), lambda s: s == "running") == "running"
    assert _status(session, low.id) == "queued"


def test_a_dependency_ending_on_another_cluster_is_a_change_there(session, fleet, org, celery_app, redis_client):
    organization, admin = org
    upstream_cluster, downstream_cluster = fleet.cluster(organization), fleet.cluster(organization)
    upstream = fleet.start(fleet.deployment(upstream_cluster, admin))
    downstream = fleet.deployment(downstream_cluster, admin, depends_on=[upstream.id])
    assert wait_for(lambda: _settled(session, downstream_cluster.id), bool)
    assert wait_for(lambda: _settled(session, upstream_cluster.id), bool)
    _lose_the_next_request(redis_client, downstream_cluster.id)
    deployments.complete(session=session, deployment_id=upstream.id, actor=admin.username)
    redis_client.delete(pending_key(downstream_cluster.id))
    assert reconcile(celery_app)["passes_requested"] >= 1
    assert wait_for(lambda: _status(session, downstream.id), lambda s: s == "running") == "running"


def test_another_organization_is_served_within_the_first_passes_of_a_round(
    session, auth, fleet, worker, redis_client, monkeypatch
):
    crowd, crowd_admin = auth.org("crowd")
    crowded = [fleet.cluster(crowd, gpu=1) for _ in range(12)]
    for cluster in crowded:
        fleet.start(fleet.deployment(cluster, crowd_admin, gpu=1, priority=1000))
        fleet.deployment(cluster, crowd_admin, gpu=1, priority=1000)
    quiet, quiet_admin = auth.org("quiet")
    lone = fleet.cluster(quiet)
    assert wait_for(lambda: all(_settled(session, c.id) for c in [*crowded, lone]), bool)
    # Every crowded cluster has changed and never had a pass; the lone one's request was lost.
    session.execute(text("UPDATE clusters SET last_pass_at = NULL WHERE organization_id = :o"), {"o": crowd.id})
    session.execute(text("UPDATE cluster_queues SET changes = changes + 1 WHERE organization_id = :o"), {"o": crowd.id})
    session.commit()
    _lose_the_next_request(redis_client, lone.id)
    waiting = fleet.deployment(lone, quiet_admin)
    redis_client.delete(pending_key(lone.id))

    monkeypatch.setattr(config, "_settings", dataclasses.replace(config.get_settings(), reconcile_max_passes=3))
    report = reconciler.reconcile(session=session, send_completion=lambda *_: None)
    assert report.passes_requested == 3 and report.passes_deferred == 10
    assert wait_for(lambda: _status(session, waiting.id), lambda s: s == "running") == "running"


def test_a_quiet_round_is_one_query(session, fleet, org, worker, redis_client, celery_app):
    organization, admin = org
    cluster = fleet.cluster(organization, gpu=1)
    fleet.start(fleet.deployment(cluster, admin, gpu=1, priority=900))
    fleet.deployment(cluster, admin, gpu=1, priority=900)
    assert wait_for(lambda: _settled(session, cluster.id), bool)
    statements = []

    def count(*_):
        statements.append(1)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        started = time.perf_counter()
        report = reconciler.reconcile(session=session, send_completion=lambda *_: None)
        elapsed = time.perf_counter() - started
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert len(statements) == 1
    assert report.quiet
    FIGURES.append(f"quiet reconcile round: {len(statements)} statement, {elapsed * 1000:.1f} ms")


def test_capacity_growth_is_a_change(session, fleet, org, celery_app, redis_client):
    organization, admin = org
    cluster = fleet.cluster(organization, gpu=1)
    fleet.start(fleet.deployment(cluster, admin, gpu=1, priority=900))
    waiting = fleet.deployment(cluster, admin, gpu=1, priority=900)
    assert wait_for(lambda: _settled(session, cluster.id), bool)
    _lose_the_next_request(redis_client, cluster.id)
    clusters.update(session=session, cluster_id=cluster.id, actor_id=admin.id, gpu=2)
    redis_client.delete(pending_key(cluster.id))
    assert reconcile(celery_app)["passes_requested"] == 1
    assert wait_for(lambda: _status(session, waiting.id), lambda s: s == "running") == "running"
