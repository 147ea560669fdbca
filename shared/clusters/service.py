"""Clusters: create, read, resize, delete; and the counts of their deployments by status."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import and_, bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.agents.models import ClusterAgent
from shared.audit import service as audit
from shared.clusters import accounting, events
from shared.clusters.accounting import CLUSTER_NOT_FOUND, lock_cluster
from shared.clusters.models import AGENT, SIMULATED, Cluster, ClusterQueue
from shared.config import get_settings
from shared.deployments.models import Deployment, Status
from shared.deployments.service import highest_waiting_priority
from shared.errors import Conflict, LimitReached, NotFound
from shared.identity.models import User
from shared.organizations.models import Membership, Organization
from shared.resources import Resources, describe
from shared.scheduling.requests import request_pass


def organization_of(*, session: Session, object_id: uuid.UUID) -> uuid.UUID | None:
    """The organization owning the cluster, or None if there is no such cluster (access scope)."""
    return session.scalar(select(Cluster.organization_id).where(Cluster.id == object_id))


@dataclass(frozen=True, slots=True)
class ClusterRef:
    """What a submission needs of its cluster, read without an ORM object."""

    id: uuid.UUID
    organization_id: uuid.UUID
    name: str
    capacity: Resources
    runtime: str


@dataclass(frozen=True, slots=True)
class CallerAccess:
    """Who the caller is in the organization owning a cluster (role None: not a member), and the cluster."""

    organization_id: uuid.UUID
    role: str | None
    username: str | None
    cluster: ClusterRef


# Built once: a statement constructed per request costs more CPU than its round trip (issue 11's profile),
# and a constant one keeps its compiled form's cache key too.
_ACCESS = (
    select(
        Cluster.id,
        Cluster.organization_id,
        Cluster.name,
        Cluster.cpu_capacity_millis,
        Cluster.ram_capacity_mb,
        Cluster.gpu_capacity,
        Cluster.runtime,
        Membership.role,
        select(User.username).where(User.id == bindparam("user_id")).scalar_subquery(),
    )
    .outerjoin(
        Membership,
        and_(Membership.organization_id == Cluster.organization_id, Membership.user_id == bindparam("user_id")),
    )
    .where(Cluster.id == bindparam("cluster_id"))
)


def access_of(*, session: Session, object_id: uuid.UUID, user_id: uuid.UUID) -> CallerAccess | None:
    """In one query: the cluster, its organization, the caller's role there and username (access scope);
    None if there is no such cluster."""
    # Core, not the ORM's execute: this runs on every cluster-scoped request, and wants no entities.
    row = session.connection().execute(_ACCESS, {"cluster_id": object_id, "user_id": user_id}).first()
    if row is None:
        return None
    cluster_id, organization_id, name, cpu_millis, ram_mb, gpu, runtime, role, username = row
    return CallerAccess(
        organization_id,
        role,
        username,
        ClusterRef(cluster_id, organization_id, name, Resources(cpu_millis, ram_mb, gpu), runtime),
    )


def get_or_404(*, session: Session, cluster_id: uuid.UUID) -> Cluster:
    cluster = session.get(Cluster, cluster_id)
    if cluster is None:
        raise NotFound(CLUSTER_NOT_FOUND)
    return cluster


# A cluster event's type -> the audit log's type for the same change (the others stay in the cluster's history).
AUDIT_TYPES = {
    "runtime_changed": "cluster_runtime_changed",
    "cluster_renamed": "cluster_renamed",
    "capacity_changed": "cluster_resized",
}


def _name_taken(name: str) -> Conflict:
    return Conflict(f"This organization already has a cluster named {name!r}.")


def create(
    *,
    session: Session,
    organization_id: uuid.UUID,
    actor_id: uuid.UUID,
    name: str,
    capacity: Resources,
    runtime: str = SIMULATED,
) -> Cluster:
    """A new cluster; 409 if the name is taken or the organization has MAX_CLUSTERS_PER_ORGANIZATION already."""
    # The organization's row lock serializes its concurrent creations, so the count below holds.
    session.execute(select(Organization.id).where(Organization.id == organization_id).with_for_update(key_share=True))
    most = get_settings().max_clusters_per_organization
    existing = session.scalar(select(func.count()).where(Cluster.organization_id == organization_id))
    if existing >= most:
        session.rollback()
        raise LimitReached(
            f"This organization has {existing} clusters, the limit (MAX_CLUSTERS_PER_ORGANIZATION = {most}): "
            "delete one before creating another."
        )
    if session.scalar(select(Cluster.id).where(Cluster.organization_id == organization_id, Cluster.name == name)):
        session.rollback()
        raise _name_taken(name)
    cluster = Cluster(
        id=uuid.uuid4(),
        organization_id=organization_id,
        name=name,
        cpu_capacity_millis=capacity.cpu_millis,
        ram_capacity_mb=capacity.ram_mb,
        gpu_capacity=capacity.gpu,
        runtime=runtime,
    )
    session.add(cluster)
    try:
        session.flush()
        session.add(ClusterQueue(cluster_id=cluster.id, organization_id=organization_id))
        audit.record(
            session,
            organization_id=organization_id,
            kind="cluster_created",
            message=f"Created cluster {name} with {audit.describe_capacity(capacity)} ({runtime} runtime).",
            actor_id=actor_id,
            cluster_id=cluster.id,
        )
        session.commit()
    except IntegrityError:
        session.rollback()
        raise _name_taken(name) from None
    return cluster


def list_for_org(
    *, session: Session, organization_id: uuid.UUID, page: int, page_size: int
) -> tuple[list[Cluster], int]:
    query = select(Cluster).where(Cluster.organization_id == organization_id)
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    clusters = session.scalars(
        query.order_by(Cluster.created_at, Cluster.id).offset((page - 1) * page_size).limit(page_size)
    ).all()
    return list(clusters), total


def deployment_counts(*, session: Session, cluster_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, int]]:
    """For each cluster, how many deployments it has in each status (every status present, zeros included)."""
    counts = {cluster_id: {status.value: 0 for status in Status} for cluster_id in cluster_ids}
    if cluster_ids:
        rows = session.execute(
            select(Deployment.cluster_id, Deployment.status, func.count())
            .where(Deployment.cluster_id.in_(cluster_ids))
            .group_by(Deployment.cluster_id, Deployment.status)
        )
        for cluster_id, status, count in rows:
            counts[cluster_id][status] = count
    return counts


def update(
    *,
    session: Session,
    cluster_id: uuid.UUID,
    actor_id: uuid.UUID,
    name: str | None = None,
    cpu_millis: int | None = None,
    ram_mb: int | None = None,
    gpu: int | None = None,
    runtime: str | None = None,
) -> Cluster:
    """Rename, resize and/or change the runtime. Never below what is allocated (409), nor a new runtime while
    a deployment runs (409: its run belongs to the old one); growing asks for a scheduling pass. Each change is
    recorded in the cluster's history and the organization's audit log."""
    cluster = lock_cluster(session, cluster_id)
    changes = []  # (type, message) for both records
    switched = runtime is not None and runtime != cluster.runtime
    if switched:
        running = session.scalar(
            select(func.count()).where(Deployment.cluster_id == cluster_id, Deployment.status == Status.RUNNING.value)
        )
        if running:
            session.rollback()
            raise Conflict(
                f"Cluster {cluster.name} has {running} running deployments: its runtime can change only while "
                "none runs (cancel them, or wait for them to end)."
            )
        changes.append(("runtime_changed", f"Runtime changed from {cluster.runtime} to {runtime}."))
        holder = session.scalar(select(ClusterAgent.name).where(ClusterAgent.cluster_id == cluster.id))
        if cluster.runtime == AGENT and holder is not None:
            # Its next sync is refused: the agent has lost the cluster.
            changes.append(("agent_lost", f"Agent {holder} lost the cluster: its runtime is now {runtime}."))
        cluster.runtime = runtime
    if name is not None and name != cluster.name:
        if session.scalar(
            select(Cluster.id).where(Cluster.organization_id == cluster.organization_id, Cluster.name == name)
        ):
            session.rollback()
            raise _name_taken(name)
        changes.append(("cluster_renamed", f"Cluster {cluster.name} renamed to {name}."))
        cluster.name = name
    old = cluster.capacity
    new = Resources(
        old.cpu_millis if cpu_millis is None else cpu_millis,
        old.ram_mb if ram_mb is None else ram_mb,
        old.gpu if gpu is None else gpu,
    )
    allocated = cluster.allocated
    too_small = [
        f"{describe(name, want)} is below the {describe(name, held)} allocated"
        for name, held, want in allocated.shortfalls(new)
    ]
    if too_small:
        session.rollback()
        raise Conflict(f"Cannot shrink cluster {cluster.name}: {'; '.join(too_small)}. Free resources first.")
    cluster.cpu_capacity_millis, cluster.ram_capacity_mb, cluster.gpu_capacity = new.as_tuple()
    if new != old:
        changes.append(
            (
                "capacity_changed",
                f"Cluster {cluster.name} resized from {audit.describe_capacity(old)} "
                f"to {audit.describe_capacity(new)}.",
            )
        )
    for kind, message in changes:
        events.record(session, cluster_id=cluster.id, kind=kind, message=message, actor_id=actor_id)
        if kind in AUDIT_TYPES:
            audit.record(
                session,
                organization_id=cluster.organization_id,
                kind=AUDIT_TYPES[kind],
                message=message,
                actor_id=actor_id,
                cluster_id=cluster.id,
            )
    # A new runtime changes what may start (agent clusters admit only with a live agent): a pass too.
    grown = switched or any(more > was for more, was in zip(new.as_tuple(), old.as_tuple(), strict=True))
    if grown:
        accounting.note_change(session, cluster.id)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise _name_taken(name) from None
    if grown:
        request_pass(cluster.id, highest_waiting_priority(session, cluster.id))
    return cluster


def delete(*, session: Session, cluster_id: uuid.UUID, actor_id: uuid.UUID) -> None:
    """Delete a cluster with nothing queued or running on it (409 otherwise); its history goes with it, its
    entries in the organization's audit log stay."""
    cluster = lock_cluster(session, cluster_id)
    active = session.scalar(
        select(func.count()).where(
            Deployment.cluster_id == cluster_id,
            Deployment.status.in_([Status.QUEUED.value, Status.RUNNING.value]),
        )
    )
    if active:
        session.rollback()
        raise Conflict(f"Cluster {cluster.name} still has {active} queued or running deployments: cancel them first.")
    audit.record(
        session,
        organization_id=cluster.organization_id,
        kind="cluster_deleted",
        message=f"Deleted cluster {cluster.name} ({audit.describe_capacity(cluster.capacity)}).",
        actor_id=actor_id,
        cluster_id=cluster.id,
    )
    session.delete(cluster)
    session.commit()
