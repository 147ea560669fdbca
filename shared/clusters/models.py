"""Clusters and the allocation ledger.

The books cannot be cooked: allocated counters are bounded by CHECK constraints, and every running
deployment holds exactly one ledger row (its primary key is the deployment). Only
shared/clusters/accounting.py writes the counters and the ledger.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, String, Text, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base
from shared.resources import Resources


def _bounded(resource: str) -> CheckConstraint:
    suffix = {"cpu": "_millis", "ram": "_mb", "gpu": ""}[resource]
    capacity, allocated = f"{resource}_capacity{suffix}", f"{resource}_allocated{suffix}"
    return CheckConstraint(f"0 <= {allocated} AND {allocated} <= {capacity}", name=f"{resource}_within_capacity")


RUNTIMES = ("simulated", "agent")
SIMULATED, AGENT = RUNTIMES


class Cluster(Base):
    __tablename__ = "clusters"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    cpu_capacity_millis: Mapped[int] = mapped_column(BigInteger)
    ram_capacity_mb: Mapped[int] = mapped_column(BigInteger)
    gpu_capacity: Mapped[int] = mapped_column(BigInteger)
    cpu_allocated_millis: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    ram_allocated_mb: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    gpu_allocated: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # When a scheduling pass last looked at this cluster: the reconciler revisits clusters it has not.
    last_pass_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # What runs its deployments: nothing ("simulated") or an agent on its host (RUNTIME.md).
    runtime: Mapped[str] = mapped_column(String(16), default=SIMULATED, server_default=SIMULATED)

    __table_args__ = (
        UniqueConstraint("organization_id", "name"),
        CheckConstraint("runtime IN ('simulated', 'agent')", name="runtime"),
        _bounded("cpu"),
        _bounded("ram"),
        _bounded("gpu"),
    )

    @property
    def capacity(self) -> Resources:
        return Resources(self.cpu_capacity_millis, self.ram_capacity_mb, self.gpu_capacity)

    @property
    def allocated(self) -> Resources:
        return Resources(self.cpu_allocated_millis, self.ram_allocated_mb, self.gpu_allocated)

    @property
    def available(self) -> Resources:
        return self.capacity - self.allocated


class Allocation(Base):
    """The ledger: what one running deployment holds on its cluster. One row per deployment, at most."""

    __tablename__ = "allocations"

    deployment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True)
    cluster_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    cpu_millis: Mapped[int] = mapped_column(BigInteger)
    ram_mb: Mapped[int] = mapped_column(BigInteger)
    gpu: Mapped[int] = mapped_column(BigInteger)
    allocated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (CheckConstraint("cpu_millis >= 0 AND ram_mb >= 0 AND gpu >= 0", name="non_negative"),)

    @property
    def resources(self) -> Resources:
        return Resources(self.cpu_millis, self.ram_mb, self.gpu)


class ClusterEvent(Base):
    """Something that happened to a cluster: its capacity or runtime changed, the reconciler repaired drifted
    counters, an agent took or lost it, an agent token was created or revoked (shared/clusters/events.py)."""

    __tablename__ = "cluster_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    cluster_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.clock_timestamp())
    type: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(128))

    # Newest first, a page at a time (GET /clusters/{id}/events).
    __table_args__ = (Index("ix_cluster_events_cluster_id_id", "cluster_id", "id"),)


class ClusterQueue(Base):
    """A cluster's queue bookkeeping: how much is queued, and whether something changed since the last pass.

    A row of its own, not columns of the cluster: a pass holds the cluster row for its whole length, and a
    submission must not wait for it. Only shared/clusters/accounting.py writes it.
    """

    __tablename__ = "cluster_queues"

    cluster_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), primary_key=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    # Deployments queued on the cluster: the quota check reads it instead of counting; each pass sets it exact.
    queued: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Bumped by every change a pass could act on (a submission, a release, a capacity change, a dependency
    # ending); a complete pass records the value it started from. The reconciler passes where they differ.
    changes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    passed_changes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
