"""The worker's own figures, and the exporter that serves them to Prometheus.

Tasks run in Celery's prefork children; each writes its figures into PROMETHEUS_MULTIPROC_DIR. The
worker's main process, which runs no task and outlives its children, serves the sum of every file there
on WORKER_METRICS_HOST:WORKER_METRICS_PORT (`GET /metrics`, METRICS_TOKEN as for the API; port 0: none).
"""

from __future__ import annotations

import logging
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from celery.signals import task_retry, worker_process_shutdown, worker_ready, worker_shutdown
from prometheus_client import Counter, Histogram

from shared import metrics
from shared.config import get_settings

log = logging.getLogger(__name__)

PASS_SECONDS = Histogram(
    "hypervisor_pass_duration_seconds",
    "Duration of a committed scheduling pass (lock, plan, apply, commit).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ADMISSION_WAIT = Histogram(
    "hypervisor_admission_wait_seconds",
    "How long a deployment waited, from when it was last queued to its start; observed as it starts.",
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
)
PREEMPTIONS = Counter("hypervisor_preemptions", "Running deployments preempted to make room for higher priorities.")
TASK_RETRIES = Counter("hypervisor_task_retries", "Task retries after a transient fault, by task.", ["task"])


@task_retry.connect
def _count_retry(sender=None, **_kwargs) -> None:
    TASK_RETRIES.labels(getattr(sender, "name", "unknown")).inc()


@worker_process_shutdown.connect
def _forget_child(pid=None, **_kwargs) -> None:
    if pid:
        metrics.mark_process_dead(pid)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *_args) -> None:
        pass


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def exporter_app(environ, start_response):
    """`GET /metrics`: the worker's figures, summed over its processes."""
    if environ.get("PATH_INFO") != "/metrics":
        start_response("404 Not Found", [("Content-Type", "application/json")])
        return [b'{"code": 404, "status": "Not Found", "message": "Metrics are at /metrics."}']
    if not metrics.authorized(get_settings().metrics_token, environ.get("HTTP_AUTHORIZATION")):
        start_response("401 Unauthorized", [("Content-Type", "application/json"), ("WWW-Authenticate", "Bearer")])
        return [b'{"code": 401, "status": "Unauthorized", "message": "Send the metrics token as a Bearer token."}']
    start_response("200 OK", [("Content-Type", metrics.CONTENT_TYPE)])
    return [metrics.exposition()]


_server: WSGIServer | None = None


@worker_ready.connect
def start_exporter(**_kwargs) -> None:
    """Serve the worker's figures from its main process (WORKER_METRICS_PORT 0: not at all)."""
    global _server
    settings = get_settings()
    if not settings.worker_metrics_port:
        return
    if metrics.multiprocess_dir() is None:
        log.warning("PROMETHEUS_MULTIPROC_DIR is not set: the exporter shows only its own process's figures")
    try:
        _server = make_server(
            settings.worker_metrics_host,
            settings.worker_metrics_port,
            exporter_app,
            server_class=_ThreadingServer,
            handler_class=_QuietHandler,
        )
    except OSError as error:
        log.warning("worker metrics not served on port %s: %s", settings.worker_metrics_port, error)
        return
    threading.Thread(target=_server.serve_forever, name="metrics-exporter", daemon=True).start()
    log.info("worker metrics at http://%s:%s/metrics", settings.worker_metrics_host, settings.worker_metrics_port)


@worker_shutdown.connect
def _stop_exporter(**_kwargs) -> None:
    if _server is not None:
        _server.shutdown()
        _server.server_close()
