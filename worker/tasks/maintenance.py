"""Maintenance tasks: a liveness round trip and the periodic reconciler."""

from __future__ import annotations

import socket

from celery import shared_task
from sqlalchemy import text

from shared.db import db


@shared_task(name="maintenance.ping")
def ping() -> dict:
    """Answer from a worker process, proving the round trip API -> broker -> worker -> database."""
    database_ok = db.session.execute(text("SELECT 1")).scalar() == 1
    return {"worker": socket.gethostname(), "database": database_ok}
