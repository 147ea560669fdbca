"""Property-based proof of the pass: thousands of random clusters, each plan replayed and checked.

Each plan is replayed step by step (preempt the victims, start the deployment) and checked against
SCHEDULING.md; victim sets are compared with a brute force over every subset of the candidates'
possible victims. The same holds on agent clusters (RUNTIME.md's two-phase stop), where some running
deployments are stopping and some queued ones are nominated for the room their victims will free.
"""

from __future__ import annotations

import dataclasses
import itertools
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.resources import Resources
from shared.scheduling.algorithm import Candidate, DependencyState, Running, plan_pass

PAUSED = "no live agent since 2024-01-01T00:00:00Z: nothing starts until one syncs"

PRIORITIES = st.sampled_from([0, 100, 100, 500, 500, 500, 900, 1000])
REQUEST = st.builds(Resources, st.integers(0, 4000), st.integers(0, 8000), st.integers(0, 4))
STATUSES = st.sampled_from(["completed", "completed", "running", "queued", "failed", "cancelled"])
LOWER = st.sampled_from([0, 100, 100, 500, 500, 900])  # what runs on agent clusters: often preemptible
HIGHER = st.sampled_from([500, 900, 1000])  # what arrives later and may preempt
SETTINGS = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _beyond(request, freed):
    """What `request` needs beyond the room `freed` gives it."""
    return Resources(*(max(need - got, 0) for need, got in zip(request.as_tuple(), freed.as_tuple(), strict=True)))


def _least(a, b):
    return Resources(*(min(x, y) for x, y in zip(a.as_tuple(), b.as_tuple(), strict=True)))


@st.composite
def clusters(draw, max_running=6, max_queued=8, fill=False, running_priorities=PRIORITIES):
    """A cluster with what runs on it (within capacity), what waits, and dependency states.

    With `fill`, a running request that does not fit is cut down to the room left, so the cluster is full.
    """
    capacity = draw(st.builds(Resources, st.integers(0, 8000), st.integers(0, 16000), st.integers(0, 8)))
    running, used = [], Resources()
    for index in range(draw(st.integers(0, max_running))):
        request = draw(REQUEST)
        if fill:
            request = _least(request, capacity - used)
        if (used + request).fits_in(capacity):
            used = used + request
            running.append(
                Running(f"r{index}", f"running-{index}", draw(running_priorities), request, draw(st.integers(0, 50)))
            )
    external = {f"x{i}": DependencyState(f"external-{i}", draw(STATUSES)) for i in range(3)}
    queued = []
    for index in range(draw(st.integers(0, max_queued))):
        possible = list(external) + [c.id for c in queued]
        depends_on = (
            tuple(draw(st.lists(st.sampled_from(possible), max_size=2, unique=True)))
            if possible and draw(st.booleans())
            else ()
        )
        queued.append(
            Candidate(
                f"q{index}", f"queued-{index}", draw(PRIORITIES), draw(REQUEST), draw(st.integers(0, 50)), depends_on
            )
        )
    dependencies = dict(external)
    dependencies.update({c.id: DependencyState(c.name, "queued") for c in queued})
    return capacity, running, queued, dependencies


def _fits(request, room):
    return request.fits_in(room)


def replay(capacity, running, queued, plan):
    """Apply the plan in order, checking each step; returns the facts the properties need."""
    by_id = {c.id: c for c in queued}
    live = {r.id: r for r in running}
    used = sum((r.request for r in running), Resources())
    steps = []
    for start in plan.starts:
        candidate = by_id[start.deployment_id]
        free_before = capacity - used
        eligible = [live[i] for i in live if live[i].priority < candidate.priority]
        for victim_id in start.victims:
            victim = live.pop(victim_id)
            used = used - victim.request
        used = used + candidate.request
        assert used.fits_in(capacity), "a resource went over capacity"
        live[candidate.id] = Running(candidate.id, candidate.name, candidate.priority, candidate.request, 10**6)
        steps.append((candidate, free_before, eligible, [v for v in eligible if v.id in start.victims]))
    return steps


