"""The books of a cluster: the only code that writes its counters (allocated, queued) and the allocation ledger.

Every change happens inside the caller's transaction, with the cluster row locked first
(`lock_cluster`), counters moved by relative updates in the same transaction as the ledger row and
the deployment's status change. The CHECK constraints on the cluster row are the last line: even a
bug here cannot commit an over-committed cluster.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from shared.clusters.models import Allocation, Cluster, ClusterQueue
from shared.config import get_settings
from shared.db import array_literal
from shared.deployments.models import Deployment, Status
from shared.errors import Conflict, NotFound, QueueFull
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


_COUNTERS = ("cpu_allocated_millis", "ram_allocated_mb", "gpu_allocated")


def _move_counters(session: Session, cluster: Cluster, delta: Resources) -> None:
    # Relative update: correct whatever this session believed the counters were. The row it returns
    # is the truth under the lock, so the cluster object takes it without another SELECT.
    counters = session.execute(
        update(Cluster)
        .where(Cluster.id == cluster.id)
        .values(
            cpu_allocated_millis=Cluster.cpu_allocated_millis + delta.cpu_millis,
            ram_allocated_mb=Cluster.ram_allocated_mb + delta.ram_mb,
            gpu_allocated=Cluster.gpu_allocated + delta.gpu,
        )
        .returning(*(getattr(Cluster, name) for name in _COUNTERS))
        .execution_options(synchronize_session=False)
    ).one()
    for name, value in zip(_COUNTERS, counters, strict=True):
        set_committed_value(cluster, name, value)


_INSERT_LEDGER = text(
    "INSERT INTO allocations (deployment_id, cluster_id, cpu_millis, ram_mb, gpu) "
    "SELECT v.id, :cluster_id, v.cpu_millis, v.ram_mb, v.gpu "
    "FROM unnest(CAST(:ids AS uuid[]), CAST(:cpu_millis AS bigint[]), CAST(:ram_mb AS bigint[]), "
    "CAST(:gpu AS bigint[])) AS v(id, cpu_millis, ram_mb, gpu)"
)


def allocate(session: Session, cluster: Cluster, deployment_id: uuid.UUID, request: Resources) -> None:
    """Claim `request` on the locked `cluster` for one deployment (one ledger row; a second claim fails)."""
    allocate_many(session, cluster, [(deployment_id, request)])


def allocate_many(session: Session, cluster: Cluster, claims: Sequence[tuple[uuid.UUID, Resources]]) -> None:
    """Claim resources on the locked `cluster` for many deployments at once, all or none: one ledger
    INSERT (a deployment already holding a row fails it) and one relative counter update."""
    if not claims:
        return
    total = sum((request for _, request in claims), Resources())
    lacking = total.shortfalls(cluster.available)
    if lacking:
        what = ", ".join(f"needs {describe(name, need)}, {describe(name, have)} free" for name, need, have in lacking)
        raise InsufficientCapacity(f"Does not fit on cluster {cluster.name}: {what}.")
    session.execute(
        _INSERT_LEDGER,
        {
            "cluster_id": cluster.id,
            "ids": array_literal(deployment_id for deployment_id, _ in claims),
            "cpu_millis": array_literal(request.cpu_millis for _, request in claims),
            "ram_mb": array_literal(request.ram_mb for _, request in claims),
            "gpu": array_literal(request.gpu for _, request in claims),
        },
    )
    _move_counters(session, cluster, total)


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


_RESERVE_QUEUE = text(
    """
    UPDATE cluster_queues SET queued = queued + :count, changes = changes + 1
    WHERE cluster_id = :cluster_id AND queued + :count <= :cluster_limit
      AND (SELECT sum(o.queued) FROM cluster_queues o WHERE o.organization_id = :organization_id)
          + :count <= :organization_limit
    RETURNING queued
    """
)


def reserve_queue(session: Session, cluster: Cluster, count: int) -> None:
    """Claim room for `count` new queued deployments on the cluster, or raise QueueFull (429) naming the limit.

    Call it last before the commit that stores them. The cluster's count is exact: one conditional
    relative update of its queue row (held until the commit; a pass holds it only at its very end). The
    organization's total is the sum of its clusters' counts, read without a lock: concurrent submissions to
    different clusters of one organization may together overshoot it by what they submit at that instant.
    The update also stamps a change, so a lost pass request is found by the reconciler.
    """
    settings = get_settings()
    # Core on the session's connection: a text statement needs nothing of the ORM's execute (issue 11's profile).
    limits = {
        "count": count,
        "cluster_id": cluster.id,
        "organization_id": cluster.organization_id,
        "cluster_limit": settings.max_queued_per_cluster,
        "organization_limit": settings.max_queued_per_organization,
    }
    row = session.connection().execute(_RESERVE_QUEUE, limits).first()
    if row is not None:
        return
    raise QueueFull(queue_full_reason(session, cluster, count, full=True))


def queue_full_reason(session: Session, cluster, count: int, full: bool = False) -> str | None:
    """Why `count` more queued deployments would pass the cluster's or the organization's limit (read only),
    or None if they would not. `full`: the caller knows one limit is reached; name the organization's if
    the cluster's is not."""
    settings = get_settings()
    queued = session.scalar(select(ClusterQueue.queued).where(ClusterQueue.cluster_id == cluster.id)) or 0
    if queued + count > settings.max_queued_per_cluster:
        return (
            f"Cluster {cluster.name} has {queued} queued deployments; {count} more would pass the limit of "
            f"{settings.max_queued_per_cluster} (MAX_QUEUED_PER_CLUSTER). Retry once some have started."
        )
    total = session.scalar(
        select(func.sum(ClusterQueue.queued)).where(ClusterQueue.organization_id == cluster.organization_id)
    )
    if not full and (total or 0) + count <= settings.max_queued_per_organization:
        return None
    return (
        f"This organization has {total} queued deployments; {count} more would pass the limit of "
        f"{settings.max_queued_per_organization} (MAX_QUEUED_PER_ORGANIZATION). Retry once some have started."
    )


