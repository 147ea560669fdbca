"""Maintenance tasks: a liveness round trip and the periodic reconciler."""

from __future__ import annotations

import logging
import socket
from dataclasses import asdict

from celery import current_app
from sqlalchemy import text

from shared.db import db
from shared.scheduling import reconcile as reconciler
from worker.tasks.base import task
from worker.tasks.scheduler import COMPLETE_TASK

log = logging.getLogger(__name__)


@task("maintenance.ping")
def ping() -> dict:
    """Answer from a worker process, proving the round trip API -> broker -> worker -> database."""
    database_ok = db.session.execute(text("SELECT 1")).scalar() == 1
    return {"worker": socket.gethostname(), "database": database_ok}


def _send_completion(deployment_id, delay: float) -> None:
    current_app.send_task(COMPLETE_TASK, args=[str(deployment_id)], countdown=delay, queue="critical")


# Beat runs it every few seconds: no result is stored (a caller that wants the report asks for it with
# `ignore_result=False`), and a round that did something says so in the log.
@task("maintenance.reconcile", max_retries=0, ignore_result=True)
def reconcile() -> dict:
    """Request passes where something changed, complete due run_seconds, repair drifted counters, requeue
    what lost agents ran."""
    report = reconciler.reconcile(session=db.session, send_completion=_send_completion)
    if not report.quiet:
        log.info("reconcile: %s", report)
    return asdict(report)
