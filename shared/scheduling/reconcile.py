"""The reconciler: what beat runs every few seconds so that nothing waits forever on a lost message.

Safe to run twice at once: it only requests passes (which coalesce), sends completions guarded by a
Redis marker (and idempotent anyway), and repairs drifted counters under a row lock it skips when busy.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.clusters import accounting
from shared.clusters.models import Cluster, ClusterEvent
from shared.config import get_settings
from shared.redis import get_redis
from shared.scheduling.requests import request_pass
from shared.timeutil import utcnow

log = logging.getLogger(__name__)

ACTOR = "reconciler"
TIMER_MARKER = "hv:timer:"
# A cluster with queued work that no pass has looked at for this long gets one, whatever else holds.
STALE_PASS = timedelta(seconds=30)

# Clusters where a pass could act: queued work that fits what is free, that outranks something running
# (it may preempt), whose dependencies have all ended, or that no pass has looked at for a while.
_CLUSTERS_TO_PASS = text(
    """
    SELECT c.id, max(d.priority)
    FROM clusters c JOIN deployments d ON d.cluster_id = c.id AND d.status = 'queued'
    WHERE (d.cpu_millis <= c.cpu_capacity_millis - c.cpu_allocated_millis
           AND d.ram_mb <= c.ram_capacity_mb - c.ram_allocated_mb
           AND d.gpu <= c.gpu_capacity - c.gpu_allocated)
       OR EXISTS (SELECT 1 FROM deployments r
                  WHERE r.cluster_id = c.id AND r.status = 'running' AND r.priority < d.priority)
       OR (EXISTS (SELECT 1 FROM deployment_dependencies dd WHERE dd.deployment_id = d.id)
           AND NOT EXISTS (SELECT 1 FROM deployment_dependencies dd JOIN deployments p ON p.id = dd.depends_on_id
                           WHERE dd.deployment_id = d.id AND p.status IN ('queued', 'running')))
       OR c.last_pass_at IS NULL OR c.last_pass_at < :stale
    GROUP BY c.id
    """
)

_DUE = text(
    "SELECT id, completes_at FROM deployments WHERE status = 'running' AND completes_at <= :horizon "
    "ORDER BY completes_at"
)

_DRIFTED = text(
    """
    SELECT c.id FROM clusters c
    LEFT JOIN (SELECT cluster_id, sum(cpu_millis) AS cpu, sum(ram_mb) AS ram, sum(gpu) AS gpu
               FROM allocations GROUP BY cluster_id) a ON a.cluster_id = c.id
    WHERE c.cpu_allocated_millis <> coalesce(a.cpu, 0) OR c.ram_allocated_mb <> coalesce(a.ram, 0)
       OR c.gpu_allocated <> coalesce(a.gpu, 0)
    """
)


@dataclass
class Report:
    passes_requested: int = 0
    completions_sent: int = 0
    repaired: list[str] = field(default_factory=list)


def reconcile(*, session: Session, send_completion) -> Report:
    """One round: request passes, send due completions, repair drifted counters."""
    report = Report()
    now = utcnow()
    for cluster_id, priority in session.execute(_CLUSTERS_TO_PASS, {"stale": now - STALE_PASS}).all():
        if request_pass(cluster_id, priority):
            report.passes_requested += 1
    report.completions_sent = _send_due_completions(session, now, send_completion)
    for (cluster_id,) in session.execute(_DRIFTED).all():
        if _repair(session, cluster_id):
            report.repaired.append(str(cluster_id))
    session.rollback()  # end the read-only transaction; repairs committed their own
    return report


def _send_due_completions(session: Session, now, send_completion) -> int:
    """Every running deployment due before the next round gets a completion at its due time, once."""
    period = get_settings().reconcile_seconds
    client = get_redis(get_settings().redis_url)
    sent = 0
    for deployment_id, completes_at in session.execute(_DUE, {"horizon": now + timedelta(seconds=period)}).all():
        delay = max(0.0, (completes_at - now).total_seconds())
        # The marker lives until shortly after the due time: if the completion is lost with its worker,
        # a later round sends it again.
        if client.set(f"{TIMER_MARKER}{deployment_id}", "1", nx=True, ex=int(delay) + period + 2):
            send_completion(deployment_id, delay)
            sent += 1
    return sent


def _repair(session: Session, cluster_id: uuid.UUID) -> bool:
    """Set a cluster's counters to its ledger, unless a pass holds its row right now (then next round)."""
    cluster = (
        session.query(Cluster)
        .filter(Cluster.id == cluster_id)
        .with_for_update(skip_locked=True, key_share=True)
        .first()
    )
    if cluster is None:
        session.rollback()
        return False
    drift = accounting.repair_counters(session, cluster)
    if drift is None:
        session.rollback()
        return False
    message = (
        f"Counters differed from the ledger by cpu {drift.cpu_millis} milli-cores, ram {drift.ram_mb} MB, "
        f"gpu {drift.gpu}; set back to the ledger."
    )
    session.add(ClusterEvent(cluster_id=cluster_id, type="counters_repaired", message=message, actor=ACTOR))
    session.commit()
    log.warning("cluster %s: %s", cluster_id, message)
    return True
