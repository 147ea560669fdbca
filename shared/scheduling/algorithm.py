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

Two-phase stop (clusters whose runtime is `agent`, RUNTIME.md): resources are free only once the process
has stopped. Three optional inputs describe it; without them the pass is exactly the above.

6. `stopping`: running deployments being stopped (preempted or cancelled; the victims named in
   `nominations` count too). They hold their resources until they are gone from `running`, are never
   chosen as victims again and are never reclaimable.
7. `two_phase`: a candidate that needs victims does not start in this pass. The plan nominates it
   (`Nomination`: mark the victims stopping; it stays queued) and it waits for its victims to stop.
8. `nominations`: beneficiary id -> the victims it waits for. Victims gone from `running` (stopped, or
   exited on their own) no longer count; a nominee with none left is an ordinary candidate, and one
   that is no longer queued (cancelled) leaves only its victims' stops behind. While some still stop,
   the nominee gets no new victims; when its turn comes it starts if it fits in the free room,
   otherwise it waits ("waiting for 2 preempted deployments to stop") and keeps for itself, out of the
   free room, what it needs beyond what those victims will free: candidates after it (lower
   priorities, younger peers) cannot start in that room; those before it came first. If a higher
   priority took part of the room meanwhile, it keeps what is left, and its reason says what it will
   still lack; once its victims have stopped it is an ordinary candidate again and may preempt anew.
   A nominee waits for resources, so younger candidates of its priority wait behind it (rule 5).
9. `admissions_paused` (no live agent): nothing starts and nothing is preempted; every candidate waits
   with that text as its reason (dependency waits and failures still apply).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from collections.abc import Set as AbstractSet
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


@dataclass(frozen=True, slots=True)
class Nomination:
    """Two-phase preemption: mark `victims` stopping for `deployment_id`, which stays queued until they stop.

    The victims keep their resources meanwhile; the nominee's reason is in `Plan.waiting`.
    """

    deployment_id: str
    victims: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    """What a pass does: starts (in order), new nominations, failures, and the reason of every other one."""

    starts: tuple[Start, ...] = ()
    failures: tuple[Failure, ...] = ()
    waiting: Mapping[str, str] = field(default_factory=dict)
    nominations: tuple[Nomination, ...] = ()

    @property
    def preemptions(self) -> dict[str, str]:
        """Victim id -> the id of the deployment it makes room for (started now, or nominated)."""
        chosen = {victim: start.deployment_id for start in self.starts for victim in start.victims}
        chosen.update((victim, n.deployment_id) for n in self.nominations for victim in n.victims)
        return chosen


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

    def __init__(self, capacity: Resources, running: Sequence[Running], stopping: AbstractSet[str]) -> None:
        self.capacity = capacity
        self.free = capacity
        self.reclaimable = _Reclaimable()
        # Per priority, most recently started first: the order in which they are preempted.
        self.by_priority: dict[int, list[Running]] = {}
        for deployment in sorted(running, key=lambda r: (-r.started, r.id)):
            if deployment.id in stopping:
                self.free = self.free - deployment.request  # held until it has stopped; no one's victim
            else:
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

    def stop(self, victims: list[Running]) -> None:
        """Two-phase: the victims start stopping. They keep their resources but are no longer reclaimable."""
        for victim in victims:
            self.reclaimable.add(victim.priority, victim.request, sign=-1)
            self.by_priority[victim.priority].remove(victim)

    def reserve(self, room: Resources) -> None:
        """Keep `room` (within what is free) out of reach of the candidates after this one."""
        self.free = self.free - _least(room, self.free)


def _least(a: Resources, b: Resources) -> Resources:
    return Resources(min(a.cpu_millis, b.cpu_millis), min(a.ram_mb, b.ram_mb), min(a.gpu, b.gpu))


def _beyond(request: Resources, freed: Resources) -> Resources:
    """What `request` needs beyond the room `freed` will give it, per resource."""
    return Resources(
        max(request.cpu_millis - freed.cpu_millis, 0),
        max(request.ram_mb - freed.ram_mb, 0),
        max(request.gpu - freed.gpu, 0),
    )


