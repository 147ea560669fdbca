"""The scheduler's rules (SCHEDULING.md), one case each, against the pure algorithm."""

import pytest

from shared.resources import Resources
from shared.scheduling.algorithm import Candidate, DependencyState, Nomination, Running, Start, plan_pass


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


# Two-phase stop on agent clusters (RUNTIME.md): resources are free only once the process has stopped.

PAUSED = "no live agent on this cluster since 12:00: nothing starts until one syncs"


def agent_pass(capacity, running_now, waiting, dependencies=None, stopping=(), nominations=None, **options):
    return plan_pass(
        capacity,
        running_now,
        waiting,
        dependencies,
        stopping=stopping,
        nominations=nominations,
        two_phase=True,
        **options,
    )


@pytest.mark.parametrize(
    ("two_phase", "starts", "nominations"),
    [
        (False, [Start("high", ("low",))], ()),
        (True, [], (Nomination("high", ("low",)),)),
    ],
    ids=["simulated-preempts-and-starts-at-once", "agent-nominates-and-the-victims-stop-first"],
)
def test_on_an_agent_cluster_preemption_nominates_instead_of_starting(two_phase, starts, nominations):
    plan = plan_pass(res(gpu=2), [running("low", 100, 1, gpu=2)], [queued("high", 900, gpu=2)], two_phase=two_phase)
    assert list(plan.starts) == starts
    assert plan.nominations == nominations
    assert plan.preemptions == {"low": "high"}
    if two_phase:
        assert plan.waiting["high"] == "waiting for 1 preempted deployment to stop"


@pytest.mark.parametrize("two_phase", [False, True], ids=["simulated", "agent"])
def test_a_stopping_deployment_holds_its_resources_until_it_has_stopped(two_phase):
    plan = plan_pass(
        res(gpu=2),
        [running("cancelled", 500, 1, gpu=2)],
        [queued("next", 100, gpu=1)],
        stopping={"cancelled"},
        two_phase=two_phase,
    )
    assert started(plan) == []
    assert plan.waiting["next"] == "needs 1 GPU; 0 GPU free, none reclaimable from lower priorities"


def test_a_stopping_deployment_is_never_a_victim_again_nor_counted_reclaimable():
    plan = agent_pass(
        res(gpu=3),
        [running("stopping", 100, 2, gpu=2), running("low", 100, 1, gpu=1)],
        [queued("high", 900, gpu=2)],
        stopping={"stopping"},
    )
    assert plan.preemptions == {}
    assert plan.waiting["high"] == "needs 2 GPU; 0 GPU free, 1 GPU more reclaimable from lower priorities"


def test_a_nominee_gets_no_new_victims_while_its_victims_stop():
    # "high" needs 3 GPU; its one victim frees 1 and 1 is free: "spare" could make up the rest, but is not taken.
    plan = agent_pass(
        res(gpu=4),
        [running("victim", 100, 1, gpu=1), running("spare", 100, 2, gpu=2)],
        [queued("high", 900, gpu=3)],
        stopping={"victim"},
        nominations={"high": ["victim"]},
    )
    assert plan.preemptions == {} and started(plan) == []
    assert (
        plan.waiting["high"] == "waiting for 1 preempted deployment to stop; even then it needs 3 GPU with 2 GPU free"
    )


@pytest.mark.parametrize(
    ("lower_request", "starts"),
    [(2, False), (1, True)],
    ids=["not-in-the-kept-room", "only-in-what-is-left"],
)
def test_the_room_a_nominee_needs_beyond_its_victims_is_kept_from_lower_priorities(lower_request, starts):
    # 2 GPU free; "high" needs 3, its stopping victim frees 2: 1 of the free GPUs is kept for it.
    plan = agent_pass(
        res(gpu=4),
        [running("victim", 100, 1, gpu=2)],
        [queued("high", 900, 1, gpu=3), queued("filler", 100, 2, gpu=lower_request)],
        stopping={"victim"},
        nominations={"high": ["victim"]},
    )
    assert plan.waiting["high"] == "waiting for 1 preempted deployment to stop"
    assert started(plan) == (["filler"] if starts else [])


def test_the_room_of_a_new_nomination_is_kept_in_the_same_pass():
    plan = agent_pass(
        res(gpu=4),
        [running("peer", 500, 1, gpu=1), running("victim", 100, 2, gpu=2)],
        [queued("high", 900, 1, gpu=3), queued("filler", 100, 2, gpu=1)],
    )
    assert plan.nominations == (Nomination("high", ("victim",)),)
    assert started(plan) == [] and plan.waiting["filler"].startswith("needs 1 GPU; 0 GPU free")


def test_a_higher_priority_takes_free_room_before_a_nominee():
    plan = agent_pass(
        res(gpu=4),
        [running("victim", 100, 1, gpu=2)],
        [queued("high", 900, 1, gpu=3), queued("urgent", 1000, 2, gpu=2)],
        stopping={"victim"},
        nominations={"high": ["victim"]},
    )
    assert started(plan) == ["urgent"]
    assert (
        plan.waiting["high"] == "waiting for 1 preempted deployment to stop; even then it needs 3 GPU with 2 GPU free"
    )


