"""The API under a real gunicorn, started the way `make up` starts it (devtools/up.py)."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from devtools.up import api_command, fresh_metrics_dirs
from tests.conftest import ROOT


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Gunicorn:
    """`make up`'s API command on a free loopback port, with `home` as the user's home directory."""

    def __init__(self, home, log_path, env: dict | None = None) -> None:
        self.port = _free_port()
        env = {**os.environ, "HOME": str(home), **(env or {})}
        env.pop("XDG_RUNTIME_DIR", None)  # so gunicorn's per-user default lands in `home`
        self.log_path = log_path
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(
                shlex.split(api_command("127.0.0.1", self.port)), cwd=ROOT, env=env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + 60
        while not self.healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gunicorn did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.2)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def raw(self, request: bytes) -> tuple[int, dict, bytes]:
        """Send `request` as is; the status, headers and body of the answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as connection:
            connection.sendall(request)
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
        return int(status_line.split()[1]), headers, body

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def gunicorn(settings, tmp_path):
    server = Gunicorn(tmp_path, tmp_path / "gunicorn.log")
    yield server
    server.stop()


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 20_000 + b"\r\n\r\n", 431),
        (b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GARBAGE\r\n\r\n", 400),
    ],
    ids=["oversized-header", "oversized-request-line", "bad-request-line"],
)
def test_errors_gunicorn_answers_itself_are_json(gunicorn, request_bytes, status):
    code, headers, body = gunicorn.raw(request_bytes)
    assert code == status
    assert headers["content-type"] == "application/json"
    assert headers["x-content-type-options"] == "nosniff"
    error = json.loads(body)
    assert error["code"] == status
    assert error["status"] and error["message"]
    assert set(error) == {"code", "status", "message"}


def test_two_stacks_run_side_by_side_and_stopping_one_leaves_the_other(settings, tmp_path):
    # Two clones of one user: gunicorn 27's per-user control socket (~/.gunicorn/gunicorn.ctl) would be
    # taken over by the second and deleted when it stops.
    first = Gunicorn(tmp_path, tmp_path / "first.log")
    try:
        second = Gunicorn(tmp_path, tmp_path / "second.log")
        try:
            assert first.healthy() and second.healthy()
            assert not (tmp_path / ".gunicorn").exists(), "a per-user control socket shared by both stacks"
        finally:
            second.stop()
        assert first.healthy()
        assert first.process.poll() is None
    finally:
        first.stop()


def _get(port: int, path: str) -> bytes:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Connection": "close"})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (our own http URL)
        assert response.status == 200
        return response.read()


def _requests_by_process(metrics_dir, endpoint: str) -> dict[str, float]:
    """{counter file (one per gunicorn worker): GET `endpoint` requests that worker counted}."""
    from prometheus_client.multiprocess import MultiProcessCollector

    counts = {}
    for path in sorted(metrics_dir.glob("counter_*.db")):
        counts[path.name] = sum(
            sample.value
            for family in MultiProcessCollector.merge([str(path)], accumulate=False)
            for sample in family.samples
            if sample.name == "hypervisor_http_requests_total" and sample.labels["endpoint"] == endpoint
        )
    return counts


def _counted(scrape: bytes, endpoint: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(scrape.decode())
        for sample in family.samples
        if sample.name == "hypervisor_http_requests_total" and sample.labels["endpoint"] == endpoint
    )


def test_metrics_count_every_request_whichever_gunicorn_worker_answers(settings, tmp_path):
    # As `make up` runs it: two workers sharing a fresh multiprocess directory.
    metrics_dir = fresh_metrics_dirs(tmp_path / "metrics")["api"]
    server = Gunicorn(tmp_path, tmp_path / "gunicorn.log", env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    try:
        sent = 0
        with ThreadPoolExecutor(8) as pool:
            # Requests until both workers have answered some (the kernel decides which worker accepts).
            while sent < 800 and sum(1 for n in _requests_by_process(metrics_dir, "/").values() if n) < 2:
                list(pool.map(lambda _: _get(server.port, "/"), range(40)))
                sent += 40
            assert sum(1 for n in _requests_by_process(metrics_dir, "/").values() if n) >= 2, "one worker took all"
            scrapes = list(pool.map(lambda _: _get(server.port, "/metrics"), range(24)))
        assert {_counted(scrape, "/") for scrape in scrapes} == {sent}
        # ... and the scrapes were answered by both workers.
        assert sum(1 for n in _requests_by_process(metrics_dir, "/metrics").values() if n) >= 2
    finally:
        server.stop()
