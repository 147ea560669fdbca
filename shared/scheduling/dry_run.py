"""What a pass would do with a submission now, stored nowhere (POST /clusters/{id}/deployments/dry-run).

The submission is checked as a submit checks it, then added to what a pass reads of the cluster as its
youngest queued deployment, and the same pure `plan_pass` decides, with the inputs of an agent cluster
(runs being stopped, two-phase preemption, paused admissions) where the cluster has an agent. Nothing is
locked, written or requested: the answer is a forecast, and the cluster may change before a real submit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from sqlalchemy import Text, cast, select
from sqlalchemy.orm import Session

from shared.clusters.models import AGENT
from shared.deployments import service as deployments
from shared.deployments.models import Deployment, Status
from shared.resources import Resources
from shared.scheduling.algorithm import Candidate, DependencyState, Running, plan_pass
from shared.scheduling.passes import read_cluster_state, two_phase_inputs
from shared.timeutil import utcnow

# The submission's id in the plan: not a UUID, so no stored deployment can have it.
DRY_RUN_ID = "dry-run"


@dataclass(frozen=True)
class DryRun:
    """The forecast: `start`, `preempt` (with its victims), `wait` (with its position) or `reject`, and why."""

    outcome: str
    reason: str
    victims: list[dict] = field(default_factory=list)
    position: int | None = None


def _resources(row) -> Resources:
    return Resources(row.cpu_millis, row.ram_mb, row.gpu)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' if count != 1 else ''}"


def dry_run(*, session: Session, cluster, submission: deployments.Submission) -> DryRun:
    """What a pass would do now with `submission` on `cluster` (a Cluster or ClusterRef); reads only."""
    refused = deployments.refusal(session=session, cluster=cluster, submission=submission)
    if refused is not None:
        return DryRun("reject", refused)

    rows, states, depends_on = read_cluster_state(session, cluster.id)
    own_dependencies = sorted({str(d) for d in submission.depends_on})
    if own_dependencies:
        found = session.execute(
            select(cast(Deployment.id, Text), Deployment.name, Deployment.status).where(
                Deployment.id.in_([uuid.UUID(d) for d in own_dependencies])
            )
        )
        states.update({i: DependencyState(name, status) for i, name, status in found})
    by_id = {d.id: d for d in rows}
    queued = [d for d in rows if d.status == Status.QUEUED.value]
    # Stored in the same statement as now(), a submission is younger than everything already queued.
    created = max([int(utcnow().timestamp() * 1_000_000), *(d.created for d in queued)]) + 1
    candidate = Candidate(
        DRY_RUN_ID, submission.name, submission.priority, submission.resources, created, tuple(own_dependencies)
    )
    # On an agent cluster, the same inputs as the pass: runs stopping, open nominations, paused admissions.
    running = [d for d in rows if d.status == Status.RUNNING.value]
    agent_inputs = two_phase_inputs(session, cluster, running) if cluster.runtime == AGENT else {}
    plan = plan_pass(
        cluster.capacity,
        [Running(d.id, d.name, d.priority, _resources(d), d.started) for d in running],
        [
            *(
                Candidate(d.id, d.name, d.priority, _resources(d), d.created, tuple(depends_on.get(d.id, ())))
                for d in queued
            ),
            candidate,
        ],
        states,
        **agent_inputs,
    )

    for failure in plan.failures:
        if failure.deployment_id == DRY_RUN_ID:
            return DryRun("reject", f"A submit would be accepted, but the next pass would fail it: {failure.reason}.")
    for start in plan.starts:
        if start.deployment_id == DRY_RUN_ID:
            if not start.victims:
                return DryRun("start", "It would start in the next pass: it fits in the free room.")
            victims = [by_id[v] for v in start.victims]
            return DryRun(
                "preempt",
                f"It would start in the next pass, preempting {_plural(len(victims), 'lower-priority deployment')}: "
                + ", ".join(v.name for v in victims)
                + ".",
                [{"id": uuid.UUID(v.id), "name": v.name, "priority": v.priority} for v in victims],
            )
    position = _position_after(plan, by_id, candidate)
    for nomination in plan.nominations:
        if nomination.deployment_id == DRY_RUN_ID:
            victims = [by_id[v] for v in nomination.victims]
            return DryRun(
                "preempt",
                f"The next pass would stop {_plural(len(victims), 'lower-priority deployment')} for it ("
                + ", ".join(v.name for v in victims)
                + "); it starts once they have stopped.",
                [{"id": uuid.UUID(v.id), "name": v.name, "priority": v.priority} for v in victims],
                position,
            )
    return DryRun("wait", plan.waiting[DRY_RUN_ID], position=position)


def _position_after(plan, by_id: dict, candidate: Candidate) -> int:
    """The candidate's place in the scheduling order once the plan is applied: among what still waits, and the
    victims a start sends back to the queue."""
    queued_after = [by_id[i] for i in plan.waiting if i != DRY_RUN_ID]
    queued_after += [by_id[v] for start in plan.starts for v in start.victims]
    mine = (-candidate.priority, candidate.created, candidate.id)
    return 1 + sum(1 for d in queued_after if (-d.priority, d.created, d.id) < mine)
