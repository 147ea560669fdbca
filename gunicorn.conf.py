"""gunicorn settings shared by `make up`, the Dockerfile and docker-compose.yml (each passes --config)."""

import os

# Errors gunicorn answers before the app (431, 414, a bad request line...) are JSON like every other error.
worker_class = "api.server.JsonErrorWorker"
# Threads: keep-alive connections, and a worker's CPU is not idle while a request waits on the database
# (issue 11's profile: the same two workers answer about twice as many submissions with four threads each).
threads = 4
# gunicorn 27 opens one control socket per user (~/.gunicorn/gunicorn.ctl): a second stack on the same
# machine takes it over and deletes it when it stops. Nothing here uses gunicornc, so there is none.
control_socket_disable = True


def child_exit(server, worker):
    """A worker exited: its live-only figures leave the metrics directory (its counts stay: shared/metrics.py)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
