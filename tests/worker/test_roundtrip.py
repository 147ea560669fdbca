"""A task sent through the API's Celery app is executed by a real worker process."""


def test_a_task_sent_by_the_api_app_runs_in_the_worker_process(app, worker):
    celery = app.extensions["celery"]
    result = celery.send_task("maintenance.ping", queue="default")
    answer = result.get(timeout=30)
    assert answer["database"] is True
    assert result.state == "SUCCESS"


def test_the_worker_consumes_every_declared_queue(celery_app, worker):
    from shared.queues import QUEUES

    active = celery_app.control.inspect(destination=[worker.hostname], timeout=5).active_queues()
    consumed = {queue["name"] for queue in active[worker.hostname]}
    assert consumed == set(QUEUES)


def test_each_queue_has_its_own_routing_key(celery_app, worker):
    # Queues bound with one shared key would each receive a copy of every message: work done 4 times.
    active = celery_app.control.inspect(destination=[worker.hostname], timeout=5).active_queues()
    keys = {queue["name"]: queue["routing_key"] for queue in active[worker.hostname]}
    assert keys == {name: name for name in keys}