def note_change(session: Session, cluster_id: uuid.UUID, queued_delta: int = 0) -> None:
    """Something a pass could act on changed on the cluster: move its queued count, stamp the change.

    Call it last before the commit (the queue row stays locked until then)."""
    session.execute(
        update(ClusterQueue)
        .where(ClusterQueue.cluster_id == cluster_id)
        .values(queued=ClusterQueue.queued + queued_delta, changes=ClusterQueue.changes + 1)
        .execution_options(synchronize_session=False)
    )


def mark_for_pass(session: Session, cluster_ids) -> None:
    """Stamp a change on other clusters (a dependency of their queued work ended) and commit."""
    if cluster_ids:
        session.execute(
            update(ClusterQueue)
            .where(ClusterQueue.cluster_id.in_(list(cluster_ids)))
            .values(changes=ClusterQueue.changes + 1)
            .execution_options(synchronize_session=False)
        )
        session.commit()


def changes_seen(session: Session, cluster_id: uuid.UUID) -> int:
    """The cluster's change stamp as a pass starts (read before the pass reads anything else)."""
    return session.scalar(select(ClusterQueue.changes).where(ClusterQueue.cluster_id == cluster_id)) or 0


def record_pass(session: Session, cluster_id: uuid.UUID, *, seen: int, finished: bool) -> None:
    """As a pass ends, just before its commit: set the queued count exact and, if the pass finished its plan,
    record that it saw every change up to `seen` (a change stamped since then still asks for a pass)."""
    # Lock first, count after, in separate statements: every submission that claimed room before the lock
    # has committed its deployments, and the count's snapshot (taken after the lock) sees them.
    session.execute(select(ClusterQueue.cluster_id).where(ClusterQueue.cluster_id == cluster_id).with_for_update())
    queued = session.scalar(
        select(func.count()).where(Deployment.cluster_id == cluster_id, Deployment.status == Status.QUEUED.value)
    )
    values = {"queued": queued}
    if finished:
        values["passed_changes"] = func.greatest(ClusterQueue.passed_changes, seen)
    session.execute(
        update(ClusterQueue)
        .where(ClusterQueue.cluster_id == cluster_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
