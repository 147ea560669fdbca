"""The `docker` driver: one container per run on the local Docker Engine (RUNTIME.md, "Drivers").

- A run is a container named `hv-<deployment id>-<generation>` and labelled with its deployment,
  generation, cluster, grace and GPUs: the labels are the driver's only record, so an agent restarted
  (or another agent of the cluster on this host) adopts the containers it finds (`claim`) instead of
  starting them twice; an ended container is removed once the server has seen its report.
- `command` and `env` as given (`command` null: the image's default), plus `HV_DEPLOYMENT_ID` and
  `HV_GENERATION`. CPU and memory limits from the request (`nano_cpus`; `mem_limit`, with swap equal to
  it, so the limit is the RAM asked for); a container the kernel killed at its limit is reported
  "out of memory". The network mode is the agent's setting (`--network`; default: the engine's).
- GPUs by explicit device ids from the agent's `--gpus` inventory (gpus.py), never `count=N`.
- An image missing locally is pulled in the background: the run is `preparing` meanwhile (reported
  nothing) and is created by the next `start` once the image is here, if the server still wants it;
  a failed pull is a `failed` result with the engine's message.
- stop = `docker stop` with the grace (SIGTERM, SIGKILL after it), done by the engine, in a thread so
  that the loop never waits. The agent exiting leaves the containers running, for the next one to adopt.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from agent.drivers.base import DriverUnavailable, Result, Run, RunKey, RunSpec
from agent.drivers.gpus import GpuAllocator, GpusUnavailable
from agent.drivers.process import LOGS_LIMIT_BYTES, MARKER_GENERATION, MARKER_ID, text_tail

try:
    import docker
    import docker.errors
    import docker.types
    import docker.utils
    import requests.exceptions
except ImportError:  # pragma: no cover (the SDK is in requirements.txt)
    docker = None

log = logging.getLogger("agent")

LABEL_PREFIX = "hypervisor."
LABEL_DEPLOYMENT = LABEL_PREFIX + "deployment"
LABEL_GENERATION = LABEL_PREFIX + "generation"
LABEL_CLUSTER = LABEL_PREFIX + "cluster"
LABEL_GRACE = LABEL_PREFIX + "grace"
LABEL_GPUS = LABEL_PREFIX + "gpus"
ENGINE_TIMEOUT_SECONDS = 60
ENDED_STATES = frozenset({"exited", "dead", "removing"})
OUT_OF_MEMORY = "out of memory"


@dataclass
class _Entry:
    """What the driver holds for one run."""

    run: Run
    container_id: str | None = None
    result: Result | None = None
    stop_reason: str | None = None
    pull: threading.Thread | None = None
    pull_error: str | None = None


class DockerDriver:
    """Runs deployments as containers on the Docker Engine of DOCKER_HOST; see the module's docstring."""

    name = "docker"
    runs_end_with_agent = False

    def __init__(self, *, gpus: list[str], network: str | None = None):
        if docker is None:
            raise DriverUnavailable(
                "the docker driver needs the Docker SDK for Python: pip install -r requirements.txt"
            )
        self.gpus = GpuAllocator(gpus)
        self.network = network or None
        self.engine = _connect()
        self.cluster_id: str | None = None
        self._entries: dict[RunKey, _Entry] = {}
        self._lock = threading.Lock()

    def recover(self) -> list[Run]:
        """Nothing yet: which containers are this agent's depends on its cluster, known at the first sync."""
        return []

    def claim(self, cluster_id: str) -> list[Run]:
        """Adopt the cluster's containers found on the engine (once): running ones keep their GPUs; ended
        ones are reported; containers created but never started are removed (their start is redone)."""
        if self.cluster_id == cluster_id:
            return []
        try:
            found = self.engine.containers(all=True, filters={"label": f"{LABEL_CLUSTER}={cluster_id}"})
            adopted = []
            for summary in found:
                run = self._adopt(self.engine.inspect_container(summary["Id"]))
                if run is not None:
                    adopted.append(run)
        except _engine_errors() as error:
            raise DriverUnavailable(f"cannot list the cluster's containers: {_explain(error)}") from None
        self.cluster_id = cluster_id
        return adopted

    def _adopt(self, container: dict) -> Run | None:
        labels = container["Config"].get("Labels") or {}
        state = container["State"]
        try:
            key = (labels[LABEL_DEPLOYMENT], int(labels[LABEL_GENERATION]))
            grace = float(labels.get(LABEL_GRACE, 30))
        except (KeyError, ValueError):
            log.warning("container %s has unreadable hypervisor labels: left alone", container["Name"])
            return None
        if state["Status"] == "created":
            self.engine.remove_container(container["Id"], force=True)
            return None
        started_at = _parse_time(state.get("StartedAt"))
        run = Run(key[0], key[1], started_at, grace, handle=_short(container["Id"]), container=container["Id"])
        entry = _Entry(run, container_id=container["Id"])
        if state["Status"] not in ENDED_STATES:
            devices = [device for device in labels.get(LABEL_GPUS, "").split(",") if device]
            conflicts = self.gpus.restore(key, devices)
            if conflicts:
                log.error("%s generation %s holds GPU(s) %s that another run holds too", *key, ",".join(conflicts))
        with self._lock:
            self._entries[key] = entry
        return run

    def runs(self) -> list[Run]:
        with self._lock:
            return [entry.run for entry in self._entries.values() if not entry.run.preparing]

    def start(self, spec: RunSpec) -> Run:
        with self._lock:
            entry = self._entries.get(spec.key)
            if entry is not None and not entry.run.preparing:
                return entry.run
            if entry is not None and entry.pull is not None and entry.pull.is_alive():
                return entry.run
        if entry is not None and entry.pull_error is not None:
            return self._failed(entry.run, entry.pull_error)
        run = entry.run if entry is not None else Run(spec.deployment_id, spec.generation, _now(), spec.grace_seconds)
        if self.cluster_id is None:
            return self._failed(run, "the agent does not know its cluster yet")
        try:
            if entry is None and not self._image_present(spec.image):
                return self._pull(spec, run)
            return self._create(spec, run)
        except _engine_errors() as error:
            return self._failed(run, f"the Docker engine refused it: {_explain(error)}")

    def _image_present(self, image: str) -> bool:
        try:
            self.engine.inspect_image(image)
        except docker.errors.ImageNotFound:
            return False
        return True

    def _pull(self, spec: RunSpec, run: Run) -> Run:
        run = replace(run, preparing=True)
        entry = _Entry(run)
        entry.pull = threading.Thread(target=self._pull_image, args=(entry, spec.image), daemon=True)
        with self._lock:
            self._entries[spec.key] = entry
        log.info("%s generation %s: pulling image %s", spec.deployment_id, spec.generation, spec.image)
        entry.pull.start()
        return run

    def _pull_image(self, entry: _Entry, image: str) -> None:
        """In a thread: pull `image`; on failure, keep the engine's message for the next start()."""
        repository, tag = docker.utils.parse_repository_tag(image)
        try:
            engine = _connect()
            for event in engine.pull(repository, tag=tag or "latest", stream=True, decode=True):
                if "error" in event:
                    raise docker.errors.APIError(event["error"])
            engine.inspect_image(image)
        except (*_engine_errors(), DriverUnavailable) as error:
            entry.pull_error = f"cannot pull image {image!r}: {_explain(error)}"
            log.warning("%s", entry.pull_error)
        else:
            log.info("pulled image %s", image)

    def _create(self, spec: RunSpec, run: Run, *, again: bool = True) -> Run:
        try:
            devices = self.gpus.allocate(spec.key, spec.gpu)
        except GpusUnavailable as error:
            return self._failed(run, str(error))
        labels = {
            LABEL_DEPLOYMENT: spec.deployment_id,
            LABEL_GENERATION: str(spec.generation),
            LABEL_CLUSTER: self.cluster_id,
            LABEL_GRACE: f"{spec.grace_seconds:g}",
            LABEL_GPUS: ",".join(devices),
        }
        name = container_name(spec)
        try:
            created = self.engine.create_container(
                spec.image,
                command=spec.command or None,
                name=name,
                labels=labels,
                environment={**spec.env, MARKER_ID: spec.deployment_id, MARKER_GENERATION: str(spec.generation)},
                host_config=self.engine.create_host_config(**host_options(spec, devices, self.network)),
            )
        except docker.errors.APIError as error:
            self.gpus.release(spec.key)
            if error.status_code == 409 and again:  # created by an earlier start whose answer was lost: adopt it
                adopted = self._adopt(self.engine.inspect_container(name))
                if adopted is not None:
                    return adopted
                # It was created but never started (an agent killed between the two, its create finished by
                # the engine after this agent's claim looked): _adopt removed it; create it afresh.
                return self._create(spec, run, again=False)
            return self._failed(run, f"cannot create its container: {_explain(error)}")
        except BaseException:
            self.gpus.release(spec.key)
            raise
        container_id = created["Id"]
        started_at = _now()
        try:
            self.engine.start(container_id)
        except _engine_errors() as error:
            self.gpus.release(spec.key)
            _remove_quietly(self.engine, container_id)
            return self._failed(run, f"cannot start its container: {_explain(error)}")
        run = replace(run, started_at=started_at, handle=_short(container_id), container=container_id, preparing=False)
        with self._lock:
            self._entries[spec.key] = _Entry(run, container_id=container_id)
        return run

    def stop(self, run: Run, grace_seconds: float, reason: str | None = None) -> None:
        with self._lock:
            entry = self._entries.get(run.key)
            if entry is None or entry.container_id is None or entry.result is not None:
                return
            if entry.run.stopping:
                if grace_seconds == 0:  # a second, harder stop
                    _in_thread(_kill, entry.container_id)
                return
            entry.run = replace(entry.run, stopping=True)
            entry.stop_reason = reason
            container_id = entry.container_id
        _in_thread(_stop, container_id, grace_seconds)

    def result(self, run: Run) -> Result | None:
        with self._lock:
            entry = self._entries.get(run.key)
            if entry is None or entry.result is not None or entry.container_id is None:
                return entry.result if entry is not None else None
        try:
            container = self.engine.inspect_container(entry.container_id)
            state = container["State"]
            if state["Status"] not in ENDED_STATES:
                return None
            logs = text_tail(self.engine.logs(entry.container_id, stdout=True, stderr=True, tail=LOGS_LIMIT_BYTES))
        except docker.errors.NotFound:
            result = Result("failed", _now(), None, "its container was removed outside the agent", "")
        except _engine_errors() as error:
            log.warning("cannot inspect the container of %s generation %s: %s", *run.key, _explain(error))
            return None
        else:
            result = _ended(state, container["HostConfig"].get("Memory") or 0, entry, logs)
        self.gpus.release(run.key)
        with self._lock:
            entry.result = result
        return result

    def remove(self, run: Run) -> None:
        with self._lock:
            entry = self._entries.pop(run.key, None)
        self.gpus.release(run.key)
        if entry is not None and entry.container_id is not None:
            _remove_quietly(self.engine, entry.container_id)

    def close(self) -> None:
        """Nothing to end: containers keep running for the next agent to adopt."""

    def _failed(self, run: Run, message: str) -> Run:
        run = replace(run, preparing=False)
        with self._lock:
            self._entries[run.key] = _Entry(run, result=Result("failed", _now(), None, message, ""))
        return run


