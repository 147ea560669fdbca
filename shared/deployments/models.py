"""Deployments, their dependencies and their event history."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base
from shared.resources import Resources


class Status(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (Status.COMPLETED, Status.FAILED, Status.CANCELLED)


STATUS_VALUES = tuple(status.value for status in Status)


class RuntimeState(enum.StrEnum):
    """Where the current run stands on an agent cluster (RUNTIME.md); kept as the last fact once it ended."""

    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"


class StopIntent(enum.StrEnum):
    """Why a run is `stopping`: what its `stopped` report turns the deployment into."""

    CANCEL = "cancel"
    PREEMPT = "preempt"


DEFAULT_GRACE_SECONDS = 30
_STATUS_CHECK = "status IN (" + ", ".join(f"'{value}'" for value in STATUS_VALUES) + ")"


class Deployment(Base):
    __tablename__ = "deployments"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    cluster_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    image: Mapped[str] = mapped_column(String(255))
    cpu_millis: Mapped[int] = mapped_column(BigInteger)
    ram_mb: Mapped[int] = mapped_column(BigInteger)
    gpu: Mapped[int] = mapped_column(BigInteger)
    priority: Mapped[int] = mapped_column(Integer, default=500)
    status: Mapped[str] = mapped_column(String(16), default=Status.QUEUED.value)
    reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_retries: Mapped[int] = mapped_column(Integer, default=3)
    preemptions: Mapped[int] = mapped_column(Integer, default=0)
    # Set when preempted: the next start resumes it and costs no attempt (SCHEDULING.md, retries).
    resumes_preempted: Mapped[bool] = mapped_column(Boolean, default=False)
    run_seconds: Mapped[float | None] = mapped_column(Float)
    # started_at + run_seconds while running: when the reconciler completes it.
    completes_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # argv for the run (null: the image's default) and variables added to its environment (not secrets).
    command: Mapped[list[str] | None] = mapped_column(JSONB)
    env: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict, server_default="{}")
    grace_seconds: Mapped[int] = mapped_column(Integer, default=DEFAULT_GRACE_SECONDS, server_default="30")
    # +1 at every start: names one run, the fencing token between the server and agents.
    generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The current (or last) run on an agent cluster; null state: never started on one.
    runtime_state: Mapped[str | None] = mapped_column(String(16))
    runtime_agent: Mapped[str | None] = mapped_column(String(128))
    runtime_container: Mapped[str | None] = mapped_column(String(255))
    runtime_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    runtime_exit_code: Mapped[int | None] = mapped_column(Integer)
    runtime_message: Mapped[str | None] = mapped_column(Text)
    # While `stopping`: what the stop is for, and the reason the agent is told.
    stop_intent: Mapped[str | None] = mapped_column(String(16))
    stop_reason: Mapped[str | None] = mapped_column(Text)
    # A preempted run that is stopping: the queued deployment its room is kept for (the pass's nominations).
    # No foreign key: both go together with their cluster, and a pass reads it only beside a running victim.
    stop_for: Mapped[uuid.UUID | None] = mapped_column()
    # Every status change is an UPDATE ... WHERE version = <what was read>: a stale writer changes nothing.
    version: Mapped[int] = mapped_column(Integer, nullable=False)

    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        CheckConstraint(_STATUS_CHECK, name="status"),
        CheckConstraint("priority BETWEEN 0 AND 1000", name="priority_range"),
        CheckConstraint("max_retries BETWEEN 0 AND 10", name="max_retries_range"),
        CheckConstraint("cpu_millis >= 0 AND ram_mb >= 0 AND gpu >= 0", name="resources_non_negative"),
        CheckConstraint("attempts >= 0 AND preemptions >= 0", name="counters_non_negative"),
        CheckConstraint("run_seconds IS NULL OR run_seconds > 0", name="run_seconds_positive"),
        CheckConstraint("grace_seconds BETWEEN 0 AND 3600", name="grace_seconds_range"),
        CheckConstraint("generation >= 0", name="generation_non_negative"),
        CheckConstraint(
            "runtime_state IS NULL OR runtime_state IN ('pending', 'running', 'stopping')", name="runtime_state"
        ),
        CheckConstraint("stop_intent IS NULL OR stop_intent IN ('cancel', 'preempt')", name="stop_intent"),
        # Scheduling order within a cluster and status: priority high to low, then oldest first.
        Index("ix_deployments_scheduling_order", "cluster_id", "status", priority.desc(), "created_at", "id"),
        Index("ix_deployments_cluster_order", "cluster_id", priority.desc(), "created_at", "id"),
        Index("ix_deployments_due", "completes_at", postgresql_where="status = 'running'"),
    )

    @property
    def resources(self) -> Resources:
        return Resources(self.cpu_millis, self.ram_mb, self.gpu)


class DeploymentDependency(Base):
    """`deployment` waits until `depends_on` has completed."""

    __tablename__ = "deployment_dependencies"

    deployment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True)
    depends_on_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True, index=True
    )

    __table_args__ = (CheckConstraint("deployment_id <> depends_on_id", name="not_self"),)


class DeploymentEvent(Base):
    """One status change (or scheduling note) of a deployment, and who or what caused it."""

    __tablename__ = "deployment_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    deployment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.clock_timestamp())
    type: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(128))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str | None] = mapped_column(String(16))

    __table_args__ = (Index("ix_deployment_events_deployment_id_id", "deployment_id", "id"),)


class DeploymentLog(Base):
    """The output of a deployment's latest run that an agent sent (at most its last 64 KiB)."""

    __tablename__ = "deployment_logs"

    deployment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer)
    logs: Mapped[str] = mapped_column(Text)
    truncated: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
