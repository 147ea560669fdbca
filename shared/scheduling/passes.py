"""Scheduling passes for real: the pure plan, applied to PostgreSQL under a per-cluster lock.

A pass holds the cluster's Redis lock (so two workers do not compute the same cluster at once) and,
inside one transaction, the cluster's row lock (SELECT ... FOR NO KEY UPDATE): that row lock, the
relative counter updates, the version-checked status changes and the CHECK constraints are what keep
the cluster within capacity, even if the Redis lock expires mid-pass. It reads the cluster's queued and
running deployments as plain rows and applies its plan in a handful of statements, however many
deployments it starts (transitions.start_many, accounting.allocate_many).

A start that needs preemption is handed to its own task (`scheduler.preempt`): the pass applies its
plan up to that start, then the preemption re-checks the victims under the lock, moves them back to
the queue, starts the deployment it makes room for, and asks for the next pass.

On a cluster whose runtime is `agent` (RUNTIME.md) a preemption is two-phase instead: the pass marks the
victims `stopping` for the deployment they make room for (`stop_for`), which stays queued, nominated,
until the agent reports them stopped (that report frees their room and asks for the next pass). Each
pass gives the plan the runs that are stopping and, from `stop_for`, the nominations still open; and it
starts nothing while the cluster has no live agent.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from dataclasses import dataclass, field

import redis
from redis.exceptions import LockError, LockNotOwnedError
from sqlalchemy import BigInteger, Text, bindparam, cast, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY, TEXT, UUID
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from shared.agents import service as agents
from shared.clusters import accounting
from shared.clusters.accounting import lock_cluster
from shared.clusters.models import AGENT
from shared.config import get_settings
from shared.deployments import transitions
from shared.deployments.models import Deployment, DeploymentDependency, RuntimeState, Status, StopIntent
from shared.deployments.service import highest_waiting_priority
from shared.redis import get_redis
from shared.resources import Resources
from shared.scheduling.algorithm import Candidate, DependencyState, Running, plan_pass
from shared.scheduling.requests import pending_key
from shared.timeutil import utcnow

log = logging.getLogger(__name__)

LOCK_PREFIX = "hv:lock:cluster:"


class LockBusy(Exception):
    """Another worker holds the cluster's lock: try again shortly (a transient condition)."""


@dataclass
class PassOutcome:
    started: list[uuid.UUID] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)
    waiting: int = 0
    # (deployment to start, victims to preempt for it): handed to scheduler.preempt
    handoff: tuple[uuid.UUID, tuple[uuid.UUID, ...]] | None = None
    # Other clusters whose queued deployments depend on one that failed here: they need a pass too.
    follow_up: dict[uuid.UUID, int] = field(default_factory=dict)
    # Started deployments with a run_seconds timer: (id, seconds)
    timers: list[tuple[uuid.UUID, float]] = field(default_factory=list)


def cluster_lock(cluster_id: uuid.UUID | str, client: redis.Redis | None = None) -> redis.lock.Lock:
    """The per-cluster Redis lock: expires on its own, released only by its owner."""
    client = client or get_redis(get_settings().redis_url)
    return client.lock(
        f"{LOCK_PREFIX}{cluster_id}", timeout=get_settings().pass_lock_seconds, blocking_timeout=1, thread_local=False
    )


@contextlib.contextmanager
def holding(cluster_id: uuid.UUID | str):
    """Hold the cluster's lock for the block, or raise LockBusy. Losing it midway is logged, not fatal."""
    lock = cluster_lock(cluster_id)
    if not lock.acquire():
        raise LockBusy(f"cluster {cluster_id} is being scheduled by another worker")
    try:
        yield lock
    finally:
        try:
            lock.release()
        except LockNotOwnedError:
            log.warning("the lock on cluster %s expired during the pass; the database kept it consistent", cluster_id)


def keep(lock) -> None:
    """Extend the lock to its full lifetime again, if still ours (long passes call this between steps)."""
    if lock is None:
        return
    try:
        lock.reacquire()
    except LockError:
        log.warning("lost the lock on %s mid-pass; carrying on under the database's row lock", lock.name)


def _dependency_states(session: Session, cluster_id: uuid.UUID, queued: list) -> tuple[dict, dict[str, list[str]]]:
    ids = {d.id for d in queued}
    # Joined on the cluster rather than sent as 2,000 ids; a deployment queued since the pass read its
    # rows may show up here, and is left for the next pass.
    edges = (
        session.execute(
            select(cast(DeploymentDependency.deployment_id, Text), cast(DeploymentDependency.depends_on_id, Text))
            .join(Deployment, Deployment.id == DeploymentDependency.deployment_id)
            .where(Deployment.cluster_id == cluster_id, Deployment.status == Status.QUEUED.value)
        ).all()
        if ids
        else []
    )
    depends_on: dict[str, list[str]] = {}
    for deployment_id, dependency_id in edges:
        if deployment_id in ids:
            depends_on.setdefault(deployment_id, []).append(dependency_id)
    needed = {dependency_id for dependencies in depends_on.values() for dependency_id in dependencies}
    states = {}
    if needed:
        rows = session.execute(
            select(Deployment.id, Deployment.name, Deployment.status).where(
                Deployment.id.in_([uuid.UUID(i) for i in needed])
            )
        )
        states = {str(i): DependencyState(name, status) for i, name, status in rows}
    return states, depends_on


