"""End to end: a burst of submissions into one large cluster, from the first POST until all are running.

The stack runs as `make up` starts it (the API and worker command lines come from devtools/up.py:
gunicorn with 2 workers, one Celery worker of concurrency 2, beat; Flower is left out), on scratch
servers; the client is this process, over HTTP. Two bursts, each into a fresh cluster:

- single: 2,000 `POST .../deployments` from 16 threads;
- batch: 10,000 deployments as `POST .../deployments/batch` of 500 from 4 threads (skipped, with a
  note, on a checkout that has no batch endpoint).

Printed per burst: submissions/s (first POST to last response), scheduled/s (first POST to all
running), POST p50 / p99, and the CPU each part of the stack spent per deployment (from /proc: the API's
gunicorn processes, the Celery worker's, PostgreSQL's, this client's), which holds still on a busy
machine where the rates do not. Targets (issue 11): single >= 400 scheduled/s, batch >= 2,000 scheduled/s.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from devtools.scratch import scratch_servers
from shared.config import PROJECT_ROOT

SINGLE = (2_000, 16)  # deployments, client threads
BATCH = (10_000, 500, 4)  # deployments, per request, client threads
STACK = ("api", "worker", "beat")
BASE = "/api/v1"


def _access_token(app, user_id: str, redis_url: str) -> str:
    """An access token for the bench user: a session's, where sessions exist (the bench also runs on older
    checkouts, for before/after figures, where a bare JWT was enough)."""
    from shared.identity import tokens

    if not hasattr(tokens, "start_session"):
        from flask_jwt_extended import create_access_token

        return create_access_token(identity=user_id)
    from shared.redis import get_redis

    lifetimes = tokens.Lifetimes.from_settings(app.extensions["settings"])
    return tokens.start_session(get_redis(redis_url), user_id, lifetimes).access_token


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stack_commands(env: dict) -> dict[str, str]:
    """`make up`'s command lines, computed by devtools/up.py in the environment the stack will have."""
    code = "import json; from devtools.up import processes; print(json.dumps(processes()))"
    output = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    return {name: command for name, command in json.loads(output).items() if name in STACK}