def host_options(spec: RunSpec, devices: list[str], network: str | None) -> dict:
    """The container's limits: CPU, memory (no swap beyond it), GPUs by device id (never `count`), network."""
    options: dict = {"network_mode": network}
    if spec.cpu > 0:
        options["nano_cpus"] = round(spec.cpu * 1e9)
    if spec.ram_gb > 0:
        options["mem_limit"] = options["memswap_limit"] = round(spec.ram_gb * 2**30)
    if devices:
        options["device_requests"] = [docker.types.DeviceRequest(device_ids=list(devices), capabilities=[["gpu"]])]
    return options


def container_name(spec: RunSpec) -> str:
    """The container's name: `hv-<deployment id>-<generation>` (characters Docker refuses become `_`)."""
    safe = "".join(character if character.isalnum() or character in "_.-" else "_" for character in spec.deployment_id)
    return f"hv-{safe}-{spec.generation}"


def _ended(state: dict, memory_limit: int, entry: _Entry, logs: str) -> Result:
    exit_code = state.get("ExitCode")
    finished_at = _parse_time(state.get("FinishedAt"))
    if state.get("OOMKilled"):
        limit = f" of {memory_limit / 2**20:g} MiB" if memory_limit else ""
        message = f"{OUT_OF_MEMORY}: killed by the kernel at its memory limit{limit}"
    elif exit_code is not None and exit_code > 128 and entry.run.stopping:
        message = f"killed by {_signal_name(exit_code - 128)}"
    else:
        message = state.get("Error") or None
    if entry.run.stopping:
        how = message or f"exited with code {exit_code}"
        reason = f"{entry.stop_reason}: " if entry.stop_reason else ""
        return Result("stopped", finished_at, exit_code, f"{reason}{how}", logs)
    return Result("exited", finished_at, exit_code, message, logs)