@SETTINGS
@given(clusters())
def test_no_resource_is_ever_over_capacity_and_every_deployment_is_accounted_for(cluster):
    capacity, running, queued, dependencies = cluster
    plan = plan_pass(capacity, running, queued, dependencies)
    replay(capacity, running, queued, plan)
    started = [s.deployment_id for s in plan.starts]
    failed = [f.deployment_id for f in plan.failures]
    everyone = started + failed + list(plan.waiting)
    assert sorted(everyone) == sorted(c.id for c in queued), "each queued deployment has exactly one outcome"
    assert all(reason for reason in plan.waiting.values())


@SETTINGS
@given(clusters())
def test_victims_have_strictly_lower_priority_and_never_restart_in_the_same_pass(cluster):
    capacity, running, queued, dependencies = cluster
    plan = plan_pass(capacity, running, queued, dependencies)
    priority = {c.id: c.priority for c in queued} | {r.id: r.priority for r in running}
    started = {s.deployment_id for s in plan.starts}
    for victim, beneficiary in plan.preemptions.items():
        assert priority[victim] < priority[beneficiary]
        assert victim not in started
        assert victim in {r.id for r in running}, "only deployments running at the start of the pass are victims"


@SETTINGS
@given(clusters())
def test_victim_sets_are_minimal_with_the_lowest_possible_highest_priority(cluster):
    capacity, running, queued, dependencies = cluster
    plan = plan_pass(capacity, running, queued, dependencies)
    for candidate, free, eligible, victims in replay(capacity, running, queued, plan):
        if not victims:
            assert _fits(candidate.request, free), "started without room and without preempting"
            continue
        assert not _fits(candidate.request, free), "preempted although it fitted already"
        freed = sum((v.request for v in victims), Resources())
        assert _fits(candidate.request, free + freed)
        for spared in victims:  # minimal: no victim could have been spared
            assert not _fits(candidate.request, free + freed - spared.request)
        best = min(
            max(v.priority for v in subset)
            for size in range(1, len(eligible) + 1)
            for subset in itertools.combinations(eligible, size)
            if _fits(candidate.request, free + sum((v.request for v in subset), Resources()))
        )
        assert max(v.priority for v in victims) == best


@SETTINGS
@given(clusters())
def test_nothing_is_preempted_for_a_request_that_cannot_fit(cluster):
    capacity, running, queued, dependencies = cluster
    plan = plan_pass(capacity, running, queued, dependencies)
    by_id = {c.id: c for c in queued}
    for start in plan.starts:
        if start.victims:
            assert by_id[start.deployment_id].request.fits_in(capacity)


@SETTINGS
@given(clusters())
def test_no_younger_same_priority_deployment_starts_while_an_older_one_waits_for_resources(cluster):
    capacity, running, queued, dependencies = cluster
    plan = plan_pass(capacity, running, queued, dependencies)
    started = {s.deployment_id for s in plan.starts}
    for waiting_id, reason in plan.waiting.items():
        if not reason.startswith("needs") or "in all" in reason:
            continue  # waits for a dependency, behind another, or can never fit: it holds no one up
        waiter = next(c for c in queued if c.id == waiting_id)
        for other in queued:
            if other.id in started and other.priority == waiter.priority:
                assert (other.created, other.id) < (waiter.created, waiter.id), (
                    f"{other.id} started though older {waiter.id} waits for resources"
                )


@SETTINGS
@given(clusters())
def test_a_waiting_deployment_could_not_have_started(cluster):
    capacity, running, queued, dependencies = cluster
    plan = plan_pass(capacity, running, queued, dependencies)
    for waiting_id, reason in plan.waiting.items():
        candidate = next(c for c in queued if c.id == waiting_id)
        if reason.startswith("waiting for dependency"):
            assert any(dependencies[d].status != "completed" for d in candidate.depends_on)
        elif reason.startswith("needs") and "in all" in reason:
            assert not candidate.request.fits_in(capacity)


@SETTINGS
@given(clusters())
def test_failures_follow_failed_or_cancelled_dependencies_transitively(cluster):
    capacity, running, queued, dependencies = cluster
    plan = plan_pass(capacity, running, queued, dependencies)
    failed = {f.deployment_id for f in plan.failures}
    expected = set()
    changed = True
    while changed:
        changed = False
        for candidate in queued:
            if candidate.id in expected:
                continue
            if any(dependencies[d].status in ("failed", "cancelled") or d in expected for d in candidate.depends_on):
                expected.add(candidate.id)
                changed = True
    assert failed == expected


