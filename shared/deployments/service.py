"""Deployments as the API sees them: submit, read, list, and the user-driven transitions.

Each user action locks the cluster row, applies one transition (shared/deployments/transitions.py),
commits, and then asks for a scheduling pass: on the cluster whose resources changed, and on every
cluster where a queued deployment was waiting on this one.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from shared.clusters import accounting
from shared.clusters.accounting import lock_cluster
from shared.clusters.models import AGENT, Cluster
from shared.config import get_settings
from shared.deployments import transitions
from shared.deployments.models import (
    DEFAULT_GRACE_SECONDS,
    Deployment,
    DeploymentDependency,
    DeploymentEvent,
    Status,
    StopIntent,
)
from shared.errors import Conflict, Invalid, NotFound, QueueFull
from shared.resources import Resources, describe
from shared.scheduling.requests import request_pass
from shared.timeutil import utcnow

DEPLOYMENT_NOT_FOUND = "Deployment not found."
SCHEDULING_ORDER = (Deployment.priority.desc(), Deployment.created_at, Deployment.id)


def organization_of(*, session: Session, object_id: uuid.UUID) -> uuid.UUID | None:
    """The organization owning the deployment, or None if there is no such deployment (access scope)."""
    return session.scalar(select(Deployment.organization_id).where(Deployment.id == object_id))


def get_or_404(*, session: Session, deployment_id: uuid.UUID) -> Deployment:
    deployment = session.get(Deployment, deployment_id)
    if deployment is None:
        raise NotFound(DEPLOYMENT_NOT_FOUND)
    return deployment


def highest_waiting_priority(session: Session, cluster_id: uuid.UUID) -> int:
    """The highest priority queued on the cluster: its pass goes on that priority's Celery queue."""
    return session.scalar(
        select(func.coalesce(func.max(Deployment.priority), 0)).where(
            Deployment.cluster_id == cluster_id, Deployment.status == Status.QUEUED.value
        )
    )


def dependencies_of(*, session: Session, deployment_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[uuid.UUID]]:
    found: dict[uuid.UUID, list[uuid.UUID]] = {deployment_id: [] for deployment_id in deployment_ids}
    if deployment_ids:
        rows = session.execute(
            select(DeploymentDependency.deployment_id, DeploymentDependency.depends_on_id)
            .where(DeploymentDependency.deployment_id.in_(deployment_ids))
            .order_by(DeploymentDependency.deployment_id, DeploymentDependency.depends_on_id)
        )
        for deployment_id, depends_on_id in rows:
            found[deployment_id].append(depends_on_id)
    return found


def _never_fits(request: Resources, cluster: Cluster) -> dict[str, list[str]]:
    return {
        name: [
            f"Requests {describe(name, need)} but cluster {cluster.name} has {describe(name, has)} in all: "
            "it could never run there."
        ]
        for name, need, has in request.shortfalls(cluster.capacity)
    }


