"""Celery configuration: broker, queues, delivery guarantees and beat's schedule.

Read by worker/factory.py (`config_from_object("celeryconfig")`) for every process that sends or runs tasks.
"""

from kombu import Queue

from shared.config import get_settings
from shared.queues import DEFAULT_QUEUE, QUEUES

_settings = get_settings()

broker_url = _settings.redis_url
result_backend = _settings.redis_url
broker_connection_retry_on_startup = True

# The longest countdown any task uses (retry backoff is capped at this, see worker/base.py).
MAX_COUNTDOWN_SECONDS = 30
broker_transport_options = {
    # An unacknowledged message returns to the queue after this long: it must outlast every countdown
    # (an ETA message is held unacknowledged until it runs) plus the task's own run time.
    "visibility_timeout": 4 * MAX_COUNTDOWN_SECONDS,
    # Workers take from the queues in the order of QUEUES: critical work first.
    "queue_order_strategy": "priority",
}
result_backend_transport_options = {"visibility_timeout": 4 * MAX_COUNTDOWN_SECONDS}
result_expires = 3600

# Each queue its own routing key: queues sharing a key would each get a copy of every message.
task_queues = tuple(Queue(name, routing_key=name) for name in QUEUES)
task_default_queue = DEFAULT_QUEUE
task_default_routing_key = DEFAULT_QUEUE
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]

# A task is acknowledged only once it has run, and requeued if its worker dies: every task is idempotent.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
task_track_started = True
worker_send_task_events = True  # Flower shows tasks live
task_send_sent_event = True

imports = ("worker.tasks",)

timezone = "UTC"
beat_schedule = {
    "maintenance.reconcile": {
        "task": "maintenance.reconcile",
        "schedule": float(_settings.reconcile_seconds),
        # A reconcile that could not start within its period is superseded by the next one.
        "options": {"expires": float(_settings.reconcile_seconds), "queue": "critical"},
    },
}
