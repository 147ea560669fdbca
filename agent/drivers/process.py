"""The `process` driver: each run is a child process group on this host (RUNTIME.md, "Drivers").

For development and bare hosts. `command` is run as argv (no shell, no image: `image` is ignored),
with the run's `env` added to the agent's environment and `HV_DEPLOYMENT_ID` / `HV_GENERATION` set.
stdout and stderr go to one file under the state dir; the last 64 KiB are the run's `logs`.
There is no isolation: no CPU or memory limit, no GPU assignment; the run sees the host as the agent does.

Runs never outlive their agent:
- each run is the leader of its own process group (a new session), and a stop signals the whole group:
  SIGTERM, then SIGKILL after the grace; when the leader ends, what is left of its group is killed (as
  when a container's first process ends);
- the leader gets SIGKILL when the agent dies, even by SIGKILL (PR_SET_PDEATHSIG);
- descendants that outlive a SIGKILLed agent (the death signal reaches only the leader) are killed
  by the next agent started on the same state dir, which finds them by the record each run leaves there.
The leader is reaped only when the run is removed, so its pid, and so its group id, cannot be reused
by another process while the driver may still signal that group.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
import subprocess
import threading
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from agent.drivers.base import Result, Run, RunKey, RunSpec

LOGS_LIMIT_BYTES = 64 * 1024
PR_SET_PDEATHSIG = 1
MARKER_ID, MARKER_GENERATION = "HV_DEPLOYMENT_ID", "HV_GENERATION"

# Looked up before any fork: the child, between fork and exec, only calls it.
_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl


def _die_with_parent(parent_pid: int) -> None:
    """In the child, before exec: SIGKILL when the agent dies; and die now if it already has."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


class _Entry:
    """What the driver holds for one run."""

    def __init__(self, run: Run, log_path: Path | None, record_path: Path | None, process=None, result=None):
        self.run = run
        self.log_path = log_path
        self.record_path = record_path
        self.process: subprocess.Popen | None = process
        self.result: Result | None = result
        self.stop_reason: str | None = None
        self.kill_timer: threading.Timer | None = None


class ProcessDriver:
    """Runs deployments' commands as process groups; see the module's docstring."""

    name = "process"
    runs_end_with_agent = True

    def __init__(self, state_dir: Path | str):
        self.runs_dir = Path(state_dir) / "runs"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self._entries: dict[RunKey, _Entry] = {}
        self._lock = threading.Lock()

    def recover(self) -> list[Run]:
        """Kill what runs of a previous agent left behind (none can be adopted) and forget them."""
        for record_path in sorted(self.runs_dir.glob("*.json")):
            try:
                record = json.loads(record_path.read_text())
                _kill_leftovers(int(record["pgid"]), record["id"], int(record["generation"]))
            except (OSError, ValueError, KeyError, TypeError):
                pass
            record_path.unlink(missing_ok=True)
            record_path.with_suffix(".log").unlink(missing_ok=True)
        return []

    def claim(self, cluster_id: str) -> list[Run]:
        """Nothing to adopt: runs end with their agent."""
        return []

    def runs(self) -> list[Run]:
        with self._lock:
            return [entry.run for entry in self._entries.values()]

    def start(self, spec: RunSpec) -> Run:
        started_at = _now()
        run = Run(spec.deployment_id, spec.generation, started_at, spec.grace_seconds)
        with self._lock:
            if spec.key in self._entries:
                return self._entries[spec.key].run
        if not spec.command:
            return self._keep(_Entry(run, None, None, result=_failed("the process driver needs a command")))
        stem = f"{_safe(spec.deployment_id)}.{spec.generation}"
        log_path = self.runs_dir / f"{stem}.log"
        record_path = self.runs_dir / f"{stem}.json"
        env = {
            **_inherited_environment(),
            **spec.env,
            MARKER_ID: spec.deployment_id,
            MARKER_GENERATION: str(spec.generation),
        }
        agent_pid = os.getpid()
        try:
            with open(log_path, "wb") as output:
                process = subprocess.Popen(
                    spec.command,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    preexec_fn=lambda: _die_with_parent(agent_pid),
                    close_fds=True,
                )
        except OSError as error:
            log_path.unlink(missing_ok=True)
            reason = error.strerror or str(error)
            return self._keep(_Entry(run, None, None, result=_failed(f"cannot start {spec.command[0]!r}: {reason}")))
        except subprocess.SubprocessError as error:
            log_path.unlink(missing_ok=True)
            return self._keep(_Entry(run, None, None, result=_failed(f"cannot start {spec.command[0]!r}: {error}")))
        try:
            # The record lets the next agent kill what outlives this one (see recover()).
            record_path.write_text(
                json.dumps({"id": spec.deployment_id, "generation": spec.generation, "pgid": process.pid})
            )
        except OSError as error:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
            log_path.unlink(missing_ok=True)
            return self._keep(_Entry(run, None, None, result=_failed(f"cannot keep the run's record: {error}")))
        run = replace(run, handle=f"pid {process.pid}")
        return self._keep(_Entry(run, log_path, record_path, process=process))

    def stop(self, run: Run, grace_seconds: float, reason: str | None = None) -> None:
        with self._lock:
            entry = self._entries.get(run.key)
            if entry is None or entry.process is None or entry.result is not None:
                return
            if entry.run.stopping:
                if grace_seconds == 0:  # a second, harder stop (e.g. a second Ctrl-C)
                    _signal_group(entry.process.pid, signal.SIGKILL)
                return
            entry.run = replace(entry.run, stopping=True)
            entry.stop_reason = reason
            pgid = entry.process.pid
        _signal_group(pgid, signal.SIGTERM)
        if grace_seconds <= 0:
            _signal_group(pgid, signal.SIGKILL)
            return
        timer = threading.Timer(grace_seconds, _signal_group, (pgid, signal.SIGKILL))
        timer.daemon = True
        entry.kill_timer = timer
        timer.start()

    def result(self, run: Run) -> Result | None:
        with self._lock:
            entry = self._entries.get(run.key)
            if entry is None:
                return None
            if entry.result is not None:
                return entry.result
            status = _exit_status(entry.process.pid)
            if status is None:
                return None
            # The leader has ended: what is left of its group goes with it.
            _signal_group(entry.process.pid, signal.SIGKILL)
            if entry.kill_timer is not None:
                entry.kill_timer.cancel()
            entry.result = self._ended(entry, status)
            return entry.result

    def _ended(self, entry: _Entry, status: tuple[int, int]) -> Result:
        code, exit_status = status
        logs = tail(entry.log_path) if entry.log_path else ""
        if code == os.CLD_EXITED:
            exit_code, message = exit_status, None
        else:
            name = _signal_name(exit_status)
            exit_code, message = 128 + exit_status, f"killed by {name}"
        if entry.run.stopping:
            how = message or f"exited with code {exit_code}"
            reason = f"{entry.stop_reason}: " if entry.stop_reason else ""
            return Result("stopped", _now(), exit_code, f"{reason}{how}", logs)
        return Result("exited", _now(), exit_code, message, logs)

    def remove(self, run: Run) -> None:
        with self._lock:
            entry = self._entries.pop(run.key, None)
        if entry is None:
            return
        _cancel(entry.kill_timer)
        if entry.process is not None:
            _signal_group(entry.process.pid, signal.SIGKILL)
            entry.process.wait()
        for path in (entry.log_path, entry.record_path):
            if path is not None:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        """Kill every run's group at once and reap them (the agent is exiting)."""
        with self._lock:
            entries = list(self._entries.values())
        for entry in entries:
            _cancel(entry.kill_timer)
            if entry.process is not None:
                _signal_group(entry.process.pid, signal.SIGKILL)
                entry.process.wait()
                if entry.record_path is not None:
                    entry.record_path.unlink(missing_ok=True)

    def _keep(self, entry: _Entry) -> Run:
        with self._lock:
            self._entries[entry.run.key] = entry
        return entry.run


