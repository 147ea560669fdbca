"""The worker's own figures, served by its main process for Prometheus, summed over its prefork children."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import WorkerProcess
from tests.worker.conftest import Api, wait_for


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def exporter(celery_app, tmp_path_factory):
    """A worker (two prefork children) with a multiprocess directory, as `make up` runs it; its exporter's URL."""
    metrics_dir = tmp_path_factory.mktemp("worker-metrics")
    port = _free_port()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "WORKER_METRICS_PORT": str(port)}
    process = WorkerProcess("metrics-worker", concurrency=2, env=env).start(celery_app)
    yield f"http://127.0.0.1:{port}/metrics"
    process.stop()


def scrape(url) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (our own http URL)
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def figure(url, name, **labels) -> float:
    return scrape(url).get((name, tuple(sorted(labels.items()))), 0.0)


def eventually(url, name, expected, **labels) -> float:
    return wait_for(lambda: figure(url, name, **labels), lambda value: value >= expected)


@pytest.fixture
def api(client, auth):
    organization, admin = auth.org("metrics")
    return Api(client, admin, organization)


def test_passes_admissions_and_preemptions_show_after_the_passes(api, exporter):
    passes_before = figure(exporter, "hypervisor_pass_duration_seconds_count")
    admitted_before = figure(exporter, "hypervisor_admission_wait_seconds_count")
    preempted_before = figure(exporter, "hypervisor_preemptions_total")
    cluster = api.cluster(cpu=4, ram_gb=8, gpu=0)
    first = api.submit(cluster, "first", priority=100, cpu=2)
    second = api.submit(cluster, "second", priority=100, cpu=2)
    api.wait_status(first, "running")
    api.wait_status(second, "running")

    assert eventually(exporter, "hypervisor_admission_wait_seconds_count", admitted_before + 2) == admitted_before + 2
    assert figure(exporter, "hypervisor_pass_duration_seconds_count") >= passes_before + 1
    assert figure(exporter, "hypervisor_pass_duration_seconds_sum") > 0
    # Every start waited less than the test has run.
    assert figure(exporter, "hypervisor_admission_wait_seconds_bucket", le="60.0") == admitted_before + 2

    urgent = api.submit(cluster, "urgent", priority=900, cpu=2)
    api.wait_status(urgent, "running")
    assert eventually(exporter, "hypervisor_preemptions_total", preempted_before + 1) == preempted_before + 1
    assert eventually(exporter, "hypervisor_admission_wait_seconds_count", admitted_before + 3) == admitted_before + 3


def test_a_task_retried_after_a_transient_fault_is_counted(api, exporter, settings):
    from shared.scheduling import passes

    task = "scheduler.schedule_deployment"
    retried_before = figure(exporter, "hypervisor_task_retries_total", task=task)
    cluster = api.cluster(cpu=4, ram_gb=8, gpu=0)
    # Another holder of the cluster's lock: the pass finds it busy and retries.
    lock = passes.cluster_lock(cluster)
    assert lock.acquire()
    try:
        waiting = api.submit(cluster, "waiting")
        assert (
            eventually(exporter, "hypervisor_task_retries_total", retried_before + 1, task=task) >= retried_before + 1
        )
    finally:
        lock.release()
    assert api.wait_status(waiting, "running")["status"] == "running"


def test_the_exporter_answers_other_paths_with_a_json_404(exporter):
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(exporter.replace("/metrics", "/other"), timeout=5)  # noqa: S310
    assert error.value.code == 404
    assert error.value.headers["Content-Type"] == "application/json"
