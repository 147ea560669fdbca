"""Every case of SCHEDULING.md end to end: HTTP API in-process, passes in a real Celery worker process."""


def test_a_deployment_that_fits_starts(api):
    cluster = api.cluster()
    deployment = api.wait_status(api.submit(cluster, "train", gpu=2), "running")
    assert deployment["status"] == "running" and deployment["attempts"] == 1 and deployment["started_at"]
    # A running deployment's reason says since when it runs (no run_seconds here: no "completes at").
    assert deployment["reason"].startswith("Running since ") and "completes at" not in deployment["reason"]
    assert api.cluster_state(cluster)["allocated"]["gpu"] == 2


def test_what_does_not_fit_stays_queued_saying_what_it_lacks(api):
    cluster = api.cluster(gpu=4)
    api.wait_status(api.submit(cluster, "big", gpu=3), "running")
    waiting = api.wait_reason(api.submit(cluster, "needs-two", gpu=2), "needs 2 GPU")
    assert waiting["status"] == "queued"
    assert waiting["reason"] == "needs 2 GPU; 1 GPU free, none reclaimable from lower priorities"


def test_a_higher_priority_preempts_a_minimal_set_of_lower_ones(api):
    cluster = api.cluster(gpu=4)
    small = api.submit(cluster, "small-low", priority=100, gpu=1)
    api.wait_status(small, "running")
    big = api.submit(cluster, "big-mid", priority=200, gpu=3)
    api.wait_status(big, "running")
    urgent = api.wait_status(api.submit(cluster, "urgent", priority=900, gpu=3), "running")
    assert urgent["status"] == "running"
    # "big-mid" alone makes room: "small-low" is reprieved.
    big_now, small_now = api.get(big), api.get(small)
    assert big_now["status"] == "queued" and big_now["preemptions"] == 1
    assert small_now["status"] == "running" and small_now["preemptions"] == 0
    preempted = [e for e in api.events(big) if e["type"] == "preempted"]
    assert len(preempted) == 1 and urgent["id"] in preempted[0]["message"]
    assert big_now["attempts"] == 1  # preemption is not a failure and uses no attempt


def test_equal_priority_is_never_preempted(api):
    cluster = api.cluster(gpu=2)
    first = api.submit(cluster, "first", priority=500, gpu=2)
    api.wait_status(first, "running")
    second = api.wait_reason(api.submit(cluster, "second", priority=500, gpu=2), "needs 2 GPU")
    assert second["status"] == "queued" and api.get(first)["status"] == "running"


def test_fifo_within_a_priority_and_backfill_below_it(api):
    cluster = api.cluster(gpu=4)
    api.wait_status(api.submit(cluster, "occupant", priority=500, gpu=3), "running")
    old = api.submit(cluster, "old-big", priority=500, gpu=2)
    api.wait_reason(old, "needs 2 GPU")
    young = api.wait_reason(api.submit(cluster, "young-small", priority=500, gpu=1), "waiting behind")
    assert young["status"] == "queued" and young["reason"] == "waiting behind old-big (same priority, older)"
    filler = api.wait_status(api.submit(cluster, "filler", priority=100, gpu=1), "running")
    assert filler["status"] == "running"


def test_a_dependency_must_complete_first(api):
    cluster = api.cluster()
    upstream = api.submit(cluster, "prepare")
    api.wait_status(upstream, "running")
    downstream = api.wait_reason(api.submit(cluster, "train", depends_on=[upstream]), "waiting for dependency")
    assert downstream["reason"] == "waiting for dependency prepare (running)"
    assert api.act(upstream, "complete").status_code == 200
    assert api.wait_status(downstream["id"], "running")["status"] == "running"


def test_a_failed_dependency_fails_its_dependents_transitively_across_clusters(api):
    first_cluster, second_cluster = api.cluster("a"), api.cluster("b")
    upstream = api.submit(first_cluster, "prepare", max_retries=0)
    api.wait_status(upstream, "running")
    middle = api.submit(second_cluster, "train", depends_on=[upstream])
    last = api.submit(first_cluster, "evaluate", depends_on=[middle])
    api.wait_reason(last, "waiting for dependency")
    assert api.act(upstream, "fail", reason="disk full").json["status"] == "failed"
    middle_now = api.wait_status(middle, "failed")
    assert middle_now["status"] == "failed" and "prepare" in middle_now["reason"]
    last_now = api.wait_status(last, "failed")
    assert last_now["status"] == "failed" and "train" in last_now["reason"]


