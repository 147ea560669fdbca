"""The sync protocol's types (RUNTIME.md, "The protocol: one level-triggered sync") and their parsing.

One request, one response: the agent reports every run it knows, the server answers with the whole set
it must run (`run`) and the runs it must stop (`stop`). Parsing checks every field the agent relies on
and says which one is wrong; fields it does not know are ignored, so the server may add some.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ReportState = Literal["running", "exited", "stopped", "failed"]
FINAL_STATES = frozenset({"exited", "stopped", "failed"})
LOGS_LIMIT_BYTES = 64 * 1024

# (deployment id, generation): one run of a deployment, the fencing token between server and agents.
RunKey = tuple[str, int]


class ProtocolError(ValueError):
    """The server's answer is not what the protocol says."""


@dataclass(frozen=True)
class AgentInfo:
    name: str
    driver: str
    version: str

    def to_json(self) -> dict[str, str]:
        """The `agent` object of a sync request."""
        return {"name": self.name, "driver": self.driver, "version": self.version}


@dataclass(frozen=True)
class Report:
    """What the agent knows of one run: sent with every sync until the server no longer lists the run."""

    deployment_id: str
    generation: int
    state: ReportState
    at: str
    exit_code: int | None = None
    message: str | None = None
    logs: str | None = None
    container: str | None = None

    @property
    def key(self) -> RunKey:
        return (self.deployment_id, self.generation)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def to_json(self) -> dict[str, Any]:
        """One item of a sync request's `deployments`."""
        body: dict[str, Any] = {
            "id": self.deployment_id,
            "generation": self.generation,
            "state": self.state,
            "at": self.at,
        }
        if self.exit_code is not None:
            body["exit_code"] = self.exit_code
        if self.message is not None:
            body["message"] = self.message
        if self.container is not None:
            body["container"] = self.container
        if self.logs is not None:
            body["logs"] = self.logs
        return body


def sync_request(agent: AgentInfo, reports: list[Report]) -> dict[str, Any]:
    """The body of POST /api/v1/agent/sync."""
    return {"agent": agent.to_json(), "deployments": [report.to_json() for report in reports]}


@dataclass(frozen=True)
class Resources:
    cpu: float
    ram_gb: float
    gpu: int


@dataclass(frozen=True)
class RunItem:
    """One run the server wants running now."""

    deployment_id: str
    generation: int
    state: Literal["pending", "running"]
    name: str
    image: str
    command: list[str] | None
    env: dict[str, str]
    resources: Resources
    grace_seconds: float

    @property
    def key(self) -> RunKey:
        return (self.deployment_id, self.generation)


@dataclass(frozen=True)
class StopItem:
    """One run the server wants stopped."""

    deployment_id: str
    generation: int
    grace_seconds: float
    reason: str | None

    @property
    def key(self) -> RunKey:
        return (self.deployment_id, self.generation)


@dataclass(frozen=True)
class SyncResponse:
    cluster_id: str
    sync_seconds: float
    lease_seconds: float
    fence_seconds: float
    run: list[RunItem] = field(default_factory=list)
    stop: list[StopItem] = field(default_factory=list)


def parse_sync_response(body: Any) -> SyncResponse:
    """A SyncResponse from the decoded JSON of a 200 answer, or ProtocolError naming the bad field."""
    data = _object(body, "response")
    run = _list(data.get("run", []), "run")
    stop = _list(data.get("stop", []), "stop")
    return SyncResponse(
        cluster_id=_string(data.get("cluster_id"), "cluster_id"),
        sync_seconds=_positive(data.get("sync_seconds"), "sync_seconds"),
        lease_seconds=_positive(data.get("lease_seconds"), "lease_seconds"),
        fence_seconds=_positive(data.get("fence_seconds"), "fence_seconds"),
        run=[_run_item(item, f"run[{index}]") for index, item in enumerate(run)],
        stop=[_stop_item(item, f"stop[{index}]") for index, item in enumerate(stop)],
    )


def _run_item(value: Any, where: str) -> RunItem:
    data = _object(value, where)
    state = data.get("state")
    if state not in ("pending", "running"):
        raise ProtocolError(f"{where}.state: expected 'pending' or 'running', got {state!r}")
    command = data.get("command")
    if command is not None:
        command = [
            _string(part, f"{where}.command[{index}]") for index, part in enumerate(_list(command, f"{where}.command"))
        ]
    env = data.get("env") or {}
    env = {
        _string(name, f"{where}.env"): _string(text, f"{where}.env.{name}")
        for name, text in _object(env, f"{where}.env").items()
    }
    resources = _object(data.get("resources") or {}, f"{where}.resources")
    return RunItem(
        deployment_id=_string(data.get("id"), f"{where}.id"),
        generation=_integer(data.get("generation"), f"{where}.generation"),
        state=state,
        name=_string(data.get("name"), f"{where}.name"),
        image=_string(data.get("image"), f"{where}.image"),
        command=command,
        env=env,
        resources=Resources(
            cpu=_number(resources.get("cpu", 0), f"{where}.resources.cpu"),
            ram_gb=_number(resources.get("ram_gb", 0), f"{where}.resources.ram_gb"),
            gpu=_integer(resources.get("gpu", 0), f"{where}.resources.gpu"),
        ),
        grace_seconds=_number(data.get("grace_seconds", 30), f"{where}.grace_seconds"),
    )


def _stop_item(value: Any, where: str) -> StopItem:
    data = _object(value, where)
    reason = data.get("reason")
    return StopItem(
        deployment_id=_string(data.get("id"), f"{where}.id"),
        generation=_integer(data.get("generation"), f"{where}.generation"),
        grace_seconds=_number(data.get("grace_seconds", 30), f"{where}.grace_seconds"),
        reason=None if reason is None else _string(reason, f"{where}.reason"),
    )


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{where}: expected an object, got {_kind(value)}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ProtocolError(f"{where}: expected a list, got {_kind(value)}")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ProtocolError(f"{where}: expected a string, got {_kind(value)}")
    return value


def _integer(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"{where}: expected an integer, got {_kind(value)}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ProtocolError(f"{where}: expected a number >= 0, got {_kind(value)}")
    return float(value)


def _positive(value: Any, where: str) -> float:
    number = _number(value, where)
    if number <= 0:
        raise ProtocolError(f"{where}: expected a number > 0, got {value!r}")
    return number


def _kind(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"[:80]
