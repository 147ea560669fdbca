"""One scheduling pass over one cluster, as a pure function: SCHEDULING.md's rules and nothing else.

`plan_pass` takes plain values (the cluster's capacity, what runs on it, what waits for it, the states
of the dependencies involved) and returns a `Plan`: which deployments start, which running ones are
preempted and for whom, which queued ones fail because a dependency failed, and why each of the rest
waits. No database, Redis, clock or randomness: the same input always gives the same plan (ties are
broken by id last). Persistence and locking wrap it elsewhere (shared/scheduling/passes.py).

The rules, in the order the pass applies them:

1. Candidates are the queued deployments whose dependencies have all completed, taken by priority
   (high to low), then age (oldest first), then id.
2. A candidate that fits in what is free starts.
3. One that does not, but would fit if running deployments of *strictly lower* priority made room,
   preempts a minimal set of them: greedy in the order lowest priority first and, within a priority,
   most recently started first, then a reprieve pass in reverse that spares every victim not needed.
   The set is minimal (no victim could be spared) and its highest priority is as low as possible.
4. Otherwise it waits, and its reason says what it lacks. A request larger than the whole cluster
   neither preempts nor holds anyone up: it cannot run until the cluster grows.
5. While a candidate waits for resources, younger candidates of the same priority wait behind it
   (FIFO within a priority); lower priorities may still use the free room (backfill).

Victims are not candidates of the pass that preempts them, so none can restart in it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from shared.resources import NAMES, Resources, describe

MAX_PRIORITY = 1000
FAILED_STATES = frozenset({"failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class Running:
    """A deployment running on the cluster. `started` orders starts: larger is more recent."""

    id: str
    name: str
    priority: int
    request: Resources
    started: int


@dataclass(frozen=True, slots=True)
class Candidate:
    """A queued deployment of the cluster. `created` orders ages: smaller is older."""

    id: str
    name: str
    priority: int
    request: Resources
    created: int
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DependencyState:
    """A deployment some candidate depends on (on any cluster of the organization)."""

    name: str
    status: str


_MISSING = DependencyState(name="", status="missing")


@dataclass(frozen=True, slots=True)
class Start:
    """Start `deployment_id`, after preempting `victims` (possibly none)."""

    deployment_id: str
    victims: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Failure:
    """`deployment_id` can never run: `dependency_id` ended failed or cancelled (or will, in this pass)."""

    deployment_id: str
    dependency_id: str
    reason: str


@dataclass(frozen=True)
class Plan:
    starts: tuple[Start, ...] = ()
    failures: tuple[Failure, ...] = ()
    waiting: Mapping[str, str] = field(default_factory=dict)

    @property
    def preemptions(self) -> dict[str, str]:
        """Victim id -> the id of the deployment it made room for."""
        return {victim: start.deployment_id for start in self.starts for victim in start.victims}


class _Reclaimable:
    """Resources held by running deployments, summed by priority (a Fenwick tree over 0..1000).

    `below(p)` answers "what would preempting everything of priority < p free?" in O(log 1001).
    """

    def __init__(self) -> None:
        self._size = MAX_PRIORITY + 1
        self._trees = [[0] * (self._size + 1) for _ in range(3)]

    def add(self, priority: int, request: Resources, sign: int = 1) -> None:
        index = priority + 1
        values = request.as_tuple()
        while index <= self._size:
            for tree, value in zip(self._trees, values, strict=True):
                tree[index] += sign * value
            index += index & -index

    def below(self, priority: int) -> Resources:
        index, totals = priority, [0, 0, 0]  # priorities 0..priority-1 are tree indexes 1..priority
        while index > 0:
            for position, tree in enumerate(self._trees):
                totals[position] += tree[index]
            index -= index & -index
        return Resources(*totals)


class _RunningSet:
    """The running deployments during a pass: free room, reclaimable room, and victims in preemption order."""

    def __init__(self, capacity: Resources, running: Sequence[Running]) -> None:
        self.capacity = capacity
        self.free = capacity
        self.reclaimable = _Reclaimable()
        # Per priority, most recently started first: the order in which they are preempted.
        self.by_priority: dict[int, list[Running]] = {}
        for deployment in sorted(running, key=lambda r: (-r.started, r.id)):
            self._add(deployment, newest=False)
        self._next_start = max((r.started for r in running), default=0) + 1

    def _add(self, deployment: Running, newest: bool) -> None:
        self.free = self.free - deployment.request
        self.reclaimable.add(deployment.priority, deployment.request)
        bucket = self.by_priority.setdefault(deployment.priority, [])
        if newest:
            bucket.insert(0, deployment)
        else:
            bucket.append(deployment)

    def _remove(self, deployment: Running) -> None:
        self.free = self.free + deployment.request
        self.reclaimable.add(deployment.priority, deployment.request, sign=-1)
        self.by_priority[deployment.priority].remove(deployment)

    def start(self, candidate: Candidate) -> None:
        started = Running(candidate.id, candidate.name, candidate.priority, candidate.request, self._next_start)
        self._next_start += 1
        self._add(started, newest=True)

    def victims_for(self, candidate: Candidate) -> list[Running]:
        """A minimal set of strictly lower-priority deployments whose preemption makes `candidate` fit.

        Greedy in preemption order, then a reprieve pass in reverse. A deployment that would free none of
        what is still lacking is passed over: the reprieve would spare it anyway (what it frees was already
        covered by those taken before it), so the set is the same, found faster. Plain ints: this is the
        hot loop of a pass.
        """
        need = candidate.request
        cpu, ram, gpu = self.free.cpu_millis, self.free.ram_mb, self.free.gpu
        chosen: list[Running] = []
        for priority in sorted(p for p in self.by_priority if p < candidate.priority):
            for deployment in self.by_priority[priority]:
                held = deployment.request
                if not (
                    (cpu < need.cpu_millis and held.cpu_millis)
                    or (ram < need.ram_mb and held.ram_mb)
                    or (gpu < need.gpu and held.gpu)
                ):
                    continue
                chosen.append(deployment)
                cpu, ram, gpu = cpu + held.cpu_millis, ram + held.ram_mb, gpu + held.gpu
                if cpu >= need.cpu_millis and ram >= need.ram_mb and gpu >= need.gpu:
                    return self._reprieve(need, chosen, cpu, ram, gpu)
        raise AssertionError("victims_for called for a candidate that cannot fit")  # pragma: no cover

    @staticmethod
    def _reprieve(need: Resources, chosen: list[Running], cpu: int, ram: int, gpu: int) -> list[Running]:
        kept: list[Running] = []
        for deployment in reversed(chosen):
            held = deployment.request
            if (
                cpu - held.cpu_millis >= need.cpu_millis
                and ram - held.ram_mb >= need.ram_mb
                and gpu - held.gpu >= need.gpu
            ):
                cpu, ram, gpu = cpu - held.cpu_millis, ram - held.ram_mb, gpu - held.gpu  # not needed: spared
            else:
                kept.append(deployment)
        kept.reverse()
        return kept

    def preempt(self, victims: list[Running]) -> None:
        for victim in victims:
            self._remove(victim)


def _lacking(request: Resources, free: Resources, reclaimable: Resources) -> str:
    parts = []
    for name, need, have, more in zip(NAMES, request.as_tuple(), free.as_tuple(), reclaimable.as_tuple(), strict=True):
        if need > have + more:
            extra = (
                f"{describe(name, more)} more reclaimable from lower priorities"
                if more
                else "none reclaimable from lower priorities"
            )
            parts.append(f"needs {describe(name, need)}; {describe(name, have)} free, {extra}")
    return "; ".join(parts)


def _too_big(request: Resources, capacity: Resources) -> str:
    parts = [
        f"needs {describe(name, need)} but the cluster has {describe(name, has)} in all"
        for name, need, has in request.shortfalls(capacity)
    ]
    return "; ".join(parts) + ": it cannot run unless the cluster grows"


def _dependency_failures(
    queued: Sequence[Candidate], dependencies: Mapping[str, DependencyState]
) -> dict[str, tuple[str, str]]:
    """Queued deployment id -> (dependency id, dependency name) for every one that must fail, transitively."""
    by_id = {candidate.id: candidate for candidate in queued}
    dependents: dict[str, list[str]] = {}
    failing: dict[str, tuple[str, str]] = {}
    frontier: list[str] = []
    for candidate in sorted(queued, key=lambda c: c.id):
        for dependency_id in sorted(candidate.depends_on):
            dependents.setdefault(dependency_id, []).append(candidate.id)
            state = dependencies.get(dependency_id)
            if candidate.id not in failing and state is not None and state.status in FAILED_STATES:
                failing[candidate.id] = (dependency_id, state.name)
                frontier.append(candidate.id)
    while frontier:
        failed_id = frontier.pop()
        for dependent_id in dependents.get(failed_id, ()):
            if dependent_id not in failing:
                failing[dependent_id] = (failed_id, by_id[failed_id].name)
                frontier.append(dependent_id)
    return failing


def _status_of(dependency_id: str, failing: Mapping[str, object], dependencies: Mapping[str, DependencyState]) -> str:
    return "failed" if dependency_id in failing else dependencies[dependency_id].status


def plan_pass(
    capacity: Resources,
    running: Sequence[Running],
    queued: Sequence[Candidate],
    dependencies: Mapping[str, DependencyState] | None = None,
) -> Plan:
    """The plan of one pass over a cluster (see the module docstring for the rules)."""
    dependencies = dependencies or {}
    failing = _dependency_failures(queued, dependencies)
    failures = []
    waiting: dict[str, str] = {}
    candidates = []
    for candidate in queued:
        if candidate.id in failing:
            dependency_id, dependency_name = failing[candidate.id]
            status = _status_of(dependency_id, failing, dependencies)
            failures.append(
                Failure(candidate.id, dependency_id, f"dependency {dependency_name} ({dependency_id}) ended {status}")
            )
            continue
        unmet = [d for d in sorted(candidate.depends_on) if dependencies.get(d, _MISSING).status != "completed"]
        if unmet:
            first = unmet[0]
            state = dependencies.get(first, _MISSING)
            name = state.name if state is not _MISSING else first
            waiting[candidate.id] = f"waiting for dependency {name} ({state.status})"
            continue
        candidates.append(candidate)
    failures.sort(key=lambda f: f.deployment_id)
    candidates.sort(key=lambda c: (-c.priority, c.created, c.id))

    cluster = _RunningSet(capacity, running)
    blocked_by: dict[int, Candidate] = {}  # priority -> the oldest candidate of it waiting for resources
    starts = []
    for candidate in candidates:
        head = blocked_by.get(candidate.priority)
        if head is not None:
            waiting[candidate.id] = f"waiting behind {head.name} (same priority, older)"
            continue
        request = candidate.request
        if request.fits_in(cluster.free):
            cluster.start(candidate)
            starts.append(Start(candidate.id))
            continue
        if not request.fits_in(capacity):
            waiting[candidate.id] = _too_big(request, capacity)
            continue
        reclaimable = cluster.reclaimable.below(candidate.priority)
        if request.fits_in(cluster.free + reclaimable):
            victims = cluster.victims_for(candidate)
            cluster.preempt(victims)
            cluster.start(candidate)
            starts.append(Start(candidate.id, tuple(v.id for v in victims)))
            continue
        waiting[candidate.id] = _lacking(request, cluster.free, reclaimable)
        blocked_by[candidate.priority] = candidate
    return Plan(starts=tuple(starts), failures=tuple(failures), waiting=waiting)