def test_retries_run_at_most_max_retries_plus_one_times(api):
    cluster = api.cluster()
    deployment = api.submit(cluster, "flaky", max_retries=2)
    for attempt in (1, 2, 3):
        running = api.wait_status(deployment, "running")
        assert running["attempts"] == attempt
        api.act(deployment, "fail", reason=f"crash {attempt}")
    final = api.get(deployment)
    assert final["status"] == "failed" and final["attempts"] == 3
    assert [e["type"] for e in api.events(deployment)].count("started") == 3


def test_cancel_frees_resources_for_waiting_work(api):
    cluster = api.cluster(gpu=2)
    hog = api.submit(cluster, "hog", gpu=2)
    api.wait_status(hog, "running")
    waiting = api.submit(cluster, "next", gpu=2)
    api.wait_reason(waiting, "needs 2 GPU")
    assert api.act(hog, "cancel").json["status"] == "cancelled"
    assert api.wait_status(waiting, "running")["status"] == "running"


def test_growing_a_cluster_schedules_waiting_work(api):
    cluster = api.cluster(gpu=2)
    api.wait_status(api.submit(cluster, "occupant", gpu=1), "running")
    waiting = api.submit(cluster, "two-gpus", gpu=2)
    api.wait_reason(waiting, "needs 2 GPU")
    response = api.client.patch(f"/api/v1/clusters/{cluster}", json={"gpu": 3}, headers=api.admin.headers)
    assert response.status_code == 200
    assert api.wait_status(waiting, "running")["status"] == "running"


def test_run_seconds_completes_by_itself(api):
    cluster = api.cluster()
    deployment = api.submit(cluster, "demo", run_seconds=1)
    started = api.wait_status(deployment, "running")
    done = api.wait_status(deployment, "completed", timeout=15)
    assert done["status"] == "completed"
    assert api.events(deployment)[-1]["actor"] == "run_seconds timer"
    from datetime import datetime

    took = datetime.fromisoformat(done["finished_at"]) - datetime.fromisoformat(started["started_at"])
    assert 1.0 <= took.total_seconds() < 3.0


def test_a_burst_of_submissions_coalesces_into_one_pending_pass(api, celery_app, worker):
    from tests.worker.conftest import wait_for

    cluster = api.cluster(cpu=1000, ram_gb=1000)
    queues = ("critical", "high", "default", "low")
    wait_for(lambda: _idle(celery_app, worker), bool)  # passes of earlier tests are not counted as ours
    # Hold the worker off the queues so the whole burst arrives while a pass is pending.
    for queue in queues:
        celery_app.control.cancel_consumer(queue, destination=[worker.hostname], reply=True)
    try:
        before = _passes_run(celery_app)
        ids = [api.submit(cluster, f"burst-{i}", cpu=1, ram_gb=1) for i in range(200)]
    finally:
        for queue in queues:
            celery_app.control.add_consumer(queue, destination=[worker.hostname], reply=True)
    wait_for(lambda: api.cluster_state(cluster)["deployments"]["running"], lambda n: n == 200)
    assert api.cluster_state(cluster)["deployments"]["running"] == 200
    assert all(api.get(i)["status"] == "running" for i in ids[:3] + ids[-3:])
    assert _passes_run(celery_app) - before == 1, "200 submissions while a pass was pending cost one pass"


def _idle(celery_app, worker) -> bool:
    inspect = celery_app.control.inspect(destination=[worker.hostname], timeout=1)
    return all(
        not (found or {}).get(worker.hostname) for found in (inspect.active(), inspect.reserved(), inspect.scheduled())
    )


def _passes_run(celery_app) -> int:
    stats = celery_app.control.inspect(timeout=2).stats() or {}
    return sum(s.get("total", {}).get("scheduler.schedule_deployment", 0) for s in stats.values())
