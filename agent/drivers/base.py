"""The narrow interface between the agent's loop and a runtime (STYLE.md, "The agent").

The loop speaks only to this interface: the `process` driver implements it today, `docker` and a
Kubernetes driver later, without touching the loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

RunKey = tuple[str, int]


@dataclass(frozen=True)
class RunSpec:
    """What to run: one generation of one deployment."""

    deployment_id: str
    generation: int
    name: str
    image: str
    command: list[str] | None
    env: dict[str, str] = field(default_factory=dict)
    cpu: float = 0
    ram_gb: float = 0
    gpu: int = 0
    grace_seconds: float = 30

    @property
    def key(self) -> RunKey:
        return (self.deployment_id, self.generation)


@dataclass(frozen=True)
class Run:
    """A run the driver has (running, stopping or ended), as seen now."""

    deployment_id: str
    generation: int
    started_at: datetime
    grace_seconds: float
    # The driver's own name for it: a process id, a container id.
    handle: str | None = None
    # The runtime's id of the run, reported to the server as `runtime.container`: the container id
    # (docker); None for a process (its pid is in the agent's log, and means nothing off this host).
    container: str | None = None
    stopping: bool = False
    # Not started yet: the driver is preparing it (docker: pulling its image). Such a run is not in
    # runs(); a later start() with the same spec starts it once it is ready.
    preparing: bool = False

    @property
    def key(self) -> RunKey:
        return (self.deployment_id, self.generation)


@dataclass(frozen=True)
class Result:
    """How a run ended."""

    state: Literal["exited", "stopped", "failed"]
    finished_at: datetime
    exit_code: int | None = None
    message: str | None = None
    logs: str = ""


class DriverUnavailable(RuntimeError):
    """The driver cannot be used on this host (or not yet): the message says why."""


class Driver(Protocol):
    """What the agent needs from a runtime."""

    name: str
    # True when runs cannot survive their agent (process); False when they can and a restarted agent
    # adopts them (docker): a clean shutdown then leaves them running.
    runs_end_with_agent: bool

    def recover(self) -> list[Run]:
        """At startup: adopt the runs a previous agent left that can be adopted, clean up the rest."""
        ...

    def claim(self, cluster_id: str) -> list[Run]:
        """After each successful sync: the cluster this agent holds. A driver whose runs outlive their
        agent adopts that cluster's runs it finds (the first time; returns them); the others return [].
        Raises DriverUnavailable when it cannot look (the loop then skips this sync's reconcile)."""
        ...

    def runs(self) -> list[Run]:
        """Every run the driver has now, ended ones included until they are removed."""
        ...

    def start(self, spec: RunSpec) -> Run:
        """Start a run; one that cannot start is returned with a `failed` result, never raised."""
        ...

    def stop(self, run: Run, grace_seconds: float, reason: str | None = None) -> None:
        """Ask the run to stop (SIGTERM), kill it after grace_seconds; returns at once. `reason` goes
        into the `stopped` result's message. Stopping a stopping run again with 0 kills it now."""
        ...

    def result(self, run: Run) -> Result | None:
        """How the run ended, or None while it runs."""
        ...

    def remove(self, run: Run) -> None:
        """Forget an ended run and free what it kept (its output, its record)."""
        ...

    def close(self) -> None:
        """The agent exits: end what must not outlive it (nothing for runtimes whose runs are adopted)."""
        ...
