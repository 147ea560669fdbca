"""The organization's audit log: who changed its members, invites and clusters, and how."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, String, Text, Uuid, func
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base


class OrganizationEvent(Base):
    """One change to an organization, written in the transaction that made it.

    Names are kept as text (`actor`, and in `message`): an entry outlives the account, member or cluster it
    names. `cluster_id` is deliberately no foreign key, so a deleted cluster's entries stay.
    """

    __tablename__ = "organization_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.clock_timestamp())
    type: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(128))
    actor_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    cluster_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    __table_args__ = (Index("ix_organization_events_organization_id_id", "organization_id", "id"),)
