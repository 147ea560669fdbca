"""The books of a cluster: the only code that writes allocated counters and the allocation ledger.

Every change happens inside the caller's transaction, with the cluster row locked first
(`lock_cluster`), counters moved by relative updates in the same transaction as the ledger row and
the deployment's status change. The CHECK constraints on the cluster row are the last line: even a
bug here cannot commit an over-committed cluster.
"""

from __future__ import annotations

import uuid

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from shared.clusters.models import Allocation, Cluster
from shared.errors import Conflict, NotFound
from shared.resources import Resources, describe

CLUSTER_NOT_FOUND = "Cluster not found."


class InsufficientCapacity(Conflict):
    """The request does not fit in what the cluster has free right now."""


def lock_cluster(session: Session, cluster_id: uuid.UUID) -> Cluster:
    """The cluster row, locked and freshly read, until the transaction ends.

    FOR NO KEY UPDATE, the row-lock flavour of UPDATE that leaves key columns alone: it serializes every
    change to the cluster's books exactly like FOR UPDATE, but does not block the foreign-key checks of
    deployments being submitted to the cluster meanwhile (FOR UPDATE would make each submission wait
    for the pass in progress).
    """
    cluster = session.scalar(
        select(Cluster)
        .where(Cluster.id == cluster_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    if cluster is None:
        raise NotFound(CLUSTER_NOT_FOUND)
    return cluster


def _move_counters(session: Session, cluster: Cluster, delta: Resources) -> None:
    # Relative update: correct whatever this session believed the counters were.
    session.execute(
        update(Cluster)
        .where(Cluster.id == cluster.id)
        .values(
            cpu_allocated_millis=Cluster.cpu_allocated_millis + delta.cpu_millis,
            ram_allocated_mb=Cluster.ram_allocated_mb + delta.ram_mb,
            gpu_allocated=Cluster.gpu_allocated + delta.gpu,
        )
        .execution_options(synchronize_session=False)
    )
    session.refresh(cluster)


def allocate(session: Session, cluster: Cluster, deployment_id: uuid.UUID, request: Resources) -> None:
    """Claim `request` on the locked `cluster` for one deployment (one ledger row; a second claim fails)."""
    lacking = request.shortfalls(cluster.available)
    if lacking:
        what = ", ".join(f"needs {describe(name, need)}, {describe(name, have)} free" for name, need, have in lacking)
        raise InsufficientCapacity(f"Does not fit on cluster {cluster.name}: {what}.")
    session.execute(
        insert(Allocation).values(
            deployment_id=deployment_id,
            cluster_id=cluster.id,
            cpu_millis=request.cpu_millis,
            ram_mb=request.ram_mb,
            gpu=request.gpu,
        )
    )
    _move_counters(session, cluster, request)


def release(session: Session, cluster: Cluster, deployment_id: uuid.UUID) -> Resources:
    """Give back what the deployment holds on the locked `cluster`; nothing if it holds nothing."""
    row = session.execute(
        delete(Allocation)
        .where(Allocation.deployment_id == deployment_id, Allocation.cluster_id == cluster.id)
        .returning(Allocation.cpu_millis, Allocation.ram_mb, Allocation.gpu)
    ).first()
    if row is None:
        return Resources()
    freed = Resources(*row)
    _move_counters(session, cluster, Resources() - freed)
    return freed


def ledger_total(session: Session, cluster_id: uuid.UUID) -> Resources:
    """What the ledger says the cluster has allocated: the truth the counters must equal."""
    row = session.execute(
        select(
            func.coalesce(func.sum(Allocation.cpu_millis), 0),
            func.coalesce(func.sum(Allocation.ram_mb), 0),
            func.coalesce(func.sum(Allocation.gpu), 0),
        ).where(Allocation.cluster_id == cluster_id)
    ).one()
    return Resources(*(int(value) for value in row))


def repair_counters(session: Session, cluster: Cluster) -> Resources | None:
    """On the locked cluster: set the counters to the ledger's totals; the drift found, or None if none."""
    truth = ledger_total(session, cluster.id)
    drift = cluster.allocated - truth
    if drift == Resources():
        return None
    _move_counters(session, cluster, Resources() - drift)
    return drift
