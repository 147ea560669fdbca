"""Which Celery queue scheduling work for a deployment goes to."""

import pytest

from shared.queues import QUEUES, queue_for_priority


@pytest.mark.parametrize(
    "priority, queue",
    [
        (1000, "critical"),
        (900, "critical"),
        (899, "high"),
        (600, "high"),
        (599, "default"),
        (500, "default"),
        (300, "default"),
        (299, "low"),
        (0, "low"),
    ],
)
def test_priority_bands_map_to_queues(priority, queue):
    assert queue_for_priority(priority) == queue


def test_every_priority_maps_to_a_declared_queue():
    assert {queue_for_priority(p) for p in range(0, 1001)} == set(QUEUES)