def submit(
    *,
    session: Session,
    cluster_id: uuid.UUID,
    actor_id: uuid.UUID,
    actor_name: str,
    name: str,
    image: str,
    resources: Resources,
    priority: int = 500,
    depends_on: list[uuid.UUID] | None = None,
    max_retries: int = 3,
    run_seconds: float | None = None,
    command: list[str] | None = None,
    env: dict[str, str] | None = None,
    grace_seconds: int = DEFAULT_GRACE_SECONDS,
) -> Deployment:
    """Store a queued deployment and ask for a pass. 422 if it could never fit, a dependency is unknown or
    there are too many, or it sets run_seconds on an agent cluster; 429 if the cluster's or organization's
    queue is full."""
    cluster = session.get(Cluster, cluster_id)
    if cluster is None:
        raise NotFound("Cluster not found.")
    if run_seconds is not None and cluster.runtime == AGENT:
        message = (
            f"Cluster {cluster.name} runs deployments with an agent: a deployment ends when its process exits, "
            "so run_seconds (a simulated duration) does not apply there."
        )
        raise Invalid(message, errors={"json": {"run_seconds": [message]}})
    errors = _never_fits(resources, cluster)
    if errors:
        first = next(iter(errors.values()))[0]
        raise Invalid(first, errors={"json": errors})
    wanted = list(dict.fromkeys(depends_on or []))
    most = get_settings().max_dependencies_per_deployment
    if len(wanted) > most:
        message = f"{len(wanted)} dependencies; a deployment may have at most {most} (MAX_DEPENDENCIES_PER_DEPLOYMENT)."
        raise Invalid(message, errors={"json": {"depends_on": [message]}})
    if wanted:
        found = set(
            session.scalars(
                select(Deployment.id).where(
                    Deployment.id.in_(wanted), Deployment.organization_id == cluster.organization_id
                )
            )
        )
        unknown = [str(dependency) for dependency in wanted if dependency not in found]
        if unknown:
            message = f"No deployment {', '.join(unknown)} in this organization to depend on."
            raise Invalid(message, errors={"json": {"depends_on": [message]}})
    deployment = Deployment(
        id=uuid.uuid4(),
        organization_id=cluster.organization_id,
        cluster_id=cluster.id,
        name=name,
        image=image,
        cpu_millis=resources.cpu_millis,
        ram_mb=resources.ram_mb,
        gpu=resources.gpu,
        priority=priority,
        status=Status.QUEUED.value,
        reason="Waiting for the scheduler's next pass.",
        attempts=0,
        max_retries=max_retries,
        preemptions=0,
        resumes_preempted=False,
        run_seconds=run_seconds,
        command=command,
        env=env or {},
        grace_seconds=grace_seconds,
        generation=0,
        created_by=actor_id,
    )
    session.add(deployment)
    session.flush()
    session.add_all(DeploymentDependency(deployment_id=deployment.id, depends_on_id=d) for d in wanted)
    transitions.record(
        session,
        deployment,
        event="submitted",
        message=f"Submitted by {actor_name} to cluster {cluster.name}, priority {priority}.",
        actor=actor_name,
    )
    try:
        accounting.reserve_queue(session, cluster, 1)
    except QueueFull:
        session.rollback()
        raise
    session.commit()
    request_pass(cluster.id, highest_waiting_priority(session, cluster.id))
    return deployment


def list_for_cluster(
    *, session: Session, cluster_id: uuid.UUID, status: Status | None, page: int, page_size: int
) -> tuple[list[Deployment], int]:
    """A page of the cluster's deployments in scheduling order (priority high to low, then oldest first)."""
    conditions = [Deployment.cluster_id == cluster_id]
    if status is not None:
        conditions.append(Deployment.status == status.value)
    total = session.scalar(select(func.count()).select_from(Deployment).where(*conditions))
    deployments = session.scalars(
        select(Deployment)
        .where(*conditions)
        .order_by(*SCHEDULING_ORDER)
        .offset((page - 1) * page_size)
        .limit(page_size)
    ).all()
    return list(deployments), total


def events(*, session: Session, deployment_id: uuid.UUID) -> list[DeploymentEvent]:
    return list(
        session.scalars(
            select(DeploymentEvent).where(DeploymentEvent.deployment_id == deployment_id).order_by(DeploymentEvent.id)
        )
    )


def _clusters_waiting_on(session: Session, deployment_id: uuid.UUID) -> dict[uuid.UUID, int]:
    """Clusters with queued deployments that depend on this one, with the highest priority waiting there."""
    cluster_ids = session.scalars(
        select(Deployment.cluster_id)
        .join(DeploymentDependency, DeploymentDependency.deployment_id == Deployment.id)
        .where(DeploymentDependency.depends_on_id == deployment_id, Deployment.status == Status.QUEUED.value)
        .distinct()
    ).all()
    return {cluster_id: highest_waiting_priority(session, cluster_id) for cluster_id in cluster_ids}


