"""Scheduling tasks: thin wrappers that take ids, reload state and call the services."""

from __future__ import annotations

import logging
import time
import uuid

from celery import current_app

from celeryconfig import MAX_COUNTDOWN_SECONDS
from shared import metrics
from shared.db import db
from shared.deployments import service as deployments
from shared.scheduling import passes
from shared.scheduling.requests import request_pass
from worker.metrics import ADMISSION_WAIT, PASS_SECONDS, PREEMPTIONS
from worker.tasks.base import task

log = logging.getLogger(__name__)

PREEMPT_TASK = "scheduler.preempt"
COMPLETE_TASK = "scheduler.complete_deployment"


def _after_pass(cluster_id: uuid.UUID, outcome: passes.PassOutcome) -> None:
    """What a committed pass sets in motion: the preemption it chose, passes where dependents wait, timers."""
    if outcome.handoff:
        beneficiary, victims = outcome.handoff
        current_app.send_task(
            PREEMPT_TASK, args=[str(cluster_id), str(beneficiary), [str(v) for v in victims]], queue="critical"
        )
    for other_cluster, priority in outcome.follow_up.items():
        request_pass(other_cluster, priority)
    for deployment_id, seconds in outcome.timers:
        schedule_completion(deployment_id, seconds)


def schedule_completion(deployment_id: uuid.UUID, seconds: float) -> None:
    """A timer for run_seconds, if it is short enough for a countdown; the reconciler covers longer ones."""
    if seconds <= MAX_COUNTDOWN_SECONDS:
        current_app.send_task(COMPLETE_TASK, args=[str(deployment_id)], countdown=seconds, queue="critical")


def _observe_admissions(started: list[uuid.UUID]) -> None:
    """Observe the admission waits of deployments just started (a figure: never a reason to retry the task)."""
    if not started:
        return
    try:
        waits = metrics.admission_waits(db.session, started)
    except Exception:  # the pass is committed; a lost figure is only logged
        log.warning("admission waits of %d started deployments not observed", len(started), exc_info=True)
        db.session.rollback()
        return
    for seconds in waits:
        ADMISSION_WAIT.observe(seconds)


@task("scheduler.schedule_deployment")
def schedule_deployment(cluster_id: str) -> dict:
    """Run a scheduling pass over the cluster (requested for one of its deployments, or by the reconciler)."""
    cluster = uuid.UUID(cluster_id)
    began = time.perf_counter()
    with passes.holding(cluster) as lock:
        passes.clear_pending(cluster)
        outcome = passes.apply_pass(db.session, cluster, lock)
    PASS_SECONDS.observe(time.perf_counter() - began)
    _observe_admissions(outcome.started)
    _after_pass(cluster, outcome)
    return {
        "started": len(outcome.started),
        "failed": len(outcome.failed),
        "waiting": outcome.waiting,
        "preempting": bool(outcome.handoff),
    }


@task(PREEMPT_TASK)
def preempt(cluster_id: str, beneficiary_id: str, victim_ids: list[str]) -> bool:
    """Move the victims a pass chose back to the queue and start the deployment they make room for."""
    cluster = uuid.UUID(cluster_id)
    with passes.holding(cluster):
        applied = passes.preempt_for(
            db.session, cluster, uuid.UUID(beneficiary_id), tuple(uuid.UUID(v) for v in victim_ids)
        )
    if applied:
        PREEMPTIONS.inc(len(victim_ids))
        _observe_admissions([uuid.UUID(beneficiary_id)])
        deployment = deployments.get_or_404(session=db.session, deployment_id=uuid.UUID(beneficiary_id))
        if deployment.run_seconds:
            schedule_completion(deployment.id, deployment.run_seconds)
    # Either way the rest of the queue needs a pass: the plan stopped at this preemption.
    request_pass(cluster, 1000)
    return applied


@task(COMPLETE_TASK)
def complete_deployment(deployment_id: str) -> str:
    """Complete a running deployment whose run_seconds are up, free its resources and request passes."""
    outcome, remaining = deployments.complete_if_due(session=db.session, deployment_id=uuid.UUID(deployment_id))
    if remaining is not None:
        current_app.send_task(
            COMPLETE_TASK, args=[deployment_id], countdown=min(remaining, MAX_COUNTDOWN_SECONDS), queue="critical"
        )
    return outcome
