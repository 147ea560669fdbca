"""A pass's set-based changes keep the guard a single change has: a deployment changed since the pass read
it (its version moved on) makes the whole change fail, and nothing of it is kept."""

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm.exc import StaleDataError

from shared.clusters import accounting
from shared.clusters.models import Allocation, Cluster
from shared.db import db
from shared.deployments import transitions
from shared.deployments.models import Deployment, DeploymentEvent


@pytest.fixture
def queued(session, fleet, auth):
    organization, admin = auth.org()
    cluster = fleet.cluster(organization, cpu=8, ram_gb=16, gpu=2)
    deployments = [fleet.deployment(cluster, admin, cpu=1, ram_gb=1, gpu=1) for _ in range(2)]
    return cluster, deployments


def _bump_version(deployment_id) -> None:
    with db.engine.begin() as other:
        other.execute(
            text("UPDATE deployments SET reason = 'changed', version = version + 1 WHERE id = :id"),
            {"id": deployment_id},
        )


@pytest.mark.parametrize("change", ["start", "fail"])
def test_a_stale_version_fails_the_whole_change_and_keeps_nothing(session, queued, change):
    cluster, (first, second) = queued
    _bump_version(second.id)  # `second` as read by the caller is now stale
    locked = accounting.lock_cluster(session, cluster.id)
    with pytest.raises(StaleDataError):
        if change == "start":
            transitions.start_many(session, locked, [first, second])
        else:
            transitions.fail_many_because(session, [(first, "dependency x failed"), (second, "dependency x failed")])
    session.rollback()
    session.expire_all()
    statuses = session.scalars(select(Deployment.status).where(Deployment.id.in_([first.id, second.id]))).all()
    assert statuses == ["queued", "queued"]
    assert session.get(Cluster, cluster.id).allocated.as_tuple() == (0, 0, 0)
    assert session.scalar(select(func.count()).select_from(Allocation)) == 0
    assert session.scalars(
        select(DeploymentEvent.type).where(DeploymentEvent.deployment_id.in_([first.id, second.id]))
    ).all() == ["submitted", "submitted"]


def test_current_versions_start_together_in_one_change(session, queued):
    cluster, deployments = queued
    locked = accounting.lock_cluster(session, cluster.id)
    transitions.start_many(session, locked, deployments)
    session.commit()
    session.expire_all()
    assert {d.status for d in session.scalars(select(Deployment).where(Deployment.cluster_id == cluster.id))} == {
        "running"
    }
    assert session.get(Cluster, cluster.id).allocated == accounting.ledger_total(session, cluster.id)
    assert session.get(Cluster, cluster.id).gpu_allocated == 2
