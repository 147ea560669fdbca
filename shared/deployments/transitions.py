"""The deployment state machine: every status change, its bookkeeping and its event.

    queued  -> running (start) | cancelled | failed (a dependency failed)
    running -> completed | failed | queued (retry after a failure, or preempted) | cancelled

Callers hold the cluster row lock (accounting.lock_cluster) and commit. Each change is flushed as
`UPDATE ... WHERE version = <read>` (the mapper's version column): a writer holding a stale copy
changes nothing and gets StaleDataError instead.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from shared.clusters import accounting
from shared.clusters.models import AGENT, Cluster
from shared.deployments.models import Deployment, DeploymentEvent, RuntimeState, Status, StopIntent
from shared.errors import Conflict
from shared.timeutil import utcnow

ALLOWED = {
    Status.QUEUED: {Status.RUNNING, Status.CANCELLED, Status.FAILED},
    Status.RUNNING: {Status.COMPLETED, Status.FAILED, Status.QUEUED, Status.CANCELLED},
    Status.COMPLETED: set(),
    Status.FAILED: set(),
    Status.CANCELLED: set(),
}

SCHEDULER = "scheduler"


class IllegalTransition(Conflict):
    """The deployment's current status does not allow this change (409)."""


def require_status(deployment: Deployment, action: str, *allowed: Status) -> None:
    if Status(deployment.status) not in allowed:
        wanted = " or ".join(status.value for status in allowed)
        raise IllegalTransition(
            f"Deployment {deployment.name} is {deployment.status}; only a {wanted} deployment can be {action}."
        )


def _change(
    session: Session, deployment: Deployment, to: Status, *, event: str, message: str, actor: str, **fields
) -> None:
    current = Status(deployment.status)
    if to not in ALLOWED[current]:
        raise IllegalTransition(f"Deployment {deployment.name} is {current.value}; it cannot become {to.value}.")
    deployment.status = to.value
    for name, value in fields.items():
        setattr(deployment, name, value)
    session.add(
        DeploymentEvent(
            deployment_id=deployment.id,
            type=event,
            message=message,
            actor=actor,
            from_status=current.value,
            to_status=to.value,
        )
    )
    session.flush()


def record(session: Session, deployment: Deployment, *, event: str, message: str, actor: str) -> None:
    """An event that is not a status change (submission, a note from the scheduler)."""
    session.add(
        DeploymentEvent(
            deployment_id=deployment.id, type=event, message=message, actor=actor, to_status=deployment.status
        )
    )


def start(session: Session, cluster: Cluster, deployment: Deployment, actor: str = SCHEDULER) -> None:
    """Allocate and run. A restart after a preemption resumes and costs no attempt."""
    require_status(deployment, "started", Status.QUEUED)
    accounting.allocate(session, cluster, deployment.id, deployment.resources)
    now = utcnow()
    resumed = deployment.resumes_preempted
    attempts = deployment.attempts if resumed else deployment.attempts + 1
    runs = f"attempt {attempts} of {deployment.max_retries + 1}"
    _change(
        session,
        deployment,
        Status.RUNNING,
        event="resumed" if resumed else "started",
        message=(
            f"Resumed on {cluster.name} after a preemption ({runs})."
            if resumed
            else f"Started on {cluster.name} ({runs})."
        ),
        actor=actor,
        attempts=attempts,
        resumes_preempted=False,
        reason=None,
        started_at=now,
        completes_at=(
            now + timedelta(seconds=deployment.run_seconds)
            if deployment.run_seconds and cluster.runtime != AGENT
            else None
        ),
        generation=deployment.generation + 1,
        **_new_run(cluster),
    )


def _new_run(cluster: Cluster) -> dict:
    """The runtime fields of a run just started: on an agent cluster, `pending` until an agent reports it."""
    if cluster.runtime != AGENT:
        return {}
    return {
        "runtime_state": RuntimeState.PENDING.value,
        "runtime_agent": None,
        "runtime_container": None,
        "runtime_started_at": None,
        "runtime_exit_code": None,
        "runtime_message": None,
        "stop_intent": None,
        "stop_reason": None,
    }


def request_stop(session: Session, deployment: Deployment, intent: StopIntent, reason: str, actor: str) -> bool:
    """First phase of a stop on an agent cluster: mark the run `stopping` (status stays running, resources
    stay allocated) so that the agent stops it; its `stopped` report ends it (`stopped`). False if it
    already was stopping for that intent (nothing changed); a cancel overrides a preemption in progress."""
    require_status(deployment, "stopped", Status.RUNNING)
    if deployment.runtime_state == RuntimeState.STOPPING.value and deployment.stop_intent in (
        intent.value,
        StopIntent.CANCEL.value,
    ):
        return False
    deployment.runtime_state = RuntimeState.STOPPING.value
    deployment.stop_intent = intent.value
    deployment.stop_reason = reason
    record(session, deployment, event="stopping", message=f"Stopping: {reason}", actor=actor)
    session.flush()
    return True


