"""Agents (RUNTIME.md): their tokens, the lease on a cluster, the sync that applies their reports and answers
with what they must run and stop, and whether a cluster may admit work (a live agent).

A report changes a deployment only for its current generation and only through the transitions module, under
the cluster row lock; every report can be sent again and again (the agent repeats it until the run leaves its
lists) and changes nothing the second time.

Takeover: when another agent takes a lapsed lease, the previous holder may still be running what it was given
(cut off but alive, it keeps its runs until it fences). So every run started up to the last hand-out before the
takeover (`previous_listed_at`) stays the previous holder's until that agent is lost: it is in neither list of
the new holder, the new holder's reports about it change nothing, and `requeue_lost` requeues it once the
previous holder has been silent for AGENT_LOST_SECONDS (the agent fenced it before). A run no agent was ever
given (still `pending`, started after that hand-out) goes to the new holder at once.
"""

from __future__ import annotations

import functools
import hashlib
import math
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from shared.agents.models import AgentToken, ClusterAgent
from shared.clusters import accounting, events
from shared.clusters.accounting import lock_cluster
from shared.clusters.models import AGENT, Cluster, ClusterEvent
from shared.config import get_settings
from shared.deployments import transitions
from shared.deployments.models import (
    DEFAULT_GRACE_SECONDS,
    Deployment,
    DeploymentLog,
    RuntimeState,
    Status,
)
from shared.deployments.service import highest_waiting_priority
from shared.errors import Conflict, NotFound, Unauthorized
from shared.scheduling.requests import request_pass
from shared.timeutil import utcnow

TOKEN_PREFIX = "hva_"  # noqa: S105 (not a secret: marks agent tokens for people and secret scanners)
AGENT_TOKEN_NOT_FOUND = "Agent token not found."  # noqa: S105
TOKEN_REFUSED = "This agent token is not valid (wrong, or revoked): create a new one for the cluster."  # noqa: S105
# The most output kept per run: the latest run's last 64 KiB (the agent sends no more than that either).
LOGS_LIMIT_BYTES = 64 * 1024
MESSAGE_LIMIT = 2000
# Slack between the agent's fencing deadline plus the largest grace and the lost threshold: time for the
# agent's own tick and backoff timers to notice (two syncs) and for SIGKILL to take effect.
FENCE_SLACK_SECONDS = 5


class LeaseHeld(Conflict):
    """Another agent holds the cluster (409); Retry-After says when its lease lapses."""

    def __init__(self, message: str, errors: dict, retry_after: int) -> None:
        super().__init__(message, errors)
        self.headers = {"Retry-After": str(retry_after)}


# Tokens ------------------------------------------------------------------------------------------------------


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    *, session: Session, cluster_id: uuid.UUID, name: str, actor_id: uuid.UUID | None
) -> tuple[AgentToken, str]:
    """A new agent token for the cluster: the row and the token itself (shown once, only its hash is kept)."""
    if session.get(Cluster, cluster_id) is None:
        raise NotFound(accounting.CLUSTER_NOT_FOUND)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)  # 256 random bits
    row = AgentToken(id=uuid.uuid4(), cluster_id=cluster_id, name=name, token_hash=_digest(token), created_by=actor_id)
    session.add(row)
    events.record(
        session,
        cluster_id=cluster_id,
        kind="agent_token_created",
        message=f"Agent token {name} created.",
        actor_id=actor_id,
    )
    session.commit()
    return row, token


def list_tokens(*, session: Session, cluster_id: uuid.UUID) -> list[AgentToken]:
    """The cluster's agent tokens, oldest first (never their secret: it is not stored)."""
    return list(
        session.scalars(
            select(AgentToken).where(AgentToken.cluster_id == cluster_id).order_by(AgentToken.created_at, AgentToken.id)
        )
    )


def revoke_token(*, session: Session, cluster_id: uuid.UUID, token_id: uuid.UUID, actor_id: uuid.UUID) -> None:
    """Delete the token: the next call made with it is refused (401), and the agent holding the cluster with it
    loses the cluster."""
    row = session.get(AgentToken, token_id)
    if row is None or row.cluster_id != cluster_id:
        raise NotFound(AGENT_TOKEN_NOT_FOUND)
    record = functools.partial(events.record, session, cluster_id=cluster_id, actor_id=actor_id)
    record(kind="agent_token_revoked", message=f"Agent token {row.name} revoked.")
    holder = session.scalar(
        select(ClusterAgent.name).where(ClusterAgent.cluster_id == cluster_id, ClusterAgent.token_id == row.id)
    )
    if holder is not None:
        record(
            kind="agent_lost",
            message=(
                f"Agent {holder} lost the cluster: its token {row.name} was revoked (another agent may take "
                "over once its lease lapses)."
            ),
        )
    session.delete(row)
    session.commit()