class Stack:
    """The stack's processes, each in a session of its own (stopped as a group), logs in `folder`."""

    def __init__(self, commands: dict[str, str], env: dict, folder: Path) -> None:
        self.commands, self.env, self.folder = commands, env, folder
        self.processes: list[subprocess.Popen] = []

    def start(self) -> Stack:
        for name, command in self.commands.items():
            log = open(self.folder / f"e2e-{name}.log", "w")  # noqa: SIM115  (lives as long as the process)
            self.processes.append(
                subprocess.Popen(
                    shlex.split(command),
                    cwd=PROJECT_ROOT,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        return self

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


class Client:
    """One keep-alive HTTP connection per thread."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.local = threading.local()

    def request(self, method: str, path: str, body=None) -> tuple[int, object]:
        reused = getattr(self.local, "connection", None) is not None
        try:
            return self._request(method, path, body)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            if not reused:
                raise
            # The server closed an idle keep-alive connection under us: the request never got there.
            return self._request(method, path, body)

    def _request(self, method: str, path: str, body) -> tuple[int, object]:
        connection = getattr(self.local, "connection", None)
        if connection is None:
            connection = self.local.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        try:
            connection.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except (http.client.HTTPException, OSError):
            self.local.connection = None
            connection.close()
            raise
        return response.status, json.loads(data) if data else None


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, float, str]]:
    """pid -> (parent pid, CPU seconds so far, command line) of every process we can read (Linux /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        found[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS, command)
    return found


def _cpu_by_part(roots: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds used so far by each named process tree (a root and all its descendants)."""
    table = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(pid)
    totals = {}
    for name, pids in roots.items():
        seen, stack = set(), list(pids)
        while stack:
            pid = stack.pop()
            if pid in seen or pid not in table:
                continue
            seen.add(pid)
            stack.extend(children.get(pid, []))
        totals[name] = sum(table[pid][1] for pid in seen)
    totals["client"] = sum(os.times()[:2])
    return totals


def _postmaster(state: Path) -> list[int]:
    data = str(state / "postgres")
    return [pid for pid, (_, _, command) in _processes().items() if "postgres" in command and data in command]


def _item(i: int) -> dict:
    return {"name": f"job-{i}", "image": "ghcr.io/acme/train:1", "cpu": 0.1, "ram_gb": 0.1, "gpu": 0, "priority": 500}


def _wait_ready(client: Client, celery_app, processes, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(process.poll() is not None for process in processes):
            raise RuntimeError("a stack process exited early: see .hypervisor/bench-e2e/e2e-*.log")
        try:
            ready = client.request("GET", "/readyz")[0] == 200
        except OSError:
            ready = False
        if ready and celery_app.control.ping(timeout=0.5):
            return
        time.sleep(0.2)
    raise RuntimeError("the stack did not become ready")


def _running(engine, cluster_id) -> int:
    from sqlalchemy import text

    with engine.connect() as connection:
        return connection.execute(
            text("SELECT count(*) FROM deployments WHERE cluster_id = :c AND status = 'running'"), {"c": cluster_id}
        ).scalar()


def _burst(client: Client, engine, cluster_id: str, bodies: list[tuple[str, object]], threads: int, total: int, parts):
    """POST every (path, body) from `threads` threads; then wait until `total` run. Figures, or None."""
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    queue = list(reversed(bodies))

    def work():
        while True:
            with lock:
                if not queue or failures:
                    return
                path, body = queue.pop()
            start = time.perf_counter()
            status, answer = client.request("POST", path, body)
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed * 1000)
                if status != 202:
                    failures.append(f"{status}: {str(answer)[:300]}")

    cpu_before = _cpu_by_part(parts)
    first = time.perf_counter()
    pool = [threading.Thread(target=work) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    submitted = time.perf_counter()
    if failures:
        return None, failures[0]
    deadline = time.monotonic() + 600
    while _running(engine, cluster_id) < total:
        if time.monotonic() > deadline:
            return None, f"only {_running(engine, cluster_id)} of {total} running after 600 s"
        time.sleep(0.02)
    scheduled = time.perf_counter()
    cpu = {name: (used - cpu_before[name]) * 1000 / total for name, used in _cpu_by_part(parts).items()}
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    rates = (total / (submitted - first), total / (scheduled - first), statistics.median(latencies), quantiles[98])
    return (*rates, cpu), ""


def run() -> None:
    with scratch_servers("bench-e2e") as (database_url, redis_url, state):
        port = _free_port()
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "HV_ENV": "development",
            "SECRET_KEY": secrets.token_urlsafe(48),
            "HV_STATE_DIR": str(state),
            "API_HOST": "127.0.0.1",
            "API_PORT": str(port),
        }
        os.environ.update({k: env[k] for k in ("DATABASE_URL", "REDIS_URL", "HV_ENV", "SECRET_KEY", "HV_STATE_DIR")})
        from sqlalchemy.orm import Session

        from api import create_app
        from shared.clusters import service as clusters
        from shared.db import db
        from shared.identity.models import User
        from shared.organizations import service as organizations
        from shared.resources import Resources

        app = create_app()
        with Session(db.engine) as session:
            user = User(username="bench", email="bench@example.com", password_hash="-")
            session.add(user)
            session.commit()
            organization, _, _ = organizations.create(session=session, actor_id=user.id, name="bench")
            cluster_ids = [
                str(
                    clusters.create(
                        session=session,
                        organization_id=organization.id,
                        actor_id=user.id,
                        name=name,
                        capacity=Resources.from_api(100_000, 100_000, 0),
                    ).id
                )
                for name in ("single", "batch")
            ]
            user_id = str(user.id)
        with app.app_context():
            token = _access_token(app, user_id, redis_url)
        client = Client(port, token)
        stack = Stack(_stack_commands(env), env, state).start()
        try:
            _wait_ready(client, app.extensions["celery"], stack.processes)
            parts = {
                "api": [stack.processes[0].pid],
                "worker": [stack.processes[1].pid],
                "postgres": _postmaster(state),
            }
            print(
                f"{'burst':<34}{'submissions/s':>14}{'scheduled/s':>13}{'POST p50 ms':>13}{'POST p99 ms':>13}"
                "   CPU ms per deployment"
            )
            count, threads = SINGLE
            bodies = [(f"{BASE}/clusters/{cluster_ids[0]}/deployments", _item(i)) for i in range(count)]
            _report(
                f"single: {count:,} from {threads} threads",
                _burst(client, db.engine, cluster_ids[0], bodies, threads, count, parts),
            )

            count, size, threads = BATCH
            path = f"{BASE}/clusters/{cluster_ids[1]}/deployments/batch"
            probe, _ = client.request("POST", path, {"deployments": []})
            if probe in (404, 405):
                print(f"{'batch':<34}  n/a: this checkout has no batch endpoint ({probe})")
            else:
                bodies = [
                    (path, {"deployments": [_item(i) for i in range(s, s + size)]}) for s in range(0, count, size)
                ]
                label = f"batch: {count:,} as {size} x {count // size}, {threads} thr"
                _report(label, _burst(client, db.engine, cluster_ids[1], bodies, threads, count, parts))
            print(
                "targets: single >= 400 scheduled/s, batch >= 2,000 scheduled/s (end to end, first POST to all running)"
            )
        finally:
            stack.stop()
            db.engine.dispose()


def _report(label: str, result) -> None:
    figures, failure = result
    if figures is None:
        print(f"{label:<34}  failed: {failure}")
        return
    submissions, scheduled, p50, p99, cpu = figures
    spent = " ".join(f"{name} {ms:.2f}" for name, ms in cpu.items())
    print(f"{label:<34}{submissions:>14,.0f}{scheduled:>13,.0f}{p50:>13.1f}{p99:>13.1f}   {spent}")