@SETTINGS
@given(clusters(), st.randoms(use_true_random=False))
def test_the_plan_does_not_depend_on_input_order(cluster, shuffler: random.Random):
    capacity, running, queued, dependencies = cluster
    plan = plan_pass(capacity, running, queued, dependencies)
    shuffled_running, shuffled_queued = list(running), list(queued)
    shuffler.shuffle(shuffled_running)
    shuffler.shuffle(shuffled_queued)
    assert plan_pass(capacity, shuffled_running, shuffled_queued, dependencies) == plan


# Two-phase stop (agent clusters)


@st.composite
def agent_clusters(draw):
    """An agent cluster with stopping runs and nominations, and what happened since they were made.

    A full cluster (so that preemption is common). Some queued deployments are nominees: lower-priority
    runs stop for them, as many as made them fit when they were nominated (some have stopped since, or
    exited on their own: gone from `running`). Some runs are being cancelled, a nominee may have been
    cancelled (its victims still stop), and higher priorities may have arrived since.
    """
    capacity, running, queued, dependencies = draw(clusters(max_running=8, fill=True, running_priorities=LOWER))
    stopping = {r.id for r in running if draw(st.integers(0, 5)) == 0}  # being cancelled
    free = capacity - sum((r.request for r in running), Resources())
    nominations: dict[str, list[str]] = {}
    available = [r for r in running if r.id not in stopping]
    cancelled = Candidate("cancelled", "cancelled", 1000, capacity, 0)  # a nominee no longer queued
    odds = draw(st.integers(0, 3))  # 0: no nominations, so that new ones are common
    for position, nominee in enumerate([*queued, cancelled]):
        lower = [r for r in available if r.priority < nominee.priority]
        if nominee.depends_on or not lower or draw(st.integers(0, 2)) >= odds:
            continue
        nominee = dataclasses.replace(nominee, request=_least(nominee.request, capacity))  # it fitted once
        if position < len(queued):
            queued[position] = nominee
        victims, freed = [], free
        for victim in draw(st.permutations(lower)):
            if nominee.request.fits_in(freed):
                break
            victims.append(victim.id)
            freed = freed + victim.request
        victims = victims or [lower[0].id]
        available = [r for r in available if r.id not in victims]
        stopping.update(victims)
        gone = [f"gone-{nominee.id}"] if draw(st.integers(0, 3)) == 0 else []  # stopped or exited meanwhile
        nominations[nominee.id] = victims + gone
    for index in range(draw(st.integers(0, 3))):
        name = f"arrived-{index}"
        queued.append(Candidate(name, name, draw(HIGHER), draw(REQUEST), 60 + index))
    return capacity, running, queued, dependencies, stopping, nominations


def _in_order(queued):
    return sorted(queued, key=lambda c: (-c.priority, c.created, c.id))


def _live_victims(candidate, running, nominations):
    return [r for r in running if r.id in nominations.get(candidate.id, ())]


def _used_after(running, plan, queued):
    by_id = {c.id: c for c in queued}
    return sum((r.request for r in running), Resources()) + sum(
        (by_id[s.deployment_id].request for s in plan.starts), Resources()
    )