_SET_REASONS = text(
    "UPDATE deployments AS d SET reason = v.reason "
    "FROM unnest(:ids, :reasons) AS v(id, reason) "
    "WHERE d.id = v.id AND d.status = 'queued' AND d.reason IS DISTINCT FROM v.reason"
).bindparams(bindparam("ids", type_=ARRAY(UUID(as_uuid=False))), bindparam("reasons", type_=ARRAY(TEXT)))

# What a pass reads of each queued or running deployment: plain rows, not ORM objects (no identity map,
# no change tracking); ids as text and times as epoch microseconds, which is all the plan wants of
# them. The version is what its status changes are guarded by.
_LIGHT_COLUMNS = (
    cast(Deployment.id, Text).label("id"),
    Deployment.name,
    Deployment.status,
    Deployment.priority,
    Deployment.cpu_millis,
    Deployment.ram_mb,
    Deployment.gpu,
    cast(func.extract("epoch", Deployment.created_at) * 1_000_000, BigInteger).label("created"),
    cast(func.coalesce(func.extract("epoch", Deployment.started_at) * 1_000_000, 0), BigInteger).label("started"),
    Deployment.version,
    Deployment.attempts,
    Deployment.max_retries,
    Deployment.resumes_preempted,
    Deployment.run_seconds,
    Deployment.runtime_state,
    cast(Deployment.stop_for, Text).label("stop_for"),
)


def _resources(row) -> Resources:
    return Resources(row.cpu_millis, row.ram_mb, row.gpu)


def read_cluster_state(session: Session, cluster_id: uuid.UUID) -> tuple[list, dict, dict[str, list[str]]]:
    """What a pass reads (read only, no lock taken here): the cluster's queued and running deployments as
    plain rows, the states of the queued ones' dependencies, and those dependencies by deployment id."""
    rows = (
        session.connection()
        .execute(
            select(*_LIGHT_COLUMNS).where(
                Deployment.cluster_id == cluster_id,
                Deployment.status.in_([Status.QUEUED.value, Status.RUNNING.value]),
            )
        )
        .all()
    )
    states, depends_on = _dependency_states(session, cluster_id, [d for d in rows if d.status == Status.QUEUED.value])
    return rows, states, depends_on


def apply_pass(session: Session, cluster_id: uuid.UUID, lock=None) -> PassOutcome:
    """Plan and apply one pass over the cluster, in one transaction, with the cluster row locked.

    The plan is applied set-wise: its failures in one guarded UPDATE and one event INSERT, its starts
    (up to the first that needs a preemption) in one ledger INSERT, one counter update, one guarded
    UPDATE and one event INSERT, and the reasons of everything still waiting in one UPDATE.
    """
    outcome = PassOutcome()
    cluster = lock_cluster(session, cluster_id)
    seen = accounting.changes_seen(session, cluster_id)
    rows, states, depends_on = read_cluster_state(session, cluster_id)
    by_id = {d.id: d for d in rows}
    running = [d for d in rows if d.status == Status.RUNNING.value]
    queued = [d for d in rows if d.status == Status.QUEUED.value]
    plan = plan_pass(
        cluster.capacity,
        [Running(d.id, d.name, d.priority, _resources(d), d.started) for d in running],
        [
            Candidate(d.id, d.name, d.priority, _resources(d), d.created, tuple(depends_on.get(d.id, ())))
            for d in queued
        ],
        states,
        **(two_phase_inputs(session, cluster, running) if cluster.runtime == AGENT else {}),
    )
    keep(lock)

    failures = [(by_id[failure.deployment_id], failure.reason) for failure in plan.failures]
    transitions.fail_many_because(session, failures)
    outcome.failed = [uuid.UUID(deployment.id) for deployment, _ in failures]
    starts = []
    for start in plan.starts:
        if start.victims:
            outcome.handoff = (uuid.UUID(start.deployment_id), tuple(uuid.UUID(v) for v in start.victims))
            break
        starts.append(by_id[start.deployment_id])
    transitions.start_many(session, cluster, starts)
    outcome.started = [uuid.UUID(deployment.id) for deployment in starts]
    _nominate(session, plan.nominations, by_id)
    outcome.timers = [(uuid.UUID(d.id), d.run_seconds) for d in starts if d.run_seconds]
    if plan.waiting:
        session.execute(_SET_REASONS, {"ids": list(plan.waiting), "reasons": list(plan.waiting.values())})
    outcome.waiting = len(plan.waiting)
    if outcome.failed:
        outcome.follow_up = _clusters_depending_on(session, outcome.failed, exclude=cluster_id)
    cluster.last_pass_at = utcnow()
    # A pass that stopped at a preemption leaves its changes unseen: the rest of its plan is still to come.
    accounting.record_pass(session, cluster_id, seen=seen, finished=outcome.handoff is None)
    session.commit()
    accounting.mark_for_pass(session, outcome.follow_up)
    return outcome


