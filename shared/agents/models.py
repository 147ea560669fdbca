"""Agent tokens and the lease of the agent that holds a cluster."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, String, func
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base


class AgentToken(Base):
    """A credential for the agents of one cluster: only its SHA-256 is stored; revoking deletes the row."""

    __tablename__ = "agent_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    cluster_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    # sha256 hex of the token: the token has 256 random bits, so a fast hash is enough (nothing to guess).
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ClusterAgent(Base):
    """The agent holding a cluster: the lease is its last sync plus AGENT_LEASE_SECONDS.

    A row of its own, locked by each sync, so that a sync that changes no deployment never waits for the
    cluster row a pass holds. After a takeover it also keeps the previous holder until that one is lost: the
    runs started up to `previous_listed_at` stay the previous holder's (see agents.service, "Takeover").
    """

    __tablename__ = "cluster_agents"

    cluster_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), primary_key=True)
    token_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("agent_tokens.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(128))
    driver: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # When a sync's answer last handed out a run no answer had listed before (read after the answer was):
    # every run an agent of the cluster may have been given started no later than this.
    listed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The holder before the last takeover, while it may still run what it was given (until it is lost).
    previous_token_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("agent_tokens.id", ondelete="SET NULL"))
    previous_name: Mapped[str | None] = mapped_column(String(128))
    previous_last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    previous_listed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