def test_a_nominee_starts_in_the_pass_after_its_victims_stopped():
    plan = agent_pass(
        res(gpu=4),
        [running("other", 500, 1, gpu=1)],
        [queued("high", 900, 1, gpu=3), queued("filler", 100, 2, gpu=1)],
        nominations={"high": ["victim"]},  # "victim" is gone from running: it stopped
    )
    assert started(plan) == ["high"]
    assert "filler" in plan.waiting


def test_a_nominee_that_fits_already_does_not_wait_for_its_victims():
    plan = agent_pass(
        res(gpu=4),
        [running("victim", 100, 1, gpu=2)],
        [queued("high", 900, gpu=2)],
        stopping={"victim"},
        nominations={"high": ["victim"]},
    )
    assert started(plan) == ["high"]


def test_a_nominee_whose_victims_stopped_but_whose_room_was_taken_may_preempt_anew():
    # Its victim stopped, but "urgent" took the room meanwhile: "high" is an ordinary candidate again.
    plan = agent_pass(
        res(gpu=4),
        [running("urgent", 1000, 3, gpu=2), running("low", 100, 2, gpu=2)],
        [queued("high", 900, 1, gpu=2)],
        nominations={"high": ["victim"]},
    )
    assert plan.nominations == (Nomination("high", ("low",)),)


def test_a_cancelled_nominee_keeps_no_room_and_its_victims_still_hold_theirs():
    plan = agent_pass(
        res(gpu=4),
        [running("victim", 100, 1, gpu=2)],
        [queued("filler", 100, 2, gpu=2), queued("too-much", 100, 3, gpu=1)],
        stopping={"victim"},
        nominations={"cancelled": ["victim"]},  # "cancelled" is no longer queued
    )
    assert started(plan) == ["filler"]
    assert "too-much" in plan.waiting


def test_a_victim_that_exited_on_its_own_no_longer_counts():
    plan = agent_pass(
        res(gpu=4),
        [running("victim", 100, 1, gpu=2)],
        [queued("high", 900, gpu=4)],
        stopping={"victim"},
        nominations={"high": ["victim", "exited"]},
    )
    assert plan.waiting["high"] == "waiting for 1 preempted deployment to stop"


def test_younger_deployments_of_the_same_priority_wait_behind_a_nominee():
    plan = agent_pass(
        res(gpu=4),
        [running("victim", 100, 1, gpu=2)],
        [queued("high", 900, 1, gpu=3), queued("younger", 900, 2, gpu=1)],
        stopping={"victim"},
        nominations={"high": ["victim"]},
    )
    assert started(plan) == []
    assert plan.waiting["younger"] == "waiting behind high (same priority, older)"


def test_a_nominee_behind_an_older_peer_still_keeps_its_room():
    plan = agent_pass(
        res(gpu=4),
        [running("peer", 900, 1, gpu=1), running("victim", 100, 2, gpu=1)],
        [queued("older", 900, 1, gpu=4), queued("nominee", 900, 2, gpu=3), queued("filler", 100, 3, gpu=2)],
        stopping={"victim"},
        nominations={"nominee": ["victim"]},
    )
    assert started(plan) == [] and "filler" in plan.waiting
    assert plan.waiting["nominee"] == "waiting behind older (same priority, older)"


def test_a_victim_counts_for_one_nominee_only():
    plan = agent_pass(
        res(gpu=4),
        [running("victim", 100, 1, gpu=2)],
        [queued("first", 900, 1, gpu=3), queued("second", 500, 2, gpu=3)],
        stopping={"victim"},
        nominations={"first": ["victim"], "second": ["victim"]},
    )
    assert plan.waiting["first"] == "waiting for 1 preempted deployment to stop"
    assert plan.waiting["second"].startswith("needs 3 GPU")


@pytest.mark.parametrize("two_phase", [False, True], ids=["simulated", "agent"])
def test_nothing_starts_and_nothing_is_preempted_while_admissions_are_paused(two_phase):
    dependencies = {"prep": DependencyState("prep", "running"), "bad": DependencyState("bad", "failed")}
    plan = plan_pass(
        res(gpu=4),
        [running("low", 100, 1, gpu=4)],
        [
            queued("fits", 100, gpu=0),
            queued("would-preempt", 900, gpu=2),
            queued("after-prep", depends_on=["prep"]),
            queued("after-bad", depends_on=["bad"]),
        ],
        dependencies,
        two_phase=two_phase,
        admissions_paused=PAUSED,
    )
    assert plan.starts == () and plan.nominations == () and plan.preemptions == {}
    assert plan.waiting == {
        "fits": PAUSED,
        "would-preempt": PAUSED,
        "after-prep": "waiting for dependency prep (running)",
    }
    assert [f.deployment_id for f in plan.failures] == ["after-bad"]


def test_the_victims_of_a_cancelled_nominee_are_still_stopping_and_never_victims_again():
    plan = agent_pass(
        res(gpu=2), [running("victim", 100, 1, gpu=2)], [queued("high", 900, gpu=2)], nominations={"gone": ["victim"]}
    )
    assert plan.preemptions == {}
    assert plan.waiting["high"] == "needs 2 GPU; 0 GPU free, none reclaimable from lower priorities"
