"""`make up`: the whole stack in one terminal, with interleaved logs; Ctrl-C stops all of it.

Order: dev services (unless DATABASE_URL and REDIS_URL are set, or they already run), migrations,
then API (gunicorn), one Celery worker, beat and Flower under honcho, which prefixes each log line
with its process and stops them all when one exits or on Ctrl-C. The API's access log is written to
.hypervisor/api-access.log instead. The dev services we started are stopped last, after everything
that uses them. A banner says where everything is once /readyz answers. SIGINT or SIGTERM, to us or
to the `make` running us, is a clean stop: exit status 0.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

from honcho.manager import SIGNALS, Manager
from honcho.printer import Message, Printer

from devtools.services import die_with_parent, running_services
from shared.config import PROJECT_ROOT, STATE_DIR, get_settings
from shared.queues import QUEUES


def _start_dev_services() -> subprocess.Popen | None:
    """Start the dev-services process unless servers are configured or already running."""
    if os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL"):
        return None
    if running_services():
        print("up: reusing the dev services already running", flush=True)
        return None
    # A session of its own: Ctrl-C reaches it only through us, after its users have stopped; and it
    # is told to stop should we die without stopping it.
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.services"],
        cwd=PROJECT_ROOT,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    deadline = time.monotonic() + 180
    while not running_services():
        if process.poll() is not None:
            raise SystemExit(f"up: dev services failed to start (exit {process.returncode})")
        if time.monotonic() > deadline:
            process.terminate()
            raise SystemExit("up: dev services did not start within 180 s")
        time.sleep(0.2)
    return process


def _stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    # A second Ctrl-C must not interrupt the shutdown and leave servers behind.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


def api_command(host: str, port: int) -> str:
    """The API server: gunicorn with the project's gunicorn.conf.py (JSON errors, threads, no per-user control
    socket). The access log goes to a file (`tail -f .hypervisor/api-access.log`), not through honcho: a
    line per request piped, prefixed and reprinted by the supervisor costs the API a good part of its CPU."""
    return (
        f"{sys.executable} -m gunicorn --config gunicorn.conf.py --bind {host}:{port} --workers 2 "
        f"--access-logfile {STATE_DIR / 'api-access.log'} wsgi:app"
    )


def processes() -> dict[str, str]:
    """The stack's long-running processes, by name (ports and log level from the settings)."""
    settings = get_settings()
    level = settings.log_level.lower()
    python = sys.executable
    return {
        "api": api_command(settings.api_host, settings.api_port),
        "worker": f"{python} -m celery -A worker.app worker --loglevel {level} --concurrency 2 "
        f"--queues {','.join(QUEUES)} --hostname worker1@%h",
        "beat": f"{python} -m celery -A worker.app beat --loglevel {level} "
        f"--schedule {STATE_DIR / 'celerybeat-schedule'}",
        "flower": f"{python} -m celery -A worker.app flower --address=127.0.0.1 --port={settings.flower_port}",
    }


METRICS_DIR = STATE_DIR / "metrics"
# The processes whose figures are shared through a multiprocess directory of their own (shared/metrics.py).
METRICS_PROCESSES = ("api", "worker")


def fresh_metrics_dirs(root: Path = METRICS_DIR) -> dict[str, Path]:
    """Empty multiprocess-metrics directories for the API and the worker: a previous run's files (dead pids)
    would otherwise still count."""
    shutil.rmtree(root, ignore_errors=True)
    directories = {name: root / name for name in METRICS_PROCESSES}
    for directory in directories.values():
        directory.mkdir(parents=True)
    return directories


def _interrupt(_signum, _frame):
    raise KeyboardInterrupt


def _blocks_sigint(pid: int) -> bool:
    """Whether process `pid` has SIGINT blocked (Linux /proc; False where it cannot be read)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("SigBlk:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    return False


def _parent_is_make() -> bool:
    try:
        return Path(f"/proc/{os.getppid()}/comm").read_text().strip() in ("make", "gmake")
    except OSError:
        return False


def _follow_make(make: int) -> None:
    """Stop as on Ctrl-C once `make`, our parent, is handling a SIGINT sent to it alone."""
    # make forwards SIGTERM to its recipe but not SIGINT, which it expects the terminal to have sent to
    # the whole process group: it only waits for us, so a SIGINT to its pid alone (an IDE's stop
    # button, `timeout -s INT`, a supervisor) would stop nothing. While make is in its handler for a
    # fatal signal, that signal stays blocked until its children have exited: that is our cue.
    while os.getppid() == make:
        if _blocks_sigint(make):
            os.kill(os.getpid(), signal.SIGINT)
            return
        time.sleep(0.2)


def _base_url(host: str, port: int) -> str:
    return f"http://{'127.0.0.1' if host in ('', '0.0.0.0', '::') else host}:{port}"  # noqa: S104


def _worker_metrics(settings) -> str:
    if not settings.worker_metrics_port:
        return ""
    return f", worker {_base_url(settings.worker_metrics_host, settings.worker_metrics_port)}/metrics"


def banner(settings) -> str:
    """Where the API, its docs and Flower are, and how to stop them."""
    api = _base_url(settings.api_host, settings.api_port)
    return "\n".join(
        [
            "Hypervisor is ready:",
            f"  API           {api}/api/v1",
            f"  Swagger UI    {api}/docs",
            f"  ReDoc         {api}/redoc",
            f"  OpenAPI spec  {api}/openapi.json",
            f"  Flower        http://127.0.0.1:{settings.flower_port}",
            f"  Metrics       {api}/metrics" + _worker_metrics(settings),
            "Ctrl-C stops everything (so does SIGINT or SIGTERM to `make up`).",
        ]
    )


def _announce_when_ready(manager: Manager, settings) -> None:
    """Print the banner, among the processes' logs, once /readyz answers 200."""
    ready = f"{_base_url(settings.api_host, settings.api_port)}/readyz"
    while True:
        try:
            with urllib.request.urlopen(ready, timeout=2) as response:  # noqa: S310 (our own http URL)
                if response.status == 200:
                    break
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.5)
    manager.events.put(Message(type="line", data=banner(settings), time=datetime.now(), name="up", colour=None))


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    if _parent_is_make():
        threading.Thread(target=_follow_make, args=(os.getppid(),), daemon=True).start()
    services = None
    try:
        services = _start_dev_services()
        subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=PROJECT_ROOT, check=True)
        manager = Manager(Printer(sys.stdout))
        metrics_dirs = fresh_metrics_dirs()
        for name, command in processes().items():
            env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dirs[name])} if name in metrics_dirs else None
            manager.add_process(name, command, cwd=str(PROJECT_ROOT), env=env)
        threading.Thread(target=_announce_when_ready, args=(manager, get_settings()), daemon=True).start()
        manager.loop()
        # Stopped on request (honcho's return code for SIGINT / SIGTERM): a clean stop, not a failure.
        stopped_on_request = manager.returncode in {entry["rc"] for entry in SIGNALS.values()}
        return 0 if stopped_on_request else manager.returncode or 0
    except KeyboardInterrupt:
        return 0
    except subprocess.CalledProcessError as error:
        print(f"up: {error}", file=sys.stderr)
        return 1
    finally:
        with contextlib.suppress(KeyboardInterrupt):
            _stop(services)


if __name__ == "__main__":
    sys.exit(main())
