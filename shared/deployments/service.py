"""Deployments as the API sees them: submit, read, list, and the user-driven transitions.

Each user action locks the cluster row, applies one transition (shared/deployments/transitions.py),
commits, and then asks for a scheduling pass: on the cluster whose resources changed, and on every
cluster where a queued deployment was waiting on this one.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY, TEXT
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from shared.clusters import accounting
from shared.clusters.accounting import lock_cluster
from shared.clusters.models import AGENT, Cluster
from shared.config import get_settings
from shared.db import array_literal
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


def _never_fits(request: Resources, cluster) -> dict[str, list[str]]:
    return {
        name: [
            f"Requests {describe(name, need)} but cluster {cluster.name} has {describe(name, has)} in all: "
            "it could never run there."
        ]
        for name, need, has in request.shortfalls(cluster.capacity)
    }


@dataclass(frozen=True)
class Submission:
    """One deployment to submit, as validated by the API. In a batch, `depends_on` may also name an
    earlier item of the same batch as "#<index>"."""

    name: str
    image: str
    resources: Resources
    priority: int = 500
    depends_on: Sequence[uuid.UUID | str] = ()
    max_retries: int = 3
    run_seconds: float | None = None
    command: Sequence[str] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    grace_seconds: int = DEFAULT_GRACE_SECONDS


BATCH_REFERENCE = re.compile(r"#(\d+)")
QUEUED_REASON = "Waiting for the scheduler's next pass."


def _item_errors(cluster, index: int | None, submission: Submission, known: set[uuid.UUID]) -> dict[str, list[str]]:
    """What is wrong with one submission on this cluster: the same messages single or batched."""
    errors = _never_fits(submission.resources, cluster)
    if submission.run_seconds is not None and cluster.runtime == AGENT:
        errors["run_seconds"] = [
            f"Cluster {cluster.name} runs deployments with an agent: a deployment ends when its process exits, "
            "so run_seconds (a simulated duration) does not apply there."
        ]
    most = get_settings().max_dependencies_per_deployment
    count = len(set(submission.depends_on))
    if count > most:
        errors["depends_on"] = [
            f"{count} dependencies; a deployment may have at most {most} (MAX_DEPENDENCIES_PER_DEPLOYMENT)."
        ]
        return errors
    unknown, later = [], []
    for dependency in submission.depends_on:
        if isinstance(dependency, uuid.UUID):
            if dependency not in known:
                unknown.append(str(dependency))
        elif index is None or int(BATCH_REFERENCE.fullmatch(dependency).group(1)) >= index:
            later.append(dependency)
    messages = []
    if unknown:
        messages.append(f"No deployment {', '.join(unknown)} in this organization to depend on.")
    if later:
        messages.append(f"{', '.join(later)} must name an earlier item of this batch.")
    if messages:
        errors["depends_on"] = messages
    return errors


def refusal(*, session: Session, cluster, submission: Submission) -> str | None:
    """Why a single submit of `submission` to `cluster` would be refused (the 422's or 429's message), or
    None if it would be stored. Reads only."""
    known = set()
    if submission.depends_on:
        known = set(
            session.scalars(
                select(Deployment.id).where(
                    Deployment.id.in_(set(submission.depends_on)),
                    Deployment.organization_id == cluster.organization_id,
                )
            )
        )
    errors = _item_errors(cluster, None, submission, known)
    if errors:
        return next(iter(errors.values()))[0]
    return accounting.queue_full_reason(session, cluster, 1)


_INSERT_DEPLOYMENTS = text(
    "WITH inserted AS (INSERT INTO deployments (id, organization_id, cluster_id, name, image, cpu_millis, ram_mb, "
    "gpu, priority, status, reason, attempts, max_retries, preemptions, resumes_preempted, run_seconds, command, env, "
    "grace_seconds, created_by, created_at, version) "
    "SELECT v.id, :organization_id, :cluster_id, v.name, v.image, v.cpu_millis, v.ram_mb, v.gpu, v.priority, "
    "'queued', :reason, 0, v.max_retries, 0, false, v.run_seconds, CAST(v.command AS jsonb), CAST(v.env AS jsonb), "
    "v.grace_seconds, :created_by, "
    # A batch keeps its order among equals in the scheduling order (priority, then age, then id).
    "now() + (v.n - 1) * interval '1 microsecond', 1 "
    "FROM unnest(CAST(:ids AS uuid[]), :names, :images, CAST(:cpu_millis AS bigint[]), CAST(:ram_mb AS bigint[]), "
    "CAST(:gpu AS bigint[]), CAST(:priorities AS int[]), CAST(:max_retries AS int[]), "
    "CAST(:run_seconds AS float8[]), :commands, :envs, CAST(:grace_seconds AS int[])) WITH ORDINALITY "
    "AS v(id, name, image, cpu_millis, ram_mb, gpu, priority, max_retries, run_seconds, command, env, "
    "grace_seconds, n) "
    "ORDER BY v.n "
    "RETURNING id, created_at, priority), "
    # For their positions: the queued deployments already there that come first, per priority submitted. A
    # new one is the youngest of its priority (created_at is now()), so that is those of a priority as high
    # or higher; the statement's snapshot does not include the rows it inserts.
    "ahead AS (SELECT p.priority, (SELECT count(*) FROM deployments d WHERE d.cluster_id = :cluster_id "
    "AND d.status = 'queued' AND d.priority >= p.priority) AS before FROM (SELECT DISTINCT priority FROM inserted) p) "
    "SELECT i.id, i.created_at, a.before FROM inserted i JOIN ahead a ON a.priority = i.priority"
).bindparams(
    bindparam("names", type_=ARRAY(TEXT)),
    bindparam("images", type_=ARRAY(TEXT)),
    # JSON texts (None: SQL NULL, the image's own command), cast to jsonb per row.
    bindparam("commands", type_=ARRAY(TEXT)),
    bindparam("envs", type_=ARRAY(TEXT)),
)

_INSERT_DEPENDENCIES = text(
    "INSERT INTO deployment_dependencies (deployment_id, depends_on_id) "
    "SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:depends_on AS uuid[]))"
)


def submit_many(
    *,
    session: Session,
    cluster,
    actor_id: uuid.UUID,
    actor_name: str,
    submissions: Sequence[Submission],
    batch: bool = True,
) -> list[dict]:
    """Store queued deployments on `cluster` (a Cluster or clusters.ClusterRef), all or none, in one
    transaction of a handful of statements, and ask for one pass. Returns each as the API shows it.

    422 if one could never fit, has too many dependencies or depends on an unknown deployment (in a batch,
    on a later or missing item): the errors name each bad item by its index when `batch`, else they are
    the single submit's. 429 if the cluster's or organization's queue would pass its limit.
    """
    wanted = {d for s in submissions for d in s.depends_on if isinstance(d, uuid.UUID)}
    known = set()
    if wanted:
        known = set(
            session.scalars(
                select(Deployment.id).where(
                    Deployment.id.in_(wanted), Deployment.organization_id == cluster.organization_id
                )
            )
        )
    errors = {}
    for index, submission in enumerate(submissions):
        item_errors = _item_errors(cluster, index if batch else None, submission, known)
        if item_errors:
            errors[index] = item_errors
    if errors:
        session.rollback()
        index, first = next(iter(errors.items()))
        message = next(iter(first.values()))[0]
        if not batch:
            raise Invalid(message, errors={"json": first})
        raise Invalid(f"Item {index}: {message}", errors={"json": {"deployments": errors}})

    ids = [uuid.uuid4() for _ in submissions]
    depends_on = [
        list(
            dict.fromkeys(
                d if isinstance(d, uuid.UUID) else ids[int(BATCH_REFERENCE.fullmatch(d).group(1))] for d in s.depends_on
            )
        )
        for s in submissions
    ]
    connection = session.connection()
    created = connection.execute(
        _INSERT_DEPLOYMENTS,
        {
            "organization_id": cluster.organization_id,
            "cluster_id": cluster.id,
            "reason": QUEUED_REASON,
            "created_by": actor_id,
            "ids": array_literal(ids),
            "names": [s.name for s in submissions],
            "images": [s.image for s in submissions],
            "cpu_millis": array_literal(s.resources.cpu_millis for s in submissions),
            "ram_mb": array_literal(s.resources.ram_mb for s in submissions),
            "gpu": array_literal(s.resources.gpu for s in submissions),
            "priorities": array_literal(s.priority for s in submissions),
            "max_retries": array_literal(s.max_retries for s in submissions),
            "run_seconds": array_literal("NULL" if s.run_seconds is None else repr(s.run_seconds) for s in submissions),
            "commands": [None if s.command is None else json.dumps(list(s.command)) for s in submissions],
            "envs": [json.dumps(dict(s.env)) for s in submissions],
            "grace_seconds": array_literal(s.grace_seconds for s in submissions),
        },
    ).all()
    created_at = {deployment_id: at for deployment_id, at, _ in created}
    before = {deployment_id: ahead for deployment_id, _, ahead in created}
    # Within the submission, higher priorities first, then the order given (its created_at order).
    batch_order = sorted(range(len(submissions)), key=lambda index: (-submissions[index].priority, index))
    positions = {ids[index]: before[ids[index]] + rank + 1 for rank, index in enumerate(batch_order)}
    edges = [
        (deployment_id, d) for deployment_id, dependencies in zip(ids, depends_on, strict=True) for d in dependencies
    ]
    if edges:
        connection.execute(
            _INSERT_DEPENDENCIES,
            {"ids": array_literal(e[0] for e in edges), "depends_on": array_literal(e[1] for e in edges)},
        )
    transitions.record_many(
        session,
        ids,
        event="submitted",
        messages=[f"Submitted by {actor_name} to cluster {cluster.name}, priority {s.priority}." for s in submissions],
        actor=actor_name,
        status=Status.QUEUED,
    )
    try:
        accounting.reserve_queue(session, cluster, len(submissions))  # last before the commit: see its docstring
    except QueueFull:
        session.rollback()
        raise
    session.commit()
    cluster_id = cluster.id
    request_pass(cluster_id, lambda: highest_waiting_priority(session, cluster_id))
    return [
        {
            "id": deployment_id,
            "organization_id": cluster.organization_id,
            "cluster_id": cluster_id,
            "name": s.name,
            "image": s.image,
            "resources": s.resources.to_api(),
            "priority": s.priority,
            "status": Status.QUEUED.value,
            "reason": QUEUED_REASON,
            "position": positions[deployment_id],
            "depends_on": dependencies,
            "attempts": 0,
            "max_retries": s.max_retries,
            "preemptions": 0,
            "run_seconds": s.run_seconds,
            "command": None if s.command is None else list(s.command),
            "env": dict(s.env),
            "grace_seconds": s.grace_seconds,
            "generation": 0,
            "runtime": None,
            "created_by": actor_id,
            "created_at": created_at[deployment_id],
            "started_at": None,
            "finished_at": None,
        }
        for deployment_id, s, dependencies in zip(ids, submissions, depends_on, strict=True)
    ]


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
    """Store a queued deployment and ask for a pass (as `submit_many`), and return it as an object.
    404 if the cluster does not exist; 422 and 429 as `submit_many`."""
    cluster = session.get(Cluster, cluster_id)
    if cluster is None:
        raise NotFound("Cluster not found.")
    submission = Submission(
        name, image, resources, priority, depends_on or (), max_retries, run_seconds, command, env or {}, grace_seconds
    )
    stored = submit_many(
        session=session,
        cluster=cluster,
        actor_id=actor_id,
        actor_name=actor_name,
        submissions=[submission],
        batch=False,
    )
    return session.get(Deployment, stored[0]["id"])


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


def list_for_organization(
    *,
    session: Session,
    organization_id: uuid.UUID,
    page: int,
    page_size: int,
    status: Status | None = None,
    cluster_id: uuid.UUID | None = None,
    created_by: uuid.UUID | None = None,
    name: str | None = None,
) -> tuple[list[Deployment], int]:
    """A page of the organization's deployments on all its clusters, newest first, filtered (`name`: a
    case-insensitive substring)."""
    conditions = [Deployment.organization_id == organization_id]
    if status is not None:
        conditions.append(Deployment.status == status.value)
    if cluster_id is not None:
        conditions.append(Deployment.cluster_id == cluster_id)
    if created_by is not None:
        conditions.append(Deployment.created_by == created_by)
    if name:
        conditions.append(Deployment.name.ilike(f"%{_like_escaped(name)}%", escape="\\"))
    total = session.scalar(select(func.count()).select_from(Deployment).where(*conditions))
    deployments = session.scalars(
        select(Deployment)
        .where(*conditions)
        .order_by(Deployment.created_at.desc(), Deployment.id.desc())
        .offset((page - 1) * page_size)
        .limit(page_size)
    ).all()
    return list(deployments), total


def _like_escaped(fragment: str) -> str:
    return fragment.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# Queued deployments' 1-based places in their clusters' scheduling order, in one statement however many
# are asked for: per cluster, the queued rows ahead of the first one asked for are counted (two index range
# counts on ix_deployments_scheduling_order), and only the rows from that first one to the last one asked
# for are numbered by a window function. A page of a cluster's list in scheduling order therefore costs
# about what its OFFSET already costs, not a scan of the whole queue. MATERIALIZED: inlined, the counts
# could be planned inside the loop over the numbered rows (quadratic: 17 s for 100,000 queued).
_POSITIONS = text(
    """
    WITH asked AS (
        SELECT d.id, d.cluster_id, d.priority, d.created_at FROM deployments d
        WHERE d.id = ANY(CAST(:ids AS uuid[])) AND d.status = 'queued'
    ),
    firsts AS MATERIALIZED (
        SELECT DISTINCT ON (cluster_id) cluster_id, priority, created_at, id FROM asked
        ORDER BY cluster_id, priority DESC, created_at, id
    ),
    lasts AS MATERIALIZED (
        SELECT DISTINCT ON (cluster_id) cluster_id, priority, created_at, id FROM asked
        ORDER BY cluster_id, priority, created_at DESC, id DESC
    ),
    ahead AS MATERIALIZED (
        SELECT f.cluster_id, f.priority, f.created_at, f.id,
            (SELECT count(*) FROM deployments d
             WHERE d.cluster_id = f.cluster_id AND d.status = 'queued' AND d.priority > f.priority)
            + (SELECT count(*) FROM deployments d
               WHERE d.cluster_id = f.cluster_id AND d.status = 'queued' AND d.priority = f.priority
                 AND (d.created_at, d.id) < (f.created_at, f.id)) AS before
        FROM firsts f
    ),
    numbered AS (
        SELECT d.id, a.before + row_number() OVER (
            PARTITION BY d.cluster_id ORDER BY d.priority DESC, d.created_at, d.id) AS position
        FROM ahead a
        JOIN lasts l ON l.cluster_id = a.cluster_id
        JOIN deployments d ON d.cluster_id = a.cluster_id AND d.status = 'queued'
            AND d.priority BETWEEN l.priority AND a.priority
            AND (d.priority < a.priority OR (d.created_at, d.id) >= (a.created_at, a.id))
            AND (d.priority > l.priority OR (d.created_at, d.id) <= (l.created_at, l.id))
    )
    SELECT numbered.id, numbered.position FROM numbered JOIN asked ON asked.id = numbered.id
    """
)


def positions_of(*, session: Session, deployment_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Deployment id -> its 1-based place in its cluster's scheduling order, for those of them still queued."""
    if not deployment_ids:
        return {}
    rows = session.execute(_POSITIONS, {"ids": array_literal(deployment_ids)})
    return {deployment_id: position for deployment_id, position in rows}


def _clock(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def running_reason(deployment: Deployment, on_agent: bool) -> str | None:
    """A running deployment's reason, read-time: since when it runs and, where known, until when."""
    if deployment.started_at is None:
        return deployment.reason
    if on_agent and deployment.runtime_state == "pending":
        return f"Admitted at {_clock(deployment.started_at)}; waiting for the agent to start it."
    since = deployment.runtime_started_at if on_agent and deployment.runtime_started_at else deployment.started_at
    reason = f"Running since {_clock(since)}"
    if deployment.completes_at is not None:
        reason += f"; completes at {_clock(deployment.completes_at)}"
    if on_agent and deployment.runtime_state == "stopping" and deployment.stop_reason:
        reason += f"; being stopped: {deployment.stop_reason.rstrip('.')}"
    return reason + "."


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
