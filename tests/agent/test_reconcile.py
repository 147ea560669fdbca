"""The reconcile decision as a pure function: desired (the server's answer) against actual (the driver's runs)."""

from __future__ import annotations

from agent.protocol import Resources, RunItem, StopItem, SyncResponse
from agent.reconcile import LOST_MESSAGE, NOT_WANTED_REASON, Observed, Plan, Stop, reconcile


def item(deployment_id="a", generation=1, state="pending") -> RunItem:
    return RunItem(deployment_id, generation, state, deployment_id, "img", ["true"], {}, Resources(1, 1, 0), 30)


def desired(run=(), stop=()) -> SyncResponse:
    return SyncResponse("cluster", 2, 30, 240, list(run), list(stop))


def have(deployment_id="a", generation=1, **facts) -> Observed:
    return Observed((deployment_id, generation), grace_seconds=facts.pop("grace_seconds", 7), **facts)


def test_a_pending_run_it_does_not_have_is_started():
    pending = item(state="pending")
    assert reconcile(desired([pending]), [], set()) == Plan(start=[pending])


def test_a_run_it_already_has_is_not_started_twice():
    assert reconcile(desired([item(state="pending")]), [have()], set()) == Plan()
    assert reconcile(desired([item(state="running")]), [have()], set()) == Plan()


def test_a_running_run_it_does_not_have_is_lost():
    assert LOST_MESSAGE == "lost by the agent"
    assert reconcile(desired([item(state="running")]), [], set()) == Plan(lost=[("a", 1)])


def test_a_lost_run_already_reported_is_not_reported_again_nor_started():
    assert reconcile(desired([item(state="running")]), [], {("a", 1)}) == Plan()


def test_a_run_in_stop_is_stopped_with_the_servers_grace_and_reason():
    answer = desired(stop=[StopItem("a", 1, 5, "preempted by b")])
    assert reconcile(answer, [have()], set()) == Plan(stop=[Stop(("a", 1), 5, "stopped by the server: preempted by b")])


def test_a_run_in_neither_list_is_stopped_with_its_own_grace():
    assert reconcile(desired(), [have(grace_seconds=12)], set()) == Plan(stop=[Stop(("a", 1), 12, NOT_WANTED_REASON)])


def test_a_stale_generation_is_stopped_and_the_current_one_starts_only_once_it_has_ended():
    current = item(generation=2)
    plan = reconcile(desired([current]), [have(generation=1)], set())
    assert plan == Plan(stop=[Stop(("a", 1), 7, NOT_WANTED_REASON)])  # never two live runs of one deployment
    assert reconcile(desired([current]), [have(generation=1, stopping=True)], set()) == Plan()
    assert reconcile(desired([current]), [have(generation=1, finished=True)], set()) == Plan(start=[current])


def test_a_run_already_stopping_is_not_stopped_again():
    assert reconcile(desired(stop=[StopItem("a", 1, 5, None)]), [have(stopping=True)], set()) == Plan()
    assert reconcile(desired(), [have(stopping=True)], set()) == Plan()


def test_a_finished_run_is_kept_while_the_server_lists_it():
    finished = have(finished=True, final_reported=True)
    assert reconcile(desired([item(state="running")]), [finished], set()) == Plan()
    assert reconcile(desired(stop=[StopItem("a", 1, 5, None)]), [finished], set()) == Plan()


def test_a_finished_run_the_server_no_longer_lists_is_removed_once_its_end_was_reported():
    assert reconcile(desired(), [have(finished=True, final_reported=True)], set()) == Plan(remove=[("a", 1)])
    assert reconcile(desired(), [have(finished=True, final_reported=False)], set()) == Plan()


def test_a_run_that_failed_to_start_is_not_started_again_while_listed():
    assert reconcile(desired([item(state="pending")]), [have(finished=True)], set()) == Plan()


def test_a_stop_for_a_run_it_does_not_have_is_answered_stopped():
    answer = desired(stop=[StopItem("b", 3, 5, "cancelled"), StopItem("a", 1, 5, "cancelled")])
    assert reconcile(answer, [], set()) == Plan(absent=[("a", 1), ("b", 3)])
    assert reconcile(answer, [], {("a", 1), ("b", 3)}) == Plan()


def test_a_stop_for_a_pending_run_does_not_start_it():
    answer = desired([item(state="pending")], stop=[StopItem("a", 1, 5, "cancelled")])
    assert reconcile(answer, [], set()) == Plan(absent=[("a", 1)])


def test_reports_without_a_run_are_forgotten_once_the_server_no_longer_lists_them():
    plan = reconcile(desired([item("kept", state="running")]), [], {("kept", 1), ("gone", 1)})
    assert plan == Plan(forget=[("gone", 1)])


def test_every_gap_is_closed_in_one_pass():
    answer = desired(
        [item("new"), item("lost", state="running"), item("fine", state="running")],
        [StopItem("victim", 1, 3, "preempted")],
    )
    actual = [have("fine"), have("victim"), have("stray", 4), have("done", finished=True, final_reported=True)]
    plan = reconcile(answer, actual, set())
    assert plan.start == [answer.run[0]]
    assert plan.lost == [("lost", 1)]
    assert plan.stop == [
        Stop(("victim", 1), 3, "stopped by the server: preempted"),
        Stop(("stray", 4), 7, NOT_WANTED_REASON),
    ]
    assert plan.remove == [("done", 1)]