def _stop_wait(count: int) -> str:
    return f"waiting for {count} preempted deployment{'s' if count != 1 else ''} to stop"


def _short_after_stop(count: int, request: Resources, room: Resources) -> str:
    parts = [
        f"{describe(name, need)} with {describe(name, have)} free" for name, need, have in request.shortfalls(room)
    ]
    return f"{_stop_wait(count)}; even then it needs " + "; ".join(parts)


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
    *,
    stopping: Collection[str] = (),
    nominations: Mapping[str, Collection[str]] | None = None,
    two_phase: bool = False,
    admissions_paused: str | None = None,
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
    if admissions_paused is not None:
        waiting.update((candidate.id, admissions_paused) for candidate in candidates)
        return Plan(failures=tuple(failures), waiting=waiting)

    nominations = nominations or {}
    nominated = _live_nominations(running, candidates, nominations)
    stopping_ids = set(stopping).union(*nominations.values())  # a nomination's victims stop, whoever waits
    by_id = {r.id: r for r in running} if nominated else {}
    cluster = _RunningSet(capacity, running, stopping_ids)
    blocked_by: dict[int, Candidate] = {}  # priority -> the oldest candidate of it waiting for resources
    starts = []
    new_nominations = []
    for candidate in candidates:
        head = blocked_by.get(candidate.priority)
        if head is not None:
            waiting[candidate.id] = f"waiting behind {head.name} (same priority, older)"
            if nominated and candidate.id in nominated:  # its victims stop for it all the same: keep its room
                cluster.reserve(_beyond(candidate.request, _total(by_id, nominated[candidate.id])))
            continue
        request = candidate.request
        if request.fits_in(cluster.free):
            cluster.start(candidate)
            starts.append(Start(candidate.id))
            continue
        if not request.fits_in(capacity):
            waiting[candidate.id] = _too_big(request, capacity)
            continue
        if nominated and candidate.id in nominated:
            victim_ids = nominated[candidate.id]
            freed = _total(by_id, victim_ids)
            if request.fits_in(cluster.free + freed):
                waiting[candidate.id] = _stop_wait(len(victim_ids))
            else:
                waiting[candidate.id] = _short_after_stop(len(victim_ids), request, cluster.free + freed)
            cluster.reserve(_beyond(request, freed))
            blocked_by[candidate.priority] = candidate
            continue
        reclaimable = cluster.reclaimable.below(candidate.priority)
        if request.fits_in(cluster.free + reclaimable):
            victims = cluster.victims_for(candidate)
            if two_phase:
                cluster.stop(victims)
                cluster.reserve(_beyond(request, sum((v.request for v in victims), Resources())))
                new_nominations.append(Nomination(candidate.id, tuple(v.id for v in victims)))
                waiting[candidate.id] = _stop_wait(len(victims))
                blocked_by[candidate.priority] = candidate
                continue
            cluster.preempt(victims)
            cluster.start(candidate)
            starts.append(Start(candidate.id, tuple(v.id for v in victims)))
            continue
        waiting[candidate.id] = _lacking(request, cluster.free, reclaimable)
        blocked_by[candidate.priority] = candidate
    return Plan(starts=tuple(starts), failures=tuple(failures), waiting=waiting, nominations=tuple(new_nominations))


def _live_nominations(
    running: Sequence[Running], candidates: Sequence[Candidate], nominations: Mapping[str, Collection[str]]
) -> dict[str, tuple[str, ...]]:
    """Candidate id -> its victims still running, for the candidates still waiting for some.

    A victim counts for one nominee only (the first in candidate order), so no room is counted twice.
    """
    if not nominations:
        return {}
    running_ids = {r.id for r in running}
    claimed: set[str] = set()
    live = {}
    for candidate in [c for c in candidates if c.id in nominations]:
        victims = tuple(sorted(v for v in nominations[candidate.id] if v in running_ids and v not in claimed))
        if victims:
            claimed.update(victims)
            live[candidate.id] = victims
    return live


def _total(by_id: Mapping[str, Running], ids: Sequence[str]) -> Resources:
    return sum((by_id[i].request for i in ids), Resources())