def authenticate(*, session: Session, token: str) -> AgentToken:
    """The agent token presented, its use recorded; Unauthorized (401) if there is no such token."""
    row = session.scalar(select(AgentToken).where(AgentToken.token_hash == _digest(token)))
    if row is None:
        raise Unauthorized(TOKEN_REFUSED)
    row.last_used_at = utcnow()
    session.commit()
    return row


# Liveness ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentStatus:
    """The agent holding a cluster, as cluster objects show it."""

    name: str
    driver: str
    version: str
    last_seen_at: datetime
    live: bool

    def to_api(self) -> dict:
        return {
            "name": self.name,
            "driver": self.driver,
            "version": self.version,
            "last_seen_at": self.last_seen_at,
            "live": self.live,
        }


def _status(holder: ClusterAgent | None, now: datetime) -> AgentStatus | None:
    if holder is None:
        return None
    live = now < holder.last_seen_at + timedelta(seconds=get_settings().agent_lease_seconds)
    return AgentStatus(holder.name, holder.driver, holder.version, holder.last_seen_at, live)


def agent_statuses(*, session: Session, clusters: list[Cluster]) -> dict[uuid.UUID, AgentStatus | None]:
    """For each agent cluster, the agent that holds (or last held) it, or None if none ever synced."""
    ids = [cluster.id for cluster in clusters if cluster.runtime == AGENT]
    holders = {}
    if ids:
        rows = session.scalars(select(ClusterAgent).where(ClusterAgent.cluster_id.in_(ids)))
        holders = {row.cluster_id: row for row in rows}
    now = utcnow()
    return {cluster_id: _status(holders.get(cluster_id), now) for cluster_id in ids}


def _holder(session: Session, cluster_id: uuid.UUID) -> ClusterAgent | None:
    # Read afresh: a pass's long-lived session may hold an older copy of the row.
    return session.scalar(
        select(ClusterAgent).where(ClusterAgent.cluster_id == cluster_id).execution_options(populate_existing=True)
    )


def agent_status(*, session: Session, cluster: Cluster) -> AgentStatus | None:
    """The agent that holds (or last held) the cluster, with whether it is live; None if none ever synced."""
    return _status(_holder(session, cluster.id), utcnow())


def admissions_paused_reason(session: Session, cluster: Cluster) -> str | None:
    """Why a pass must start nothing on the cluster now (no live agent to run it), or None if it may.

    For the scheduling pass (RUNTIME.md, "Liveness"): simulated clusters always admit.
    """
    if cluster.runtime != AGENT:
        return None
    status = _status(_holder(session, cluster.id), utcnow())
    if status is None:
        return "No agent has synced with this cluster yet: start one with a token of the cluster."
    if status.live:
        return None
    lapsed = status.last_seen_at + timedelta(seconds=get_settings().agent_lease_seconds)
    return f"No live agent since {_clock(lapsed)} (agent {status.name} last synced at {_clock(status.last_seen_at)})."


