"""The books of a cluster: the database refuses over-commitment, whatever the code above it does."""

import threading

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from shared.clusters import accounting
from shared.clusters.models import Allocation, Cluster
from shared.db import db
from shared.deployments import transitions
from shared.deployments.models import Deployment


@pytest.fixture
def org(auth):
    return auth.org()


def test_two_transactions_racing_for_the_last_gpu_one_wins_the_other_is_told_why(app, session, fleet, org):
    organization, admin = org
    cluster = fleet.cluster(organization, gpu=1)
    first = fleet.deployment(cluster, admin, gpu=1, name="first")
    second = fleet.deployment(cluster, admin, gpu=1, name="second")
    barrier = threading.Barrier(2)
    outcomes = {}

    def start(deployment_id):
        # A connection of its own per contender: a real race between two transactions.
        with Session(db.engine) as own:
            barrier.wait()
            try:
                locked = accounting.lock_cluster(own, cluster.id)
                deployment = own.get(Deployment, deployment_id)
                transitions.start(own, locked, deployment)
                own.commit()
                outcomes[deployment_id] = "started"
            except accounting.InsufficientCapacity as refusal:
                own.rollback()
                outcomes[deployment_id] = refusal.message

    threads = [threading.Thread(target=start, args=(d.id,)) for d in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes.values(), key=len)[0] == "started"
    loser = next(message for message in outcomes.values() if message != "started")
    assert "needs 1 GPU, 0 GPU free" in loser
    session.expire_all()
    assert session.get(Cluster, cluster.id).gpu_allocated == 1
    assert session.query(Allocation).count() == 1


def test_the_database_refuses_an_over_capacity_cluster(session, fleet, org):
    cluster = fleet.cluster(org[0], gpu=2)
    with pytest.raises(IntegrityError, match="ck_clusters_gpu_within_capacity"):
        session.execute(text("UPDATE clusters SET gpu_allocated = 3 WHERE id = :id"), {"id": cluster.id})
        session.flush()
    session.rollback()


def test_the_database_refuses_negative_allocations(session, fleet, org):
    cluster = fleet.cluster(org[0])
    with pytest.raises(IntegrityError, match="ck_clusters_cpu_within_capacity"):
        session.execute(text("UPDATE clusters SET cpu_allocated_millis = -1 WHERE id = :id"), {"id": cluster.id})
    session.rollback()


def test_a_deployment_cannot_hold_resources_twice(session, fleet, org):
    organization, admin = org
    cluster = fleet.cluster(organization)
    deployment = fleet.start(fleet.deployment(cluster, admin, gpu=1))
    with pytest.raises(IntegrityError, match="pk_allocations"):
        session.execute(
            text(
                "INSERT INTO allocations (deployment_id, cluster_id, cpu_millis, ram_mb, gpu) VALUES (:d, :c, 0, 0, 1)"
            ),
            {"d": deployment.id, "c": cluster.id},
        )
    session.rollback()


def test_allocate_refuses_what_does_not_fit_before_touching_anything(session, fleet, org):
    organization, admin = org
    cluster = fleet.cluster(organization, cpu=2, ram_gb=4, gpu=0)
    deployment = fleet.deployment(cluster, admin, cpu=1.5, ram_gb=4)
    fleet.start(deployment)
    other = fleet.deployment(cluster, admin, cpu=1, ram_gb=0)
    locked = accounting.lock_cluster(session, cluster.id)
    with pytest.raises(accounting.InsufficientCapacity, match=r"needs 1 CPU, 0\.5 CPU free"):
        accounting.allocate(session, locked, other.id, other.resources)
    session.rollback()
    assert session.get(Cluster, cluster.id).allocated == deployment.resources
    assert session.get(Allocation, other.id) is None


def test_release_gives_back_exactly_what_was_held(session, fleet, org):
    organization, admin = org
    cluster = fleet.cluster(organization, cpu=1, ram_gb=1, gpu=0)
    tenths = [fleet.start(fleet.deployment(cluster, admin, cpu=0.1, ram_gb=0.1)) for _ in range(10)]
    session.refresh(cluster)
    assert cluster.available.as_tuple() == (0, 0, 0)
    for deployment in tenths:
        locked = accounting.lock_cluster(session, cluster.id)
        accounting.release(session, locked, deployment.id)
        session.commit()
    session.refresh(cluster)
    assert cluster.allocated.as_tuple() == (0, 0, 0)
    assert accounting.ledger_total(session, cluster.id).as_tuple() == (0, 0, 0)


def test_counters_always_equal_the_ledger(session, fleet, org):
    organization, admin = org
    cluster = fleet.cluster(organization, cpu=8, ram_gb=16, gpu=4)
    running = [fleet.start(fleet.deployment(cluster, admin, cpu=1.25, ram_gb=2.5, gpu=1)) for _ in range(3)]
    locked = accounting.lock_cluster(session, cluster.id)
    transitions.complete(session, locked, running[0], "test")
    transitions.preempt(session, locked, running[1], running[2])
    session.commit()
    session.refresh(cluster)
    assert cluster.allocated == accounting.ledger_total(session, cluster.id)
    assert cluster.allocated.as_tuple() == (1250, 2500, 1)


def test_repair_sets_drifted_counters_back_to_the_ledger(session, fleet, org):
    organization, admin = org
    cluster = fleet.cluster(organization)
    fleet.start(fleet.deployment(cluster, admin, gpu=2))
    session.execute(text("UPDATE clusters SET gpu_allocated = 3 WHERE id = :id"), {"id": cluster.id})
    session.commit()
    locked = accounting.lock_cluster(session, cluster.id)
    drift = accounting.repair_counters(session, locked)
    session.commit()
    assert drift.gpu == 1
    assert session.get(Cluster, cluster.id).gpu_allocated == 2
    assert accounting.repair_counters(session, accounting.lock_cluster(session, cluster.id)) is None
    session.rollback()


def test_a_stale_status_change_changes_nothing(session, fleet, org):
    organization, admin = org
    cluster = fleet.cluster(organization)
    deployment = fleet.deployment(cluster, admin)
    with Session(db.engine) as stale:
        old_copy = stale.get(Deployment, deployment.id)
        fleet.start(deployment)  # someone else moves it on
        old_copy.status = "cancelled"
        with pytest.raises(StaleDataError):
            stale.flush()
        stale.rollback()
    session.expire_all()
    assert session.get(Deployment, deployment.id).status == "running"
