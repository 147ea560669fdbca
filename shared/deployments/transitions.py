"""The deployment state machine: every status change, its bookkeeping and its event.

    queued  -> running (start) | cancelled | failed (a dependency failed)
    running -> completed | failed | queued (retry after a failure, or preempted) | cancelled

Callers hold the cluster row lock (accounting.lock_cluster) and commit. Each change is flushed as
`UPDATE ... WHERE version = <read>` (the mapper's version column): a writer holding a stale copy
changes nothing and gets StaleDataError instead.

A pass changes many deployments at once (`start_many`, `fail_many_because`): one UPDATE ... FROM
unnest(ids, versions) RETURNING for all of them, guarded by the versions the pass read exactly as the
mapper guards one, and one INSERT for their events; the rows they take are plain rows (`Pending`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import String, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, TEXT
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from shared.clusters import accounting
from shared.clusters.models import AGENT, Cluster
from shared.db import array_literal
from shared.deployments.models import Deployment, DeploymentEvent, RuntimeState, Status, StopIntent
from shared.errors import Conflict
from shared.resources import Resources
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


def record_many(
    session: Session, ids: Sequence[uuid.UUID], *, event: str, messages: list[str], actor: str, status: Status
) -> None:
    """Events that are not status changes (submissions), one per deployment, in one INSERT."""
    _events(session, list(ids), [event] * len(ids), messages, actor, None, status)


def record(session: Session, deployment: Deployment, *, event: str, message: str, actor: str) -> None:
    """An event that is not a status change (submission, a note from the scheduler)."""
    session.add(
        DeploymentEvent(
            deployment_id=deployment.id, type=event, message=message, actor=actor, to_status=deployment.status
        )
    )


def request_stop(
    session: Session,
    deployment: Deployment,
    intent: StopIntent,
    reason: str,
    actor: str,
    stop_for: uuid.UUID | str | None = None,
) -> bool:
    """First phase of a stop on an agent cluster: mark the run `stopping` (status stays running, resources
    stay allocated) so that the agent stops it; its `stopped` report ends it (`stopped`). False if it
    already was stopping for that intent (nothing changed); a cancel overrides a preemption in progress.

    `stop_for`: the queued deployment a preemption makes room for (the pass keeps the room for it). A cancel
    that overrides a preemption keeps it: the room still goes to that deployment once the run has stopped.
    """
    require_status(deployment, "stopped", Status.RUNNING)
    if deployment.runtime_state == RuntimeState.STOPPING.value and deployment.stop_intent in (
        intent.value,
        StopIntent.CANCEL.value,
    ):
        return False
    deployment.runtime_state = RuntimeState.STOPPING.value
    deployment.stop_intent = intent.value
    deployment.stop_reason = reason
    if stop_for is not None:
        deployment.stop_for = uuid.UUID(str(stop_for))
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


class Pending(Protocol):
    """What a set-based change reads of each deployment: a light row of the pass, or a Deployment."""

    id: uuid.UUID
    version: int
    attempts: int
    max_retries: int
    resumes_preempted: bool
    cpu_millis: int
    ram_mb: int
    gpu: int


_EVENTS = text(
    "INSERT INTO deployment_events (deployment_id, type, message, actor, from_status, to_status) "
    "SELECT v.id, v.type, v.message, :actor, :from_status, :to_status "
    "FROM unnest(CAST(:ids AS uuid[]), :types, :messages) WITH ORDINALITY AS v(id, type, message, n) ORDER BY v.n"
).bindparams(
    bindparam("types", type_=ARRAY(TEXT)),
    bindparam("messages", type_=ARRAY(TEXT)),
    bindparam("actor", type_=String),
)

_START_SET = (
    "status = 'running', version = d.version + 1, generation = d.generation + 1, "
    "attempts = CASE WHEN d.resumes_preempted THEN d.attempts ELSE d.attempts + 1 END, "
    "resumes_preempted = false, reason = NULL, started_at = :now, "
)
_START_WHERE = (
    "FROM unnest(CAST(:ids AS uuid[]), CAST(:versions AS int[])) AS v(id, version) "
    "WHERE d.id = v.id AND d.version = v.version AND d.status = 'queued' "
    "RETURNING d.id"
)
_START = text(
    "UPDATE deployments AS d SET "
    + _START_SET
    + "completes_at = :now + make_interval(secs => d.run_seconds) "
    + _START_WHERE
)
# On an agent cluster a run ends when its process exits (no completes_at), and its runtime starts afresh:
# `pending` until an agent reports it running.
_START_ON_AGENT = text(
    "UPDATE deployments AS d SET " + _START_SET + "completes_at = NULL, runtime_state = 'pending', "
    "runtime_agent = NULL, runtime_container = NULL, runtime_started_at = NULL, runtime_exit_code = NULL, "
    "runtime_message = NULL, stop_intent = NULL, stop_reason = NULL, stop_for = NULL " + _START_WHERE
)

_FAIL_QUEUED = text(
    "UPDATE deployments AS d SET status = 'failed', version = d.version + 1, "
    "reason = 'Failed because ' || v.why || '.', finished_at = :now "
    "FROM unnest(CAST(:ids AS uuid[]), CAST(:versions AS int[]), :whys) AS v(id, version, why) "
    "WHERE d.id = v.id AND d.version = v.version AND d.status = 'queued' "
    "RETURNING d.id"
).bindparams(bindparam("whys", type_=ARRAY(TEXT)))


def _guarded(session: Session, statement, parameters: dict, expected: int) -> None:
    """Run a version-guarded UPDATE of `expected` rows; StaleDataError (nothing kept) if any changed since read."""
    changed = len(session.execute(statement, parameters).all())
    if changed != expected:
        raise StaleDataError(f"{expected - changed} of {expected} deployments changed since the pass read them")


def _events(
    session: Session,
    ids: list,
    types: list[str],
    messages: list[str],
    actor: str,
    before: Status | None,
    after: Status,
) -> None:
    session.connection().execute(
        _EVENTS,
        {
            "ids": array_literal(ids),
            "types": types,
            "messages": messages,
            "actor": actor,
            "from_status": before.value if before else None,
            "to_status": after.value,
        },
    )


def start_many(session: Session, cluster: Cluster, deployments: Sequence[Pending], actor: str = SCHEDULER) -> None:
    """Allocate and run queued deployments, all or none, in a handful of statements whatever their number.
    A restart after a preemption resumes and costs no attempt."""
    if not deployments:
        return
    accounting.allocate_many(session, cluster, [(d.id, Resources(d.cpu_millis, d.ram_mb, d.gpu)) for d in deployments])
    ids = [d.id for d in deployments]
    statement = _START_ON_AGENT if cluster.runtime == AGENT else _START
    _guarded(session, statement, {"ids": ids, "versions": [d.version for d in deployments], "now": utcnow()}, len(ids))
    types, messages = [], []
    for d in deployments:
        # The guard above proved each row is as read, so its event can be worded from what was read.
        runs = f"attempt {d.attempts if d.resumes_preempted else d.attempts + 1} of {d.max_retries + 1}"
        types.append("resumed" if d.resumes_preempted else "started")
        messages.append(
            f"Resumed on {cluster.name} after a preemption ({runs})."
            if d.resumes_preempted
            else f"Started on {cluster.name} ({runs})."
        )
    _events(session, ids, types, messages, actor, Status.QUEUED, Status.RUNNING)


def start(session: Session, cluster: Cluster, deployment: Deployment, actor: str = SCHEDULER) -> None:
    """Allocate and run one queued deployment (as `start_many`); the object is refreshed."""
    require_status(deployment, "started", Status.QUEUED)
    start_many(session, cluster, [deployment], actor)
    session.refresh(deployment)


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


def lost(session: Session, cluster: Cluster, deployment: Deployment, agent_name: str, actor: str) -> None:
    """The agent that ran it was lost: back to the queue with its resources freed. Like a preemption, its next
    start resumes it and costs no attempt (it did not fail); it starts as a new generation."""
    require_status(deployment, "requeued", Status.RUNNING)
    accounting.release(session, cluster, deployment.id)
    _change(
        session,
        deployment,
        Status.QUEUED,
        event="lost",
        message=f"Lost with agent {agent_name}; requeued (no attempt counted).",
        actor=actor,
        resumes_preempted=True,
        reason=f"Requeued: lost with agent {agent_name}.",
        completes_at=None,
    )


def fail_many_because(session: Session, failures: Sequence[tuple[Pending, str]], actor: str = SCHEDULER) -> None:
    """Queued deployments that can never run (a dependency ended failed or cancelled), each with `why`."""
    if not failures:
        return
    ids = [d.id for d, _ in failures]
    whys = [why for _, why in failures]
    versions = array_literal(d.version for d, _ in failures)
    parameters = {"ids": array_literal(ids), "versions": versions, "whys": whys, "now": utcnow()}
    _guarded(session, _FAIL_QUEUED, parameters, len(ids))
    _events(
        session, ids, ["failed"] * len(ids), [f"Failed: {why}." for why in whys], actor, Status.QUEUED, Status.FAILED
    )
