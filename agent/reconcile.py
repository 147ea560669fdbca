"""The reconcile decision: what the server wants against what this agent has, as a pure function.

Level triggered (the kubelet's way): each sync compares the whole desired set with the whole actual set
and closes the gap, so a lost response or an agent restart costs one sync, never a wrong state.
No driver, no clock, no I/O here: the loop (loop.py) gathers the facts and carries the plan out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.protocol import RunItem, RunKey, SyncResponse

LOST_MESSAGE = "lost by the agent"
NOT_WANTED_REASON = "no longer wanted by the server (stale generation or given up)"


@dataclass(frozen=True)
class Observed:
    """One run the agent's driver has."""

    key: RunKey
    grace_seconds: float
    finished: bool = False
    stopping: bool = False
    # Its final report was in a sync the server answered: the server has seen how it ended.
    final_reported: bool = False


@dataclass(frozen=True)
class Stop:
    key: RunKey
    grace_seconds: float
    reason: str


@dataclass
class Plan:
    start: list[RunItem] = field(default_factory=list)
    stop: list[Stop] = field(default_factory=list)
    # Runs the server believes running that this agent does not have: report them failed.
    lost: list[RunKey] = field(default_factory=list)
    # Runs the server wants stopped that this agent does not have: report them stopped (nothing runs).
    absent: list[RunKey] = field(default_factory=list)
    # Ended runs the server has seen end and no longer lists: remove them.
    remove: list[RunKey] = field(default_factory=list)
    # Reports made without a run (lost, absent) that the server no longer lists: stop sending them.
    forget: list[RunKey] = field(default_factory=list)


def reconcile(desired: SyncResponse, actual: list[Observed], reported_without_run: set[RunKey]) -> Plan:
    """What to do so that what runs here matches `desired` (see RUNTIME.md, "The protocol")."""
    plan = Plan()
    have = {run.key: run for run in actual}
    wanted = {item.key: item for item in desired.run}
    to_stop = {item.key: item for item in desired.stop}
    listed = wanted.keys() | to_stop.keys()
    # Deployments of which some run here has not ended yet (any generation): a newer generation waits for it.
    alive = {run.key[0] for run in actual if not run.finished}

    for key, item in wanted.items():
        if key in have or key in reported_without_run or key in to_stop:
            continue
        if item.state == "pending":
            # The older run is stopped below (it is in neither list); the new one starts at a later sync, once
            # it has ended, so that a deployment never has two live runs at once on this agent.
            if key[0] not in alive:
                plan.start.append(item)
        else:
            plan.lost.append(key)

    plan.absent = sorted(to_stop.keys() - have.keys() - reported_without_run)

    for key, run in have.items():
        if run.finished:
            if key not in listed and run.final_reported:
                plan.remove.append(key)
            continue
        if run.stopping:
            continue
        if key in to_stop:
            stop = to_stop[key]
            plan.stop.append(Stop(key, stop.grace_seconds, f"stopped by the server: {stop.reason or 'no reason'}"))
        elif key not in wanted:
            plan.stop.append(Stop(key, run.grace_seconds, NOT_WANTED_REASON))

    plan.forget = sorted(reported_without_run - listed)
    return plan