def tail(path: Path, limit: int = LOGS_LIMIT_BYTES) -> str:
    """The last `limit` bytes of a file as text (invalid UTF-8 replaced), never more than `limit` bytes."""
    try:
        with open(path, "rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - limit - 1))
            data = file.read(limit + 1)
    except OSError:
        return ""
    return text_tail(data, limit)


def text_tail(data: bytes, limit: int = LOGS_LIMIT_BYTES) -> str:
    """The last `limit` bytes of `data` as text (invalid UTF-8 replaced), never more than `limit` bytes."""
    cut = len(data) > limit
    text = data[-limit:].decode("utf-8", errors="replace")
    encoded = text.encode("utf-8")
    if len(encoded) > limit:
        text = encoded[-limit:].decode("utf-8", errors="ignore")
    if cut:
        text = text.lstrip("\ufffd")  # the first character, cut in the middle
    return text


def _inherited_environment() -> dict[str, str]:
    """The agent's environment, less its token: a run must not be able to act as the agent."""
    return {name: value for name, value in os.environ.items() if name != "HV_AGENT_TOKEN"}


def _cancel(timer: threading.Timer | None) -> None:
    """Cancel a pending SIGKILL and wait for its thread, so it cannot fire once the group id is freed."""
    if timer is not None:
        timer.cancel()
        timer.join()


def _exit_status(pid: int) -> tuple[int, int] | None:
    """(si_code, si_status) once the process has ended, without reaping it; None while it runs."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return (os.CLD_KILLED, signal.SIGKILL)
    if info is None or info.si_pid == 0:
        return None
    return (info.si_code, info.si_status)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass
    except PermissionError:
        pass


def _kill_leftovers(pgid: int, deployment_id: str, generation: int) -> None:
    """SIGKILL the processes of group `pgid` that carry this run's marker (a previous agent's run)."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            environ = Path(entry.path, "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if (
            f"{MARKER_ID}={deployment_id}".encode() in environ
            and f"{MARKER_GENERATION}={generation}".encode() in environ
        ):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except OSError as error:
                if error.errno != errno.ESRCH:
                    raise


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _failed(message: str) -> Result:
    return Result("failed", _now(), None, message, "")


def _safe(text: str) -> str:
    return "".join(character if character.isalnum() or character in "-_" else "_" for character in text)


def _now() -> datetime:
    return datetime.now(UTC)
