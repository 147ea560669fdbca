"""The scheduler's rules (SCHEDULING.md), one case each, against the pure algorithm."""

from shared.resources import Resources
from shared.scheduling.algorithm import Candidate, DependencyState, Running, plan_pass


def res(cpu=0, ram_gb=0, gpu=0):
    return Resources.from_api(cpu, ram_gb, gpu)


def queued(name, priority=500, created=0, depends_on=(), **request):
    return Candidate(name, name, priority, res(**request), created, tuple(depends_on))


def running(name, priority=500, started=0, **request):
    return Running(name, name, priority, res(**request), started)


def started(plan):
    return [start.deployment_id for start in plan.starts]


def test_what_fits_starts_in_priority_then_age_order():
    plan = plan_pass(
        res(cpu=8), [], [queued("young", 500, 2, cpu=1), queued("old", 500, 1, cpu=1), queued("urgent", 900, 3, cpu=1)]
    )
    assert started(plan) == ["urgent", "old", "young"]
    assert plan.waiting == {}


def test_an_exactly_full_cluster_starts_the_deployment_that_fills_it():
    plan = plan_pass(
        res(cpu=4, ram_gb=8, gpu=2),
        [running("half", cpu=2, ram_gb=4, gpu=1)],
        [queued("other-half", cpu=2, ram_gb=4, gpu=1)],
    )
    assert started(plan) == ["other-half"]


def test_zero_resource_deployments_always_fit():
    plan = plan_pass(res(gpu=1), [running("hog", gpu=1)], [queued("tiny", 0)])
    assert started(plan) == ["tiny"]


def test_what_does_not_fit_waits_saying_what_it_lacks():
    plan = plan_pass(res(gpu=4), [running("same", 500, gpu=3)], [queued("job", 500, gpu=4)])
    assert started(plan) == []
    assert plan.waiting["job"] == "needs 4 GPU; 1 GPU free, none reclaimable from lower priorities"


def test_the_reason_counts_what_lower_priorities_could_give_back():
    plan = plan_pass(
        res(gpu=4), [running("high", 900, 1, gpu=1), running("low", 100, 2, gpu=2)], [queued("job", 500, gpu=4)]
    )
    assert plan.waiting["job"] == "needs 4 GPU; 1 GPU free, 2 GPU more reclaimable from lower priorities"
    assert plan.preemptions == {}


def test_nothing_is_preempted_for_a_request_that_cannot_fit_even_then():
    plan = plan_pass(
        res(gpu=4), [running("peer", 500, 1, gpu=2), running("low", 100, 2, gpu=1)], [queued("job", 500, gpu=4)]
    )
    assert plan.preemptions == {} and started(plan) == []


def test_a_request_larger_than_the_cluster_waits_without_holding_anyone_up():
    plan = plan_pass(res(gpu=2), [], [queued("huge", 500, 1, gpu=8), queued("next", 500, 2, gpu=1)])
    assert "the cluster has 2 GPU in all" in plan.waiting["huge"]
    assert started(plan) == ["next"]


def test_higher_priority_preempts_lower_priority():
    plan = plan_pass(res(gpu=2), [running("low", 100, 1, gpu=2)], [queued("high", 900, gpu=2)])
    assert started(plan) == ["high"]
    assert plan.preemptions == {"low": "high"}


def test_equal_priority_is_never_preempted():
    plan = plan_pass(res(gpu=2), [running("peer", 500, 1, gpu=2)], [queued("job", 500, gpu=1)])
    assert plan.preemptions == {} and started(plan) == []


def test_higher_priority_is_never_preempted():
    plan = plan_pass(res(gpu=2), [running("boss", 900, 1, gpu=2)], [queued("job", 500, gpu=1)])
    assert plan.preemptions == {}


def test_victims_are_the_lowest_priorities_first():
    plan = plan_pass(
        res(gpu=3),
        [running("mid", 300, 1, gpu=1), running("lowest", 100, 2, gpu=1), running("low", 200, 3, gpu=1)],
        [queued("job", 900, gpu=1)],
    )
    assert plan.preemptions == {"lowest": "job"}


def test_among_equal_priorities_the_most_recently_started_is_preempted():
    plan = plan_pass(
        res(gpu=2), [running("older", 100, 1, gpu=1), running("newer", 100, 2, gpu=1)], [queued("job", 900, gpu=1)]
    )
    assert plan.preemptions == {"newer": "job"}


def test_more_than_one_victim_when_one_is_not_enough():
    plan = plan_pass(res(gpu=4), [running(f"v{i}", 100, i, gpu=1) for i in range(4)], [queued("job", 900, gpu=3)])
    assert sorted(plan.preemptions) == ["v1", "v2", "v3"]


