"""The reconciler: what beat runs every few seconds so that nothing waits forever on a lost message.

It requests passes only where something changed since the last one (the change stamps of cluster_queues),
shared round-robin between organizations and at most RECONCILE_MAX_PASSES a round; when nothing needs
doing, a round is one query.

Safe to run twice at once: it only requests passes (which coalesce), sends completions guarded by a
Redis marker (and idempotent anyway), repairs drifted counters under a row lock it skips when busy, and
requeues a lost agent's deployments under the agent's row lock (re-checking its silence there).
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import zip_longest

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.agents import service as agents
from shared.clusters import accounting
from shared.clusters.models import Cluster, ClusterEvent
from shared.config import get_settings
from shared.redis import get_redis
from shared.scheduling.requests import request_pass
from shared.timeutil import utcnow

log = logging.getLogger(__name__)

ACTOR = "reconciler"
TIMER_MARKER = "hv:timer:"
# The backstop: a cluster with queued work that no pass has looked at for this long gets one, marked or
# not (a mark lost between two commits, a counter repaired by hand). Rare enough to cost nothing.
STALE_PASS = timedelta(minutes=10)

# Everything a round acts on, in one statement (the quiet round is this one query):
#   pass  - clusters where something changed since their last complete pass (accounting.py stamps changes, a
#           pass records the stamp it saw), or stale with queued work; with the highest priority queued there
#   due   - running deployments whose run_seconds end before the next round
#   drift - clusters whose allocated counters differ from the ledger
#   lost  - agent clusters whose agent, or the holder before a takeover, is silent past AGENT_LOST_SECONDS while
#           deployments still run there (agents.requeue_lost decides which runs were that agent's)
_ROUND = text(
    """
    SELECT 'pass', c.id, c.organization_id, c.last_pass_at,
           (SELECT coalesce(max(d.priority), 0) FROM deployments d
            WHERE d.cluster_id = c.id AND d.status = 'queued')
    FROM clusters c JOIN cluster_queues q ON q.cluster_id = c.id
    WHERE q.changes <> q.passed_changes OR (q.queued > 0 AND (c.last_pass_at IS NULL OR c.last_pass_at < :stale))
    UNION ALL
    SELECT 'due', id, NULL, completes_at, NULL FROM deployments
    WHERE status = 'running' AND completes_at <= :horizon
    UNION ALL
    SELECT 'drift', c.id, NULL, NULL, NULL FROM clusters c
    LEFT JOIN (SELECT cluster_id, sum(cpu_millis) AS cpu, sum(ram_mb) AS ram, sum(gpu) AS gpu
               FROM allocations GROUP BY cluster_id) a ON a.cluster_id = c.id
    WHERE c.cpu_allocated_millis <> coalesce(a.cpu, 0) OR c.ram_allocated_mb <> coalesce(a.ram, 0)
       OR c.gpu_allocated <> coalesce(a.gpu, 0)
    UNION ALL
    SELECT 'lost', g.cluster_id, NULL, g.last_seen_at, NULL FROM cluster_agents g
    WHERE (g.last_seen_at < :lost OR g.previous_last_seen_at < :lost)
      AND EXISTS (SELECT 1 FROM deployments d WHERE d.cluster_id = g.cluster_id AND d.status = 'running')
    """
)


@dataclass
class Report:
    passes_requested: int = 0
    # Changed clusters left for the next round by RECONCILE_MAX_PASSES.
    passes_deferred: int = 0
    completions_sent: int = 0
    repaired: list[str] = field(default_factory=list)
    # Agent clusters whose lost agent's deployments were requeued (or ended) this round.
    lost: list[str] = field(default_factory=list)

    @property
    def quiet(self) -> bool:
        return self == Report()


def fair_order(clusters: list[tuple[uuid.UUID, uuid.UUID, datetime | None, int]]) -> list[tuple[uuid.UUID, int]]:
    """(cluster, priority) round-robin across organizations: each one's longest-unpassed cluster, then each
    one's next, and so on; organizations in the order of their longest-unpassed cluster. One tenant's
    thousand marked clusters cannot push another's single one back."""
    never = datetime.min.replace(tzinfo=UTC)
    by_organization: dict[uuid.UUID, list] = defaultdict(list)
    for cluster_id, organization_id, _last_pass_at, priority in sorted(
        clusters, key=lambda c: (c[2] or never, str(c[0]))
    ):
        by_organization[organization_id].append((cluster_id, priority))
    rounds = zip_longest(*by_organization.values())
    return [cluster for round_ in rounds for cluster in round_ if cluster is not None]


def reconcile(*, session: Session, send_completion) -> Report:
    """One round: request passes where something changed, send due completions, repair drifted counters,
    requeue what lost agents ran."""
    report = Report()
    now = utcnow()
    settings = get_settings()
    period = settings.reconcile_seconds
    bounds = {
        "stale": now - STALE_PASS,
        "horizon": now + timedelta(seconds=period),
        "lost": now - timedelta(seconds=settings.agent_lost_seconds),
    }
    rows = session.execute(_ROUND, bounds).all()
    session.rollback()  # end the read-only transaction; repairs commit their own
    if not rows:
        return report
    marked = [(row[1], row[2], row[3], row[4]) for row in rows if row[0] == "pass"]
    budget = get_settings().reconcile_max_passes
    ordered = fair_order(marked)
    for cluster_id, priority in ordered[:budget]:
        if request_pass(cluster_id, priority):
            report.passes_requested += 1
    report.passes_deferred = max(0, len(ordered) - budget)
    due = sorted((row[3], row[1]) for row in rows if row[0] == "due")
    report.completions_sent = _send_due_completions(due, now, send_completion)
    for cluster_id in (row[1] for row in rows if row[0] == "drift"):
        if _repair(session, cluster_id):
            report.repaired.append(str(cluster_id))
    for cluster_id in (row[1] for row in rows if row[0] == "lost"):
        if agents.requeue_lost(session, cluster_id):
            report.lost.append(str(cluster_id))
    return report


def _send_due_completions(due, now, send_completion) -> int:
    """Every running deployment due before the next round gets a completion at its due time, once."""
    period = get_settings().reconcile_seconds
    client = get_redis(get_settings().redis_url)
    sent = 0
    for completes_at, deployment_id in due:
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