def _act(
    session: Session,
    deployment_id: uuid.UUID,
    transition: Callable[[Session, Cluster, Deployment], None],
) -> Deployment:
    """Lock the deployment's cluster, apply `transition`, commit, and request the passes it calls for."""
    cluster_id = session.scalar(select(Deployment.cluster_id).where(Deployment.id == deployment_id))
    if cluster_id is None:
        raise NotFound(DEPLOYMENT_NOT_FOUND)
    try:
        cluster = lock_cluster(session, cluster_id)
        deployment = session.scalar(
            select(Deployment).where(Deployment.id == deployment_id).execution_options(populate_existing=True)
        )
        was_queued = deployment.status == Status.QUEUED.value
        transition(session, cluster, deployment)
        waiting = _clusters_waiting_on(session, deployment.id) if Status(deployment.status).terminal else {}
        waiting[cluster.id] = highest_waiting_priority(session, cluster.id)
        accounting.note_change(session, cluster.id, (deployment.status == Status.QUEUED.value) - was_queued)
        session.commit()
    except StaleDataError:
        session.rollback()
        raise Conflict("The deployment changed while this request was handled; read it again and retry.") from None
    except Exception:
        session.rollback()
        raise
    # Its own cluster's change was stamped in the transaction; the others' now, after the commit, so that no
    # transaction locks two clusters' rows. (A crash in between leaves them to the reconciler's backstop for
    # clusters with queued work and no recent pass.)
    accounting.mark_for_pass(session, [other for other in waiting if other != cluster.id])
    for cluster_id, priority in waiting.items():
        request_pass(cluster_id, priority)
    return deployment


def _by_users(cluster: Cluster, deployment: Deployment, action: str) -> None:
    """On an agent cluster the process's exit decides how a run ends, not a user (409)."""
    if cluster.runtime == AGENT:
        raise Conflict(
            f"Deployment {deployment.name} runs on agent cluster {cluster.name}: it ends when its process exits, "
            f"so it cannot be {action} by hand. Cancel it to stop it."
        )


def complete(*, session: Session, deployment_id: uuid.UUID, actor: str) -> Deployment:
    """Mark a running deployment completed and free its resources (409 on an agent cluster)."""

    def completing(s: Session, cluster: Cluster, deployment: Deployment) -> None:
        _by_users(cluster, deployment, "completed")
        transitions.complete(s, cluster, deployment, actor)

    return _act(session, deployment_id, completing)


def fail(*, session: Session, deployment_id: uuid.UUID, actor: str, reason: str | None = None) -> Deployment:
    """Report a running deployment failed: it is retried while it has retries left (409 on an agent cluster)."""

    def failing(s: Session, cluster: Cluster, deployment: Deployment) -> None:
        _by_users(cluster, deployment, "failed")
        transitions.fail(s, cluster, deployment, actor, reason)

    return _act(session, deployment_id, failing)


def cancel(*, session: Session, deployment_id: uuid.UUID, actor: str) -> Deployment:
    """Cancel a queued or running deployment (freeing its resources if it ran). A running one on an agent
    cluster is stopped first: it is `stopping` until the agent reports it stopped, then `cancelled`."""

    def cancelling(s: Session, cluster: Cluster, deployment: Deployment) -> None:
        if cluster.runtime == AGENT and deployment.status == Status.RUNNING.value:
            transitions.request_stop(s, deployment, StopIntent.CANCEL, f"Cancelled by {actor}.", actor)
        else:
            transitions.cancel(s, cluster, deployment, actor)

    return _act(session, deployment_id, cancelling)


TIMER = "run_seconds timer"


class NotDue(Conflict):
    """A run_seconds completion arrived early (clock skew, an early retry)."""

    def __init__(self, remaining_seconds: float) -> None:
        super().__init__(f"Not due for another {remaining_seconds:.1f} s.")
        self.remaining_seconds = remaining_seconds


def complete_if_due(*, session: Session, deployment_id: uuid.UUID) -> tuple[str, float | None]:
    """Complete a running deployment whose run_seconds are up. Returns what happened and, if it is not
    due yet, how many seconds remain. Idempotent: a second call finds it completed and does nothing."""
    deployment = session.get(Deployment, deployment_id)
    if deployment is None or deployment.status != Status.RUNNING.value or deployment.completes_at is None:
        return "not running", None

    def when_due(s: Session, cluster: Cluster, current: Deployment) -> None:
        if current.status == Status.RUNNING.value and current.completes_at and current.completes_at > utcnow():
            raise NotDue((current.completes_at - utcnow()).total_seconds())
        transitions.complete(
            s, cluster, current, TIMER, message=f"Completed: its run_seconds ({current.run_seconds:g}) elapsed."
        )

    try:
        _act(session, deployment_id, when_due)
    except NotDue as early:
        return "not due", early.remaining_seconds
    except transitions.IllegalTransition:
        return "not running", None
    return "completed", None
