"""Prometheus figures: the exposition shared by the API's /metrics and the worker's exporter, and the
figures read from the database at scrape time.

Process-local figures (counters, histograms) live in prometheus_client's metrics. Under several processes
(gunicorn workers, Celery's prefork children) each process writes its own into PROMETHEUS_MULTIPROC_DIR
(memory-mapped files; prometheus_client reads the variable when it is first imported) and a scrape sums
every file of the directory, so it counts the same whichever process answers. Without the variable they
are the answering process's own, which is right only for a single process.

The database figures (deployments by status, capacity and allocation per cluster) are not kept in any
process: a collector reads them with two queries at each scrape, so every process tells the same truth.
"""

from __future__ import annotations

import hmac
import os
import uuid
from collections.abc import Iterable

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.deployments.models import Status
from shared.resources import CPU_SCALE, RAM_SCALE

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
STATUSES = tuple(status.value for status in Status)

_CLUSTERS = text(
    "SELECT CAST(id AS text), cpu_capacity_millis, ram_capacity_mb, gpu_capacity, "
    "cpu_allocated_millis, ram_allocated_mb, gpu_allocated FROM clusters"
)
_DEPLOYMENTS_BY_STATUS = text(
    "SELECT CAST(cluster_id AS text), status, count(*) FROM deployments GROUP BY cluster_id, status"
)
# How long each deployment waited before its (latest) start: since it was last queued (submitted,
# requeued after a failure or a preemption), by its status events; since it was created without one.
_ADMISSION_WAITS = text(
    "SELECT EXTRACT(EPOCH FROM d.started_at - COALESCE("
    "(SELECT max(e.at) FROM deployment_events AS e WHERE e.deployment_id = d.id AND e.to_status = 'queued' "
    "AND e.at <= d.started_at), d.created_at)) "
    "FROM deployments AS d WHERE d.id = ANY(CAST(:ids AS uuid[])) AND d.started_at IS NOT NULL"
)


def multiprocess_dir() -> str | None:
    """The directory processes share their figures through, or None (single-process figures)."""
    return os.environ.get(MULTIPROCESS_DIR_VARIABLE) or None


class DatabaseCollector:
    """Deployments by cluster and status, capacity and allocation per cluster, read at collection time."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def describe(self):
        return []

    def collect(self):
        deployments = GaugeMetricFamily(
            "hypervisor_deployments", "Deployments by cluster and status.", labels=["cluster_id", "status"]
        )
        capacity = GaugeMetricFamily(
            "hypervisor_cluster_capacity",
            "A cluster's capacity (cpu in cores, ram_gb in GB, gpu in GPUs).",
            labels=["cluster_id", "resource"],
        )
        allocated = GaugeMetricFamily(
            "hypervisor_cluster_allocated",
            "What a cluster's running deployments hold (cpu in cores, ram_gb in GB, gpu in GPUs).",
            labels=["cluster_id", "resource"],
        )
        connection = self.session.connection()
        counts: dict[str, dict[str, int]] = {}
        for cluster_id, cpu, ram, gpu, cpu_used, ram_used, gpu_used in connection.execute(_CLUSTERS):
            counts[cluster_id] = dict.fromkeys(STATUSES, 0)
            for metric, figures in ((capacity, (cpu, ram, gpu)), (allocated, (cpu_used, ram_used, gpu_used))):
                metric.add_metric([cluster_id, "cpu"], figures[0] / CPU_SCALE)
                metric.add_metric([cluster_id, "ram_gb"], figures[1] / RAM_SCALE)
                metric.add_metric([cluster_id, "gpu"], figures[2])
        for cluster_id, status, count in connection.execute(_DEPLOYMENTS_BY_STATUS):
            counts.setdefault(cluster_id, dict.fromkeys(STATUSES, 0))[status] = count
        self.session.rollback()
        for cluster_id, by_status in counts.items():
            for status, count in by_status.items():
                deployments.add_metric([cluster_id, status], count)
        return [deployments, capacity, allocated]


class _ProcessLocal:
    """The default registry's figures: this process's own (no multiprocess directory)."""

    def collect(self):
        return REGISTRY.collect()


def exposition(*collectors) -> bytes:
    """Every process's figures (or this process's without a multiprocess directory) and `collectors`',
    in Prometheus's text format."""
    registry = CollectorRegistry()
    directory = multiprocess_dir()
    if directory:
        multiprocess.MultiProcessCollector(registry, path=directory)
    else:
        registry.register(_ProcessLocal())
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry)


def authorized(expected_token: str, authorization: str | None) -> bool:
    """Whether an Authorization header carries `expected_token` as a Bearer token (any when none is set)."""
    if not expected_token:
        return True
    scheme, _, token = (authorization or "").strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected_token.encode())


def mark_process_dead(pid: int) -> None:
    """A process sharing the multiprocess directory has exited: drop its live-only gauges (counters and
    histograms stay: what it counted still happened)."""
    directory = multiprocess_dir()
    if directory:
        multiprocess.mark_process_dead(pid, directory)


def admission_waits(session: Session, deployment_ids: Iterable[uuid.UUID]) -> list[float]:
    """Seconds each of these started deployments waited, from when it was last queued to its start."""
    ids = "{" + ",".join(str(i) for i in deployment_ids) + "}"
    waits = [float(seconds) for (seconds,) in session.execute(_ADMISSION_WAITS, {"ids": ids})]
    session.rollback()
    return waits
