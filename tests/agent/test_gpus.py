"""The GPU allocator: explicit device ids, one run per GPU, recovery from labels (no GPU needed)."""

from __future__ import annotations

import pytest

from agent.drivers.gpus import GpuAllocator, GpusUnavailable


def test_each_run_gets_distinct_gpus_in_inventory_order():
    gpus = GpuAllocator(["0", "1", "2", "3"])
    assert gpus.allocate(("a", 1), 1) == ["0"]
    assert gpus.allocate(("b", 1), 2) == ["1", "2"]
    assert gpus.allocate(("c", 1), 1) == ["3"]
    assert gpus.free() == []


def test_a_run_asking_again_keeps_what_it_holds():
    gpus = GpuAllocator(["0", "1"])
    assert gpus.allocate(("a", 1), 1) == ["0"]
    assert gpus.allocate(("a", 1), 1) == ["0"]
    assert gpus.free() == ["1"]


def test_released_gpus_go_to_the_next_run():
    gpus = GpuAllocator(["0", "1"])
    gpus.allocate(("a", 1), 2)
    gpus.release(("a", 1))
    gpus.release(("never", 1))  # releasing what holds nothing is harmless
    assert gpus.allocate(("b", 1), 1) == ["0"]


def test_no_gpu_asked_is_no_gpu_given_even_without_inventory():
    assert GpuAllocator([]).allocate(("a", 1), 0) == []


def test_exhaustion_says_how_many_are_needed_and_free_and_assigns_nothing():
    gpus = GpuAllocator(["0", "1"])
    gpus.allocate(("a", 1), 1)
    with pytest.raises(GpusUnavailable, match=r"needs 2 GPU\(s\) but only 1 of this agent's 2 \(--gpus 0,1\) are free"):
        gpus.allocate(("b", 1), 2)
    assert gpus.held(("b", 1)) == [] and gpus.free() == ["1"]


def test_an_empty_inventory_says_so():
    with pytest.raises(GpusUnavailable, match=r"needs 1 GPU\(s\) but this agent has none \(start it with --gpus"):
        GpuAllocator([]).allocate(("a", 1), 1)


def test_recovered_assignments_are_not_handed_out_again():
    gpus = GpuAllocator(["0", "1", "2"])
    assert gpus.restore(("adopted", 4), ["1"]) == []
    assert gpus.allocate(("new", 1), 2) == ["0", "2"]
    with pytest.raises(GpusUnavailable):
        gpus.allocate(("another", 1), 1)


def test_a_gpu_recovered_twice_is_recorded_for_one_run_only():
    gpus = GpuAllocator(["0", "1"])
    gpus.restore(("first", 1), ["0"])
    assert gpus.restore(("second", 1), ["0", "1"]) == ["0"]
    assert gpus.held(("first", 1)) == ["0"] and gpus.held(("second", 1)) == ["1"]


def test_a_recovered_gpu_outside_the_inventory_stays_held_and_is_never_free():
    gpus = GpuAllocator(["0"])
    gpus.restore(("adopted", 1), ["7"])
    assert gpus.free() == ["0"]
    assert gpus.held(("adopted", 1)) == ["7"]


def test_many_runs_never_share_a_gpu():
    gpus = GpuAllocator([str(index) for index in range(8)])
    holders = {}
    for index in range(40):
        owner = ("run", index)
        try:
            devices = gpus.allocate(owner, 1 + index % 3)
        except GpusUnavailable:
            victim = next(iter(holders))
            gpus.release(victim)
            del holders[victim]
            continue
        holders[owner] = devices
        everything = [device for held in holders.values() for device in held]
        assert len(everything) == len(set(everything))
