"""`make up` for real: it starts the whole stack, says where it is, and any stop request ends all of it.

A terminal's Ctrl-C signals the whole foreground process group; an IDE's stop button, `timeout` or a
supervisor signal the pid of `make` alone. Each way must leave no process of the stack and no port
behind, and a clean stop must not end with a make error.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT

STATE = ROOT / ".hypervisor" / "make-up"
# Variables the suite's own servers export; `make up` must start and stop its own dev services.
STALE_METRICS = STATE / "metrics" / "api" / "counter_1.db"
NOT_INHERITED = ("DATABASE_URL", "REDIS_URL", "TEST_REDIS_URL", "SECRET_KEY", "HV_ENV", "HV_STATE_DIR")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has stopped; only its parent's wait is missing


def _descendants(pid: int) -> set[int]:
    found, pending = set(), [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    pending.append(child)
    return found


def _get_when_up(url: str, timeout: float) -> bytes:
    """The body of a 200 from `url`, retried while nothing listens there yet (the worker's exporter starts
    once the worker is ready, which may be after the banner)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (our own http URL)
                return response.read()
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


class MakeUp:
    """A `make up` in a session of its own, its output collected line by line."""

    def __init__(self) -> None:
        self.api_port, self.flower_port, self.worker_metrics_port = _free_port(), _free_port(), _free_port()
        env = {name: value for name, value in os.environ.items() if name not in NOT_INHERITED}
        env.update(
            HV_STATE_DIR=str(STATE),
            API_PORT=str(self.api_port),
            FLOWER_PORT=str(self.flower_port),
            WORKER_METRICS_PORT=str(self.worker_metrics_port),
            LOG_LEVEL="WARNING",
        )
        # A previous run's metrics file, unreadable: it must be wiped, not summed.
        STALE_METRICS.parent.mkdir(parents=True, exist_ok=True)
        STALE_METRICS.write_bytes(b"left by a previous run")
        # -o: the suite runs after `make install-dev`; `make up` must not reinstall into the shared venv.
        self.process = subprocess.Popen(
            ["make", "--no-print-directory", "-o", ".venv/.installed", "up"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            if text in line:
                return
        raise AssertionError(f"no {text!r} from make up:\n" + "\n".join(self.lines[-60:]))

    def output(self) -> str:
        while (line := self._queue.get(timeout=10)) is not None:
            self.lines.append(line)
        return "\n".join(self.lines)

    def stack(self) -> set[int]:
        """Every process of the stack: make's descendants and the embedded PostgreSQL (pg_ctl detaches it)."""
        postmaster = int((STATE / "postgres" / "postmaster.pid").read_text().split()[0])
        return _descendants(self.process.pid) | {postmaster}

    def ports(self) -> list[int]:
        redis_port = int(json.loads((STATE / "services.json").read_text())["redis_url"].rsplit(":", 1)[1].split("/")[0])
        return [self.api_port, self.flower_port, redis_port, self.worker_metrics_port]

    def kill(self) -> None:
        """Whatever the test's outcome, nothing of this stack outlives it."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(60)


@pytest.fixture
def make_up():
    stack = MakeUp()
    yield stack
    stack.kill()


STOPS = {
    "SIGINT to make's pid (IDE stop button)": lambda pid: os.kill(pid, signal.SIGINT),
    "SIGTERM to make's pid (supervisor, timeout)": lambda pid: os.kill(pid, signal.SIGTERM),
    "Ctrl-C (SIGINT to the process group)": lambda pid: os.killpg(pid, signal.SIGINT),
}


@pytest.mark.parametrize("stop", STOPS.values(), ids=STOPS.keys())
def test_make_up_announces_itself_and_any_stop_request_stops_everything(make_up, stop):
    make_up.wait_for("Ctrl-C stops everything", timeout=240)
    output = "\n".join(make_up.lines)
    for url in (
        f"http://127.0.0.1:{make_up.api_port}/api/v1",
        f"http://127.0.0.1:{make_up.api_port}/docs",
        f"http://127.0.0.1:{make_up.api_port}/redoc",
        f"http://127.0.0.1:{make_up.flower_port}",
    ):
        assert url in output
    assert not STALE_METRICS.exists()
    for url in (
        f"http://127.0.0.1:{make_up.api_port}/metrics",
        f"http://127.0.0.1:{make_up.worker_metrics_port}/metrics",
    ):
        assert url in output
        assert b"hypervisor_" in _get_when_up(url, timeout=60)
    stack, ports = make_up.stack(), make_up.ports()
    assert all(_listening(port) for port in ports[:1] + ports[2:])

    stop(make_up.process.pid)
    make_up.process.wait(90)

    output = make_up.output()
    deadline = time.monotonic() + 10
    while any(map(_alive, stack)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in stack if _alive(pid)], output[-3000:]
    assert not [port for port in ports if _listening(port)], output[-3000:]
    assert "make: ***" not in output, output[-3000:]