def _connect():
    """A low-level client to the engine of DOCKER_HOST (each thread gets its own)."""
    try:
        return docker.from_env(timeout=ENGINE_TIMEOUT_SECONDS).api
    except docker.errors.DockerException as error:
        raise DriverUnavailable(f"cannot reach the Docker engine (DOCKER_HOST or its socket): {error}") from None


def _stop(container_id: str, grace_seconds: float) -> None:
    """`docker stop`: SIGTERM (the image's stop signal), SIGKILL after the grace; the engine does both."""
    try:
        _connect().stop(container_id, timeout=math.ceil(grace_seconds))
    except docker.errors.NotFound:
        pass
    except (*_engine_errors(), DriverUnavailable) as error:
        log.warning("cannot stop container %s: %s", _short(container_id), _explain(error))


def _kill(container_id: str) -> None:
    try:
        _connect().kill(container_id)
    except docker.errors.APIError as error:  # not running any more, or gone
        log.info("container %s: %s", _short(container_id), _explain(error))
    except (*_engine_errors(), DriverUnavailable) as error:
        log.warning("cannot kill container %s: %s", _short(container_id), _explain(error))


def _remove_quietly(engine, container_id: str) -> None:
    try:
        engine.remove_container(container_id, force=True)
    except docker.errors.NotFound:
        pass
    except _engine_errors() as error:
        log.warning("cannot remove container %s: %s", _short(container_id), _explain(error))


def _in_thread(target, *args) -> None:
    threading.Thread(target=target, args=args, daemon=True).start()


def _engine_errors() -> tuple[type[BaseException], ...]:
    return (docker.errors.DockerException, requests.exceptions.RequestException)


def _explain(error: BaseException) -> str:
    explanation = getattr(error, "explanation", None)
    return str(explanation or error)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _short(container_id: str) -> str:
    return f"container {container_id[:12]}"


def _parse_time(text: str | None) -> datetime:
    """The engine's RFC 3339 time with nanoseconds as a datetime (now when absent or unset)."""
    if not text or text.startswith("0001-"):
        return _now()
    main, _, fraction = text.rstrip("Z").partition(".")
    try:
        moment = datetime.fromisoformat(main).replace(tzinfo=UTC)
    except ValueError:
        return _now()
    digits = "".join(character for character in fraction if character.isdigit())[:6]
    return moment.replace(microsecond=int(digits.ljust(6, "0"))) if digits else moment


def _now() -> datetime:
    return datetime.now(UTC)