def two_phase_inputs(session: Session, cluster, running: list) -> dict:
    """What plan_pass needs on an agent cluster: runs still stopping, open nominations, paused admissions."""
    stopping = [d.id for d in running if d.runtime_state == RuntimeState.STOPPING.value]
    nominations: dict[str, list[str]] = {}
    for d in running:
        if d.runtime_state == RuntimeState.STOPPING.value and d.stop_for is not None:
            nominations.setdefault(d.stop_for, []).append(d.id)
    return {
        "two_phase": True,
        "stopping": stopping,
        "nominations": nominations,
        "admissions_paused": agents.admissions_paused_reason(session, cluster),
    }


def _nominate(session: Session, nominations, by_id: dict) -> None:
    """Mark each nomination's victims stopping for it. Under the row lock nothing else changes them; the
    version check of each UPDATE (and the guard below) makes a stale read fail the pass rather than act."""
    if not nominations:
        return
    ids = [uuid.UUID(victim) for nomination in nominations for victim in nomination.victims]
    victims = {
        str(d.id): d
        for d in session.scalars(
            select(Deployment).where(Deployment.id.in_(ids)).execution_options(populate_existing=True)
        )
    }
    for nomination in nominations:
        beneficiary = by_id[nomination.deployment_id]
        for victim_id in nomination.victims:
            victim = victims.get(victim_id)
            if victim is None or victim.version != by_id[victim_id].version:
                raise StaleDataError(f"deployment {victim_id} changed since the pass read it")
            reason = (
                f"Preempted to make room for {beneficiary.name} ({beneficiary.id}), "
                f"priority {beneficiary.priority} over {victim.priority}."
            )
            transitions.request_stop(
                session, victim, StopIntent.PREEMPT, reason, transitions.SCHEDULER, stop_for=beneficiary.id
            )


def _clusters_depending_on(session: Session, deployment_ids, exclude: uuid.UUID) -> dict[uuid.UUID, int]:
    """Other clusters with queued deployments depending on these, with the highest priority waiting there."""
    cluster_ids = session.scalars(
        select(Deployment.cluster_id)
        .join(DeploymentDependency, DeploymentDependency.deployment_id == Deployment.id)
        .where(
            DeploymentDependency.depends_on_id.in_(deployment_ids),
            Deployment.status == Status.QUEUED.value,
            Deployment.cluster_id != exclude,
        )
        .distinct()
    ).all()
    return {cluster_id: highest_waiting_priority(session, cluster_id) for cluster_id in cluster_ids}


def preempt_for(
    session: Session, cluster_id: uuid.UUID, beneficiary_id: uuid.UUID, victim_ids: tuple[uuid.UUID, ...]
) -> bool:
    """Apply one preemption chosen by a pass, if it still holds; False (and nothing changed) if not.

    Under the row lock it checks again: the beneficiary still queued with its dependencies completed,
    every victim still running on this cluster with a strictly lower priority, and the room enough.
    """
    cluster = lock_cluster(session, cluster_id)
    beneficiary = session.scalar(
        select(Deployment).where(Deployment.id == beneficiary_id).execution_options(populate_existing=True)
    )
    victims = session.scalars(
        select(Deployment).where(Deployment.id.in_(victim_ids)).execution_options(populate_existing=True)
    ).all()
    unmet = session.scalar(
        select(Deployment.id)
        .join(DeploymentDependency, DeploymentDependency.depends_on_id == Deployment.id)
        .where(DeploymentDependency.deployment_id == beneficiary_id, Deployment.status != Status.COMPLETED.value)
        .limit(1)
    )
    valid = (
        beneficiary is not None
        and beneficiary.status == Status.QUEUED.value
        and beneficiary.cluster_id == cluster_id
        and unmet is None
        and len(victims) == len(victim_ids)
        and all(
            v.status == Status.RUNNING.value and v.cluster_id == cluster_id and v.priority < beneficiary.priority
            for v in victims
        )
        and beneficiary.resources.fits_in(cluster.available + sum((v.resources for v in victims), Resources()))
    )
    if not valid:
        session.rollback()
        return False
    for victim in sorted(victims, key=lambda v: v.id):
        transitions.preempt(session, cluster, victim, beneficiary)
    transitions.start(session, cluster, beneficiary)
    cluster.last_pass_at = utcnow()
    # The rest of the queue still needs a pass: a change.
    accounting.note_change(session, cluster_id, queued_delta=len(victims) - 1)
    session.commit()
    return True


def clear_pending(cluster_id: uuid.UUID | str) -> None:
    """From now on, a request for a pass on this cluster enqueues a pass of its own."""
    get_redis(get_settings().redis_url).delete(pending_key(cluster_id))