def test_the_reprieve_spares_a_low_priority_victim_that_turned_out_unneeded():
    # Greedy takes "small" (lowest priority) first, then needs "big" as well; "big" alone suffices,
    # so the reprieve pass gives "small" back.
    plan = plan_pass(
        res(gpu=4), [running("small", 100, 1, gpu=1), running("big", 200, 2, gpu=3)], [queued("job", 900, gpu=3)]
    )
    assert plan.preemptions == {"big": "job"}


def test_multi_resource_victims_when_cpu_frees_but_gpu_does_not():
    # "cpu-only" frees plenty of CPU but no GPU: the GPU holder must go too, and the CPU holder is
    # spared if the GPU holder's CPU is enough.
    plan = plan_pass(
        res(cpu=8, gpu=1),
        [running("cpu-only", 100, 2, cpu=6), running("gpu-holder", 200, 1, cpu=2, gpu=1)],
        [queued("job", 900, cpu=2, gpu=1)],
    )
    assert plan.preemptions == {"gpu-holder": "job"}


def test_a_victim_cannot_restart_in_the_same_pass():
    plan = plan_pass(
        res(gpu=2), [running("low", 100, 1, gpu=2)], [queued("high", 900, 1, gpu=2), queued("other-low", 100, 2, gpu=2)]
    )
    assert started(plan) == ["high"]
    assert "low" not in started(plan)


def test_younger_same_priority_waits_behind_a_blocked_older_one():
    plan = plan_pass(
        res(gpu=4),
        [running("peer", 500, 1, gpu=3)],
        [queued("old-big", 500, 1, gpu=2), queued("young-small", 500, 2, gpu=1)],
    )
    assert started(plan) == []
    assert plan.waiting["young-small"] == "waiting behind old-big (same priority, older)"


def test_lower_priority_backfills_the_free_room():
    plan = plan_pass(
        res(gpu=4),
        [running("peer", 500, 1, gpu=3)],
        [queued("old-big", 500, 1, gpu=2), queued("filler", 100, 2, gpu=1)],
    )
    assert started(plan) == ["filler"]
    assert "old-big" in plan.waiting


def test_a_waiting_deployment_preempts_the_backfill_once_that_gives_it_room():
    # A later pass: the peer shrank to 1 GPU of 3, the filler holds 1; old-big (2 GPU) now fits by
    # preempting the filler.
    plan = plan_pass(
        res(gpu=3),
        [running("filler", 100, 2, gpu=1), running("peer", 500, 1, gpu=1)],
        [queued("old-big", 500, 1, gpu=2)],
    )
    assert plan.preemptions == {"filler": "old-big"}
    assert started(plan) == ["old-big"]


def test_dependencies_must_all_complete_first():
    dependencies = {"a": DependencyState("prep", "completed"), "b": DependencyState("fetch", "running")}
    plan = plan_pass(res(cpu=4), [], [queued("train", depends_on=["a", "b"], cpu=1)], dependencies)
    assert started(plan) == []
    assert plan.waiting["train"] == "waiting for dependency fetch (running)"
    dependencies["b"] = DependencyState("fetch", "completed")
    assert started(plan_pass(res(cpu=4), [], [queued("train", depends_on=["a", "b"], cpu=1)], dependencies)) == [
        "train"
    ]


def test_a_failed_dependency_fails_its_dependents_transitively():
    dependencies = {"prep": DependencyState("prep", "failed"), "train": DependencyState("train", "queued")}
    plan = plan_pass(
        res(cpu=4),
        [],
        [
            queued("train", depends_on=["prep"], cpu=1),
            queued("evaluate", depends_on=["train"], cpu=1),
            queued("unrelated", cpu=1),
        ],
        dependencies,
    )
    failures = {f.deployment_id: f for f in plan.failures}
    assert set(failures) == {"train", "evaluate"}
    assert failures["train"].reason == "dependency prep (prep) ended failed"
    assert failures["evaluate"].dependency_id == "train" and "ended failed" in failures["evaluate"].reason
    assert started(plan) == ["unrelated"]


def test_a_cancelled_dependency_fails_its_dependents():
    plan = plan_pass(
        res(cpu=4), [], [queued("train", depends_on=["x"], cpu=1)], {"x": DependencyState("prep", "cancelled")}
    )
    assert plan.failures[0].reason.endswith("ended cancelled")


def test_a_dependency_waiting_for_its_own_dependency_is_named():
    dependencies = {"prep": DependencyState("prep", "queued")}
    plan = plan_pass(res(cpu=4), [], [queued("train", depends_on=["prep"], cpu=1)], dependencies)
    assert plan.waiting["train"] == "waiting for dependency prep (queued)"


def test_ties_are_broken_by_id_so_the_plan_is_deterministic():
    jobs = [queued(name, 500, 7, gpu=1) for name in ("c", "a", "b")]
    plan = plan_pass(res(gpu=2), [], jobs)
    assert started(plan) == ["a", "b"]
    assert plan_pass(res(gpu=2), [], list(reversed(jobs))) == plan
