"""Celery queues, and which one a deployment's scheduling work goes to."""

# Workers consume these in this order (Redis transport, queue_order_strategy=priority): a pass for a
# critical deployment is taken before any waiting low-priority work.
QUEUES = ("critical", "high", "default", "low")
DEFAULT_QUEUE = "default"


def queue_for_priority(priority: int) -> str:
    """The Celery queue for work on behalf of a deployment of this priority (0-1000).

    900-1000 -> critical, 600-899 -> high, 300-599 -> default, 0-299 -> low.
    """
    if priority >= 900:
        return "critical"
    if priority >= 600:
        return "high"
    if priority >= 300:
        return "default"
    return "low"
