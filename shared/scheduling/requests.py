"""Asking for a scheduling pass over a cluster.

Every change that can free or claim resources calls `request_pass` after its commit. Requests for a
cluster that already has a pass pending coalesce into that one: a Redis marker is set with NX, and
only the request that sets it sends a task. The pass clears the marker as it begins, so a change
made during a pass always gets a pass of its own after it.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable

import redis
from celery import current_app as current_celery

from shared.config import get_settings
from shared.queues import queue_for_priority
from shared.redis import get_redis

log = logging.getLogger(__name__)

PENDING = "hv:pass:pending:"
# A marker outlives a lost message only this long: then the next request sends a task again (and the
# periodic reconciler requests passes for every cluster with queued work anyway).
PENDING_TTL_SECONDS = 10
SCHEDULE_TASK = "scheduler.schedule_deployment"
# The pass waits this long before it runs, so that a burst of requests (1,000 submissions) is absorbed
# by the few passes pending at any moment instead of costing a pass each.
DEBOUNCE_SECONDS = 0.2


def pending_key(cluster_id: uuid.UUID | str) -> str:
    return f"{PENDING}{cluster_id}"


def request_pass(cluster_id: uuid.UUID | str, priority: int | Callable[[], int] = 500) -> bool:
    """Make sure a pass over the cluster will run; True if this call enqueued it, False if one was pending.

    `priority` is the highest priority waiting on the cluster: the pass goes on that priority's queue.
    Given as a function, it is asked only when this call does enqueue the pass (a query saved on every
    request that coalesces into a pending one).
    A Redis outage is logged, not raised: the caller's change is committed, and the reconciler will
    request the pass once Redis is back.
    """
    client = get_redis(get_settings().redis_url)
    key = pending_key(cluster_id)
    try:
        if not client.set(key, "1", nx=True, ex=PENDING_TTL_SECONDS):
            return False
    except (redis.RedisError, OSError) as error:
        log.warning("could not request a pass for cluster %s (the reconciler will): %s", cluster_id, error)
        return False
    try:
        if callable(priority):
            priority = priority()
        current_celery.send_task(
            SCHEDULE_TASK, args=[str(cluster_id)], queue=queue_for_priority(priority), countdown=DEBOUNCE_SECONDS
        )
    except Exception as error:  # the broker refused: do not leave a marker that blocks the next request
        log.warning("could not enqueue a pass for cluster %s (the reconciler will): %s", cluster_id, error)
        with contextlib.suppress(redis.RedisError, OSError):
            client.delete(key)
        return False
    return True