def _clock(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def fence_seconds(largest_grace: int) -> int:
    """How long an agent may go without a sync before it stops every run (RUNTIME.md, "Fencing").

    A fenced agent's runs are gone at most `fence + largest grace` after its last sync (SIGTERM, the grace,
    SIGKILL); the server gives them to another agent after AGENT_LOST_SECONDS. So fence = lost - largest
    grace - two syncs - FENCE_SLACK_SECONDS, at least one second (fencing early is always safe: it only
    stops runs sooner). When the lost threshold is shorter than the largest grace plus the slack, that one
    second cannot keep the promise; keep AGENT_LOST_SECONDS well above the largest grace_seconds.
    """
    settings = get_settings()
    slack = 2 * settings.agent_sync_seconds + FENCE_SLACK_SECONDS
    return max(1, settings.agent_lost_seconds - largest_grace - slack)


LOST_ACTOR = "reconciler"


def held_by_previous(lease: ClusterAgent, started_at: datetime | None) -> bool:
    """Whether a run started at `started_at` is still the previous holder's (module docstring, "Takeover"): it
    may have been handed out before the takeover, and that agent is not lost yet."""
    cutoff = lease.previous_listed_at
    return cutoff is not None and started_at is not None and started_at <= cutoff


def requeue_lost(session: Session, cluster_id: uuid.UUID) -> int:
    """If the cluster's agent, or the holder before a takeover, has been silent for AGENT_LOST_SECONDS, end
    what it was running (RUNTIME.md, "Liveness and lost agents") and return how many deployments that was; 0
    if it synced meanwhile or ran nothing.

    A run is requeued with its resources freed and no attempt counted (it starts as a new generation); one
    stopping for a cancel ends cancelled, one stopping for a preemption is requeued as preempted. The agent
    fenced its runs before this threshold (fence_seconds), and a returning one stops what is no longer listed
    (or, the lease taken meanwhile, is refused and fences). A lost holder takes every running deployment of
    the cluster with it; a lost previous holder, the runs still held by it (`held_by_previous`).
    The holder row is locked first, so a sync that renews the lease meanwhile waits, then finds them requeued.
    """
    threshold = utcnow() - timedelta(seconds=get_settings().agent_lost_seconds)
    lease = session.scalar(
        select(ClusterAgent)
        .where(ClusterAgent.cluster_id == cluster_id)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    if lease is None:
        session.rollback()
        return 0
    if lease.last_seen_at < threshold:
        name, silent_since = lease.name, lease.last_seen_at
    elif lease.previous_last_seen_at is not None and lease.previous_last_seen_at < threshold:
        name, silent_since = lease.previous_name, lease.previous_last_seen_at
    else:
        session.rollback()
        return 0
    holder_lost = lease.last_seen_at < threshold
    cluster = lock_cluster(session, cluster_id)
    running = [
        deployment
        for deployment in session.scalars(
            select(Deployment)
            .where(Deployment.cluster_id == cluster_id, Deployment.status == Status.RUNNING.value)
            .order_by(Deployment.id)
            .execution_options(populate_existing=True)
        )
        if holder_lost or held_by_previous(lease, deployment.started_at)
    ]
    # Whatever the previous holder had ends now: what follows belongs to the holder.
    lease.previous_token_id = lease.previous_name = lease.previous_last_seen_at = lease.previous_listed_at = None
    if not running:
        session.commit()
        return 0
    actor = LOST_ACTOR
    for deployment in running:
        if deployment.runtime_state == RuntimeState.STOPPING.value:
            transitions.stopped(session, cluster, deployment, f"{actor} (agent {name} lost)")
        else:
            transitions.lost(session, cluster, deployment, name, actor)
    requeued = sum(d.status == Status.QUEUED.value for d in running)
    session.add(
        ClusterEvent(
            cluster_id=cluster_id,
            type="agent_lost",
            message=(
                f"Agent {name} silent since {_clock(silent_since)}: lost. {len(running)} running "
                f"deployment(s) ended with it: {requeued} requeued, {len(running) - requeued} cancelled."
            ),
            actor=actor,
        )
    )
    accounting.note_change(session, cluster_id, requeued)
    session.commit()
    request_pass(cluster_id, lambda: highest_waiting_priority(session, cluster_id))
    return len(running)


# Sync --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentInfo:
    name: str
    driver: str
    version: str


@dataclass(frozen=True)
class Report:
    """One item of a sync's `deployments`: what the agent knows of one run."""

    deployment_id: uuid.UUID
    generation: int
    state: str  # running | exited | stopped | failed
    at: datetime | None = None
    exit_code: int | None = None
    message: str | None = None
    logs: str | None = None
    container: str | None = None  # the runtime's id of the run (docker: the container id)


def sync(*, session: Session, token: AgentToken, agent: AgentInfo, reports: list[Report]) -> dict:
    """POST /agent/sync: take or renew the lease (409 if another agent holds it), apply the reports, and
    answer with the whole set the agent must run and the runs it must stop."""
    cluster = session.get(Cluster, token.cluster_id)
    if cluster is None:  # the token goes with its cluster; a race with the deletion
        raise Unauthorized(TOKEN_REFUSED)
    if cluster.runtime != AGENT:
        session.rollback()
        raise Conflict(
            f"Cluster {cluster.name}'s runtime is simulated: nothing for an agent to run. An admin sets "
            '`"runtime": "agent"` on the cluster (PATCH) for agents to run its deployments.'
        )
    lease, live_again = _hold_lease(session, cluster, token, agent)
    ended = _apply(session, cluster.id, lease, agent, reports)
    # A cluster that just got a live agent back may start what waited for one: passes that ran meanwhile
    # started nothing and left no change unseen, so nothing else would ask for a pass.
    if live_again or ended:
        request_pass(cluster.id, lambda: highest_waiting_priority(session, cluster.id))
    return _desired(session, cluster, lease, token, agent)


def _hold_lease(session: Session, cluster: Cluster, token: AgentToken, agent: AgentInfo) -> tuple[ClusterAgent, bool]:
    """Take the cluster's lease (free, lapsed, or ours already) and renew it; LeaseHeld if another agent has it.
    The lease row (detached, as committed), and True if the cluster had no live agent until now (admissions
    resume). A takeover keeps the holder it replaces as the previous holder (module docstring, "Takeover")."""
    now = utcnow()
    lease = timedelta(seconds=get_settings().agent_lease_seconds)
    fields = {"token_id": token.id, "name": agent.name, "driver": agent.driver, "version": agent.version}
    created = session.execute(
        insert(ClusterAgent)
        .values(cluster_id=cluster.id, last_seen_at=now, **fields)
        .on_conflict_do_nothing()
        .returning(ClusterAgent.cluster_id)
    ).first()
    if created is not None:
        _cluster_event(session, cluster, "agent_took_over", f"Agent {agent.name} holds the cluster.", agent.name)
        session.commit()
        return _lease(session, cluster.id), True
    holder = session.scalar(
        select(ClusterAgent)
        .where(ClusterAgent.cluster_id == cluster.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    same = holder.token_id == token.id and holder.name == agent.name
    until = holder.last_seen_at + lease
    if not same and now < until:
        session.rollback()
        raise _lease_held(cluster, holder, now)
    if not same:
        _cluster_event(
            session,
            cluster,
            "agent_took_over",
            f"Agent {agent.name} took over from agent {holder.name}, silent since {_clock(holder.last_seen_at)}. "
            f"The runs handed to {holder.name} stay its own until it is lost, at "
            f"{_clock(holder.last_seen_at + timedelta(seconds=get_settings().agent_lost_seconds))}.",
            agent.name,
        )
        # The one replaced may still run what it was given: those runs stay its own until it is lost. After a
        # chain of takeovers the latest one replaced stands for all before it (it went silent last, and
        # `listed_at` covers every hand-out), so nothing is requeued too early.
        holder.previous_token_id, holder.previous_name = holder.token_id, holder.name
        holder.previous_last_seen_at, holder.previous_listed_at = holder.last_seen_at, holder.listed_at
    for name, value in fields.items():
        setattr(holder, name, value)
    holder.last_seen_at = now
    session.commit()
    session.expunge(holder)
    return holder, now >= until


def _lease_held(cluster: Cluster, holder: ClusterAgent, now: datetime) -> LeaseHeld:
    until = holder.last_seen_at + timedelta(seconds=get_settings().agent_lease_seconds)
    return LeaseHeld(
        f"Cluster {cluster.name} is held by agent {holder.name} until {until.isoformat()} (each of its syncs "
        "renews the lease); standing by until it lapses.",
        {"holder": holder.name, "until": until.isoformat()},
        max(1, math.ceil((until - now).total_seconds())),
    )


def _lease(session: Session, cluster_id: uuid.UUID) -> ClusterAgent:
    lease = _holder(session, cluster_id)
    session.expunge(lease)
    session.rollback()
    return lease


def _cluster_event(session: Session, cluster: Cluster, kind: str, message: str, agent_name: str) -> None:
    session.add(ClusterEvent(cluster_id=cluster.id, type=kind, message=message, actor=f"agent {agent_name}"[:128]))


def _apply(
    session: Session, cluster_id: uuid.UUID, lease: ClusterAgent, agent: AgentInfo, reports: list[Report]
) -> bool:
    """Apply the reports of the cluster's current runs, in one transaction under the cluster row lock; a run
    the previous holder still holds is not the reporting agent's to report on (its "lost" changes nothing).
    True if a deployment left `running` (room freed, or a deployment requeued): the cluster needs a pass."""
    current = _current_runs(session, cluster_id, lease, reports)
    if not current:
        return False
    try:
        cluster = lock_cluster(session, cluster_id)
        deployments = {
            d.id: d
            for d in session.scalars(
                select(Deployment)
                .where(Deployment.id.in_(current), Deployment.cluster_id == cluster_id)
                .execution_options(populate_existing=True)
            )
        }
        queued_delta = 0
        ended = False
        for report in reports:
            deployment = deployments.get(report.deployment_id)
            if deployment is None or deployment.generation != report.generation:
                continue  # a report for a generation that is not current changes nothing
            if held_by_previous(lease, deployment.started_at):
                continue
            was = deployment.status
            _apply_one(session, cluster, deployment, agent, report)
            if was == Status.RUNNING.value and deployment.status != was:
                ended = True
                queued_delta += deployment.status == Status.QUEUED.value
        if ended:
            accounting.note_change(session, cluster_id, queued_delta)
        session.commit()
    except StaleDataError:
        # Another writer (a user's cancel) changed one of them meanwhile: nothing applied; the agent repeats.
        session.rollback()
        return False
    except Exception:
        session.rollback()
        raise
    return ended


def _current_runs(
    session: Session, cluster_id: uuid.UUID, lease: ClusterAgent, reports: list[Report]
) -> set[uuid.UUID]:
    """The reported deployments of this cluster with a report that would change something (an unlocked read,
    so that the usual sync, every run still `running`, takes no lock): current generation, not the previous
    holder's, and logs to keep or a state the deployment is not in yet."""
    if not reports:
        return set()
    rows = session.execute(
        select(
            Deployment.id, Deployment.generation, Deployment.status, Deployment.runtime_state, Deployment.started_at
        ).where(Deployment.id.in_({report.deployment_id for report in reports}), Deployment.cluster_id == cluster_id)
    ).all()
    session.rollback()  # end the read's transaction: the lock below starts a fresh one
    known = {row.id: row for row in rows}
    wanted = set()
    for report in reports:
        row = known.get(report.deployment_id)
        if row is None or row.generation != report.generation or held_by_previous(lease, row.started_at):
            continue
        running = row.status == Status.RUNNING.value
        news = running and (report.state != "running" or row.runtime_state == RuntimeState.PENDING.value)
        if news or report.logs is not None:
            wanted.add(row.id)
    return wanted


def _apply_one(session: Session, cluster: Cluster, deployment: Deployment, agent: AgentInfo, report: Report) -> None:
    """One report of the deployment's current run (RUNTIME.md, "What reports do")."""
    if report.logs is not None:
        _store_logs(session, deployment, report.logs)
    if deployment.status != Status.RUNNING.value:
        return  # it ended already: this is the report repeated
    actor = f"agent {agent.name}"[:128]
    state = deployment.runtime_state
    if report.state == "running":
        if state == RuntimeState.PENDING.value:
            deployment.runtime_state = RuntimeState.RUNNING.value
            deployment.runtime_agent = agent.name
            deployment.runtime_container = report.container
            deployment.runtime_started_at = report.at or utcnow()
            transitions.record(
                session, deployment, event="running", message=f"Running on agent {agent.name}.", actor=actor
            )
            session.flush()
        return
    deployment.runtime_agent = deployment.runtime_agent or agent.name
    deployment.runtime_container = deployment.runtime_container or report.container
    deployment.runtime_exit_code = report.exit_code
    deployment.runtime_message = report.message[:MESSAGE_LIMIT] if report.message else None
    if state == RuntimeState.STOPPING.value:
        transitions.stopped(session, cluster, deployment, actor)
    elif report.state == "exited" and report.exit_code == 0:
        transitions.complete(session, cluster, deployment, actor, message=f"Exited with code 0 on agent {agent.name}.")
    else:
        transitions.fail(session, cluster, deployment, actor, _failure(report))


def _failure(report: Report) -> str:
    """What went wrong with a run, for its reason: the exit code or the agent's message."""
    detail = f": {report.message[:MESSAGE_LIMIT]}" if report.message else ""
    if report.state == "exited":
        code = "no exit code" if report.exit_code is None else f"exit code {report.exit_code}"
        return f"{code}{detail}"
    if report.state == "stopped":
        return f"stopped by the agent unasked{detail}"
    return report.message[:MESSAGE_LIMIT] if report.message else "the agent could not run it"


def _store_logs(session: Session, deployment: Deployment, logs: str) -> None:
    """Keep the run's output: its last LOGS_LIMIT_BYTES (a longer text keeps its tail)."""
    raw = logs.encode()
    truncated = len(raw) >= LOGS_LIMIT_BYTES  # the agent sends a full 64 KiB only when it cut the output
    if len(raw) > LOGS_LIMIT_BYTES:
        logs = raw[-LOGS_LIMIT_BYTES:].decode(errors="ignore")
    values = {"generation": deployment.generation, "logs": logs, "truncated": truncated, "updated_at": utcnow()}
    session.execute(
        insert(DeploymentLog)
        .values(deployment_id=deployment.id, **values)
        .on_conflict_do_update(index_elements=[DeploymentLog.deployment_id], set_=values)
    )


def _desired(session: Session, cluster: Cluster, lease: ClusterAgent, token: AgentToken, agent: AgentInfo) -> dict:
    """The sync's answer: every run the agent must be running now, and every run it must stop (none of the
    runs the previous holder still holds). A run handed out for the first time is recorded first."""
    settings = get_settings()
    running = list(
        session.scalars(
            select(Deployment)
            .where(Deployment.cluster_id == cluster.id, Deployment.status == Status.RUNNING.value)
            .order_by(Deployment.started_at, Deployment.id)
        )
    )
    run, stop = [], []
    for d in running:
        if held_by_previous(lease, d.started_at):
            continue
        if d.runtime_state == RuntimeState.STOPPING.value:
            stop.append(
                {"id": d.id, "generation": d.generation, "grace_seconds": d.grace_seconds, "reason": d.stop_reason}
            )
        elif d.runtime_state in (RuntimeState.PENDING.value, RuntimeState.RUNNING.value):
            run.append(
                {
                    "id": d.id,
                    "generation": d.generation,
                    "state": d.runtime_state,
                    "name": d.name,
                    "image": d.image,
                    "command": d.command,
                    "env": d.env or {},
                    "resources": d.resources.to_api(),
                    "grace_seconds": d.grace_seconds,
                }
            )
    largest_grace = max((d.grace_seconds for d in running), default=DEFAULT_GRACE_SECONDS)
    newest = max((d.started_at for d in running if not held_by_previous(lease, d.started_at)), default=None)
    _record_hand_out(session, cluster, lease, token, agent, newest)
    return {
        "cluster_id": cluster.id,
        "sync_seconds": settings.agent_sync_seconds,
        "lease_seconds": settings.agent_lease_seconds,
        "fence_seconds": fence_seconds(largest_grace),
        "run": run,
        "stop": stop,
    }


def _record_hand_out(
    session: Session,
    cluster: Cluster,
    lease: ClusterAgent,
    token: AgentToken,
    agent: AgentInfo,
    newest: datetime | None,
) -> None:
    """Before an answer hands out a run no answer listed before (`newest`: the latest start it lists), move
    `listed_at` past it, to a time read after the answer's query, so that it covers every run that query saw:
    a later takeover then knows this agent may have them. LeaseHeld if another agent took the lease meanwhile
    (this sync waited that long): this one gets nothing.
    """
    if newest is None or (lease.listed_at is not None and newest <= lease.listed_at):
        return
    answered = utcnow()
    updated = session.execute(
        update(ClusterAgent)
        .where(
            ClusterAgent.cluster_id == cluster.id, ClusterAgent.token_id == token.id, ClusterAgent.name == agent.name
        )
        .values(listed_at=func.greatest(func.coalesce(ClusterAgent.listed_at, answered), answered))
    ).rowcount
    if not updated:
        holder = _holder(session, cluster.id)
        session.rollback()
        raise _lease_held(cluster, holder, utcnow())
    session.commit()


def logs_of(*, session: Session, deployment_id: uuid.UUID) -> dict:
    """The output of the deployment's latest run an agent sent: {generation, logs, truncated}."""
    deployment = session.get(Deployment, deployment_id)
    if deployment is None:
        raise NotFound("Deployment not found.")
    row = session.get(DeploymentLog, deployment_id)
    if row is None or row.generation != deployment.generation:
        return {"generation": deployment.generation, "logs": "", "truncated": False}
    return {"generation": row.generation, "logs": row.logs, "truncated": row.truncated}