def stopped(session: Session, cluster: Cluster, deployment: Deployment, actor: str) -> None:
    """Second phase: the agent reports a `stopping` run stopped; its resources are freed and it becomes what
    the stop was for: cancelled, or queued again after a preemption (no attempt counted when it resumes)."""
    require_status(deployment, "stopped", Status.RUNNING)
    accounting.release(session, cluster, deployment.id)
    reason = deployment.stop_reason or "Stopped."
    if deployment.stop_intent == StopIntent.PREEMPT.value:
        _change(
            session,
            deployment,
            Status.QUEUED,
            event="preempted",
            message=f"{reason} Stopped by {actor}.",
            actor=actor,
            preemptions=deployment.preemptions + 1,
            resumes_preempted=True,
            reason=reason,
            completes_at=None,
        )
        return
    _change(
        session,
        deployment,
        Status.CANCELLED,
        event="cancelled",
        message=f"{reason} Stopped by {actor}.",
        actor=actor,
        reason=reason,
        finished_at=utcnow(),
        completes_at=None,
    )


def complete(
    session: Session, cluster: Cluster, deployment: Deployment, actor: str, message: str | None = None
) -> None:
    require_status(deployment, "completed", Status.RUNNING)
    accounting.release(session, cluster, deployment.id)
    _change(
        session,
        deployment,
        Status.COMPLETED,
        event="completed",
        message=message or f"Completed by {actor}.",
        actor=actor,
        reason=None,
        finished_at=utcnow(),
        completes_at=None,
    )


def fail(session: Session, cluster: Cluster, deployment: Deployment, actor: str, why: str | None = None) -> None:
    """A running deployment failed: requeued while attempts <= max_retries, else failed for good."""
    require_status(deployment, "failed", Status.RUNNING)
    accounting.release(session, cluster, deployment.id)
    why = why or "reported failed"
    if deployment.attempts <= deployment.max_retries:
        _change(
            session,
            deployment,
            Status.QUEUED,
            event="retrying",
            message=f"Failed ({why}, {actor}); requeued for retry {deployment.attempts} of {deployment.max_retries}.",
            actor=actor,
            reason=f"Retrying after a failure: {why}.",
            completes_at=None,
        )
    else:
        tried = f"{deployment.attempts} attempt" + ("" if deployment.attempts == 1 else "s")
        _change(
            session,
            deployment,
            Status.FAILED,
            event="failed",
            message=f"Failed ({why}, {actor}) after {tried}; no retries left.",
            actor=actor,
            reason=f"Failed after {tried}: {why}.",
            finished_at=utcnow(),
            completes_at=None,
        )


def cancel(session: Session, cluster: Cluster, deployment: Deployment, actor: str) -> None:
    require_status(deployment, "cancelled", Status.QUEUED, Status.RUNNING)
    accounting.release(session, cluster, deployment.id)
    _change(
        session,
        deployment,
        Status.CANCELLED,
        event="cancelled",
        message=f"Cancelled by {actor}.",
        actor=actor,
        reason=f"Cancelled by {actor}.",
        finished_at=utcnow(),
        completes_at=None,
    )


def preempt(
    session: Session, cluster: Cluster, victim: Deployment, beneficiary: Deployment, actor: str = SCHEDULER
) -> None:
    """Send a running deployment back to the queue to make room for a higher-priority one."""
    require_status(victim, "preempted", Status.RUNNING)
    accounting.release(session, cluster, victim.id)
    _change(
        session,
        victim,
        Status.QUEUED,
        event="preempted",
        message=(
            f"Preempted to make room for {beneficiary.name} ({beneficiary.id}), "
            f"priority {beneficiary.priority} over {victim.priority}."
        ),
        actor=actor,
        preemptions=victim.preemptions + 1,
        resumes_preempted=True,
        reason=f"Preempted by {beneficiary.name} (priority {beneficiary.priority}); waiting to resume.",
        completes_at=None,
    )


def fail_because(session: Session, deployment: Deployment, why: str, actor: str = SCHEDULER) -> None:
    """A queued deployment can never run (a dependency ended failed or cancelled): `why` says which."""
    require_status(deployment, "failed", Status.QUEUED)
    _change(
        session,
        deployment,
        Status.FAILED,
        event="failed",
        message=f"Failed: {why}.",
        actor=actor,
        reason=f"Failed because {why}.",
        finished_at=utcnow(),
    )