def replay_two_phase(capacity, running, queued, stopping, nominations, plan):
    """Walk the candidates in pass order, keeping the room each nominee keeps; returns each new nomination's facts."""
    started = {s.deployment_id for s in plan.starts}
    nominated_now = {n.deployment_id: n.victims for n in plan.nominations}
    holding = set(stopping) | {v for victims in nominations.values() for v in victims}
    live = {r.id: r for r in running}
    free = capacity - sum((r.request for r in running), Resources())
    steps = []
    for candidate in _in_order(queued):
        if candidate.id in started:
            assert candidate.request.fits_in(free), "started without room"
            free = free - candidate.request
            live[candidate.id] = Running(candidate.id, candidate.name, candidate.priority, candidate.request, 10**6)
        elif candidate.id in nominated_now:
            eligible = [r for r in live.values() if r.priority < candidate.priority and r.id not in holding]
            victims = [live[v] for v in nominated_now[candidate.id]]
            assert all(v in eligible for v in victims), "a victim must be running, lower and not already stopping"
            steps.append((candidate, free, eligible, victims))
            holding.update(nominated_now[candidate.id])
            free = free - _beyond(candidate.request, sum((v.request for v in victims), Resources()))
        elif (victims := _live_victims(candidate, running, nominations)) and "in all" not in plan.waiting.get(
            candidate.id, "in all"
        ):
            free = free - _least(_beyond(candidate.request, sum((v.request for v in victims), Resources())), free)
        assert Resources().fits_in(free), "reserved more than was free"
    return steps


def _plan(cluster, **overrides):
    capacity, running, queued, dependencies, stopping, nominations = cluster
    options = {"stopping": stopping, "nominations": nominations, "two_phase": True} | overrides
    return plan_pass(capacity, running, queued, dependencies, **options)


@SETTINGS
@given(agent_clusters())
def test_two_phase_never_goes_over_capacity_counting_stopping_runs(cluster):
    capacity, running, queued, _, stopping, nominations = cluster
    plan = _plan(cluster)
    assert all(not start.victims for start in plan.starts), "on an agent cluster nothing starts by preempting"
    assert _used_after(running, plan, queued).fits_in(capacity), "stopping runs hold their resources"
    replay_two_phase(capacity, running, queued, stopping, nominations, plan)
    outcomes = [s.deployment_id for s in plan.starts] + [f.deployment_id for f in plan.failures] + list(plan.waiting)
    assert sorted(outcomes) == sorted(c.id for c in queued), "each queued deployment has exactly one outcome"
    assert {n.deployment_id for n in plan.nominations} <= set(plan.waiting), "a nominee stays queued"


@SETTINGS
@given(agent_clusters(), st.booleans())
def test_no_new_victims_for_a_nominee_while_its_victims_stop_and_none_among_stopping_runs(cluster, two_phase):
    _, running, queued, _, stopping, nominations = cluster
    plan = _plan(cluster, two_phase=two_phase)
    holding = set(stopping) | {v for victims in nominations.values() for v in victims}
    assert not holding & set(plan.preemptions), "a stopping deployment is never chosen as a victim again"
    for candidate in queued:
        if _live_victims(candidate, running, nominations):
            assert candidate.id not in plan.preemptions.values(), f"{candidate.id} got new victims"
            reason = plan.waiting.get(candidate.id)  # None: it started, as it fitted without them
            if reason and "in all" not in reason:
                assert "preempted deployment" in reason or reason.startswith("waiting behind")


@SETTINGS
@given(agent_clusters())
def test_lower_priorities_never_take_a_nominated_room(cluster):
    """What a nominee needs beyond its victims is as free after the pass as if nothing lower were queued."""
    capacity, running, queued, dependencies, stopping, nominations = cluster
    plan = _plan(cluster)
    free = capacity - _used_after(running, plan, queued)
    fresh = {n.deployment_id: n.victims for n in plan.nominations}
    for candidate in queued:
        if candidate.id in fresh:
            victims = [r for r in running if r.id in fresh[candidate.id]]
        elif candidate.id in plan.waiting and "in all" not in plan.waiting[candidate.id]:
            victims = _live_victims(candidate, running, nominations)
        else:
            continue
        if not victims:
            continue
        higher = [c for c in queued if c.priority >= candidate.priority]
        alone = plan_pass(
            capacity, running, higher, dependencies, stopping=stopping, nominations=nominations, two_phase=True
        )
        free_alone = capacity - _used_after(running, alone, higher)
        room = _beyond(candidate.request, sum((v.request for v in victims), Resources()))
        assert _least(free, room) == _least(free_alone, room), f"a lower priority took room kept for {candidate.id}"


