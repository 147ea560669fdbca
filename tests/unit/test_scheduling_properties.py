"""Property-based proof of the pass: thousands of random clusters, each plan replayed and checked.

Each plan is replayed step by step (preempt the victims, start the deployment) and checked against
SCHEDULING.md; victim sets are compared with a brute force over every subset of the candidates'
possible victims.
"""

from __future__ import annotations

import itertools
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.resources import Resources
from shared.scheduling.algorithm import Candidate, DependencyState, Running, plan_pass

PRIORITIES = st.sampled_from([0, 100, 100, 500, 500, 500, 900, 1000])
REQUEST = st.builds(Resources, st.integers(0, 4000), st.integers(0, 8000), st.integers(0, 4))
STATUSES = st.sampled_from(["completed", "completed", "running", "queued", "failed", "cancelled"])
SETTINGS = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def clusters(draw, max_running=6, max_queued=8):
    """A cluster with what runs on it (within capacity), what waits, and dependency states."""
    capacity = draw(st.builds(Resources, st.integers(0, 8000), st.integers(0, 16000), st.integers(0, 8)))
    running, used = [], Resources()
    for index in range(draw(st.integers(0, max_running))):
        request = draw(REQUEST)
        if (used + request).fits_in(capacity):
            used = used + request
            running.append(
                Running(f"r{index}", f"running-{index}", draw(PRIORITIES), request, draw(st.integers(0, 50)))
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
