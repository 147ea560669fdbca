"""The one retry policy of every task: transient faults retry with capped, jittered exponential backoff."""

from __future__ import annotations

import redis
from celery import shared_task
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm.exc import StaleDataError

from celeryconfig import MAX_COUNTDOWN_SECONDS
from shared.scheduling.passes import LockBusy

# Database or Redis unavailable, a serialization failure or deadlock (psycopg2 raises those as
# OperationalError), a lost version race, a busy cluster lock: all worth another try.
TRANSIENT = (OperationalError, DBAPIError, redis.ConnectionError, redis.TimeoutError, StaleDataError, LockBusy)
MAX_RETRIES = 5


def task(name: str, **options):
    """A Celery task with an explicit dotted name and the retry policy. When its tries are spent the
    periodic reconciler still picks the work up, so nothing waits forever."""
    policy = {
        "autoretry_for": TRANSIENT,
        "max_retries": MAX_RETRIES,
        "retry_backoff": 1,
        "retry_backoff_max": MAX_COUNTDOWN_SECONDS,
        "retry_jitter": True,
    }
    return shared_task(name=name, **(policy | options))