@SETTINGS
@given(agent_clusters())
def test_no_younger_same_priority_deployment_starts_while_an_older_one_waits_for_room_or_victims(cluster):
    queued = cluster[2]
    plan = _plan(cluster)
    started = {s.deployment_id for s in plan.starts}
    for waiting_id, reason in plan.waiting.items():
        if not (reason.startswith("needs") or "preempted deployment" in reason) or "in all" in reason:
            continue
        waiter = next(c for c in queued if c.id == waiting_id)
        for other in queued:
            if other.id in started and other.priority == waiter.priority:
                assert (other.created, other.id) < (waiter.created, waiter.id)


@SETTINGS
@given(agent_clusters())
def test_two_phase_victim_sets_are_minimal_with_the_lowest_possible_highest_priority(cluster):
    capacity, running, queued, _, stopping, nominations = cluster
    plan = _plan(cluster)
    for candidate, free, eligible, victims in replay_two_phase(capacity, running, queued, stopping, nominations, plan):
        assert not _fits(candidate.request, free), "nominated although it fitted already"
        freed = sum((v.request for v in victims), Resources())
        assert _fits(candidate.request, free + freed)
        for spared in victims:
            assert not _fits(candidate.request, free + freed - spared.request)
        best = min(
            max(v.priority for v in subset)
            for size in range(1, len(eligible) + 1)
            for subset in itertools.combinations(eligible, size)
            if _fits(candidate.request, free + sum((v.request for v in subset), Resources()))
        )
        assert max(v.priority for v in victims) == best


@SETTINGS
@given(agent_clusters())
def test_the_first_nominee_in_line_starts_in_the_pass_after_its_victims_stopped(cluster):
    capacity, running, queued, dependencies, stopping, nominations = cluster
    plan = _plan(cluster)
    started = {s.deployment_id for s in plan.starts}
    failed = {f.deployment_id for f in plan.failures}
    ahead = [
        c
        for c in _in_order(queued)
        if c.id in plan.waiting and not plan.waiting[c.id].startswith("waiting for dependency")
        if "in all" not in plan.waiting[c.id]
    ]
    if not ahead or not plan.waiting[ahead[0].id].endswith("to stop"):
        return
    first = ahead[0]  # nothing ahead of it waits for resources
    nominations = dict(nominations) | {n.deployment_id: n.victims for n in plan.nominations}
    gone = set(nominations[first.id])
    by_id = {c.id: c for c in queued}
    still_running = [r for r in running if r.id not in gone] + [
        Running(i, by_id[i].name, by_id[i].priority, by_id[i].request, 10**6) for i in started
    ]
    still_queued = [c for c in queued if c.id not in started | failed]
    stopping = (set(stopping) | {v for n in plan.nominations for v in n.victims}) - gone
    after = plan_pass(
        capacity, still_running, still_queued, dependencies, stopping=stopping, nominations=nominations, two_phase=True
    )
    assert first.id in {s.deployment_id for s in after.starts}


@SETTINGS
@given(agent_clusters(), st.booleans())
def test_nothing_starts_and_nothing_is_preempted_while_admissions_are_paused(cluster, two_phase):
    plan = _plan(cluster, two_phase=two_phase, admissions_paused=PAUSED)
    running_plan = _plan(cluster, two_phase=two_phase)
    assert plan.starts == () and plan.nominations == () and plan.preemptions == {}
    assert plan.failures == running_plan.failures, "dependency failures still apply"
    for reason in plan.waiting.values():
        assert reason == PAUSED or reason.startswith("waiting for dependency")
    assert set(plan.waiting) == set(running_plan.waiting) | {s.deployment_id for s in running_plan.starts}


@SETTINGS
@given(agent_clusters(), st.randoms(use_true_random=False))
def test_the_two_phase_plan_does_not_depend_on_input_order(cluster, shuffler: random.Random):
    capacity, running, queued, dependencies, stopping, nominations = cluster
    plan = _plan(cluster)
    shuffled_running, shuffled_queued = list(running), list(queued)
    shuffler.shuffle(shuffled_running)
    shuffler.shuffle(shuffled_queued)
    shuffled_nominations = {k: shuffler.sample(list(v), len(v)) for k, v in reversed(nominations.items())}
    shuffled = (capacity, shuffled_running, shuffled_queued, dependencies, stopping, shuffled_nominations)
    assert _plan(shuffled) == plan
