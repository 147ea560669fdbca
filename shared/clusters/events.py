"""A cluster's history: capacity and runtime changes, counter repairs, agents taking or losing it, agent tokens
created or revoked. Each is written in the transaction of the change it records."""

from __future__ import annotations

import uuid

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from shared.audit.service import actor_name
from shared.clusters.models import ClusterEvent

# Every type of cluster event, and who writes it.
TYPES = (
    "capacity_changed",  # PATCH /clusters/{id} (shared/clusters/service.py), as are the two below
    "runtime_changed",
    "cluster_renamed",
    "counters_repaired",  # the reconciler (shared/scheduling/reconcile.py)
    "agent_took_over",  # a sync (shared/agents/service.py), as are the three below
    "agent_lost",  # also the runtime changing away from `agent`
    "agent_token_created",
    "agent_token_revoked",
)


def record(session: Session, *, cluster_id: uuid.UUID, kind: str, message: str, actor_id: uuid.UUID | None) -> None:
    """Add an event a user caused (stored with their username) to the cluster's history, in the caller's
    transaction."""
    session.execute(
        insert(ClusterEvent).values(cluster_id=cluster_id, type=kind, message=message, actor=actor_name(actor_id))
    )


def list_for_cluster(
    *, session: Session, cluster_id: uuid.UUID, page: int, page_size: int
) -> tuple[list[ClusterEvent], int]:
    """One page of the cluster's history, newest first, and how many events it has."""
    total = session.scalar(select(func.count()).where(ClusterEvent.cluster_id == cluster_id))
    events = session.scalars(
        select(ClusterEvent)
        .where(ClusterEvent.cluster_id == cluster_id)
        .order_by(ClusterEvent.id.desc())
        .offset((page - 1) * page_size)
        .limit(page_size)
    ).all()
    return list(events), total
