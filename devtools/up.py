"""`make up`: the whole stack in one terminal, with interleaved logs; Ctrl-C stops all of it.

Order: dev services (unless DATABASE_URL and REDIS_URL are set, or they already run), migrations,
then API (gunicorn), one Celery worker, beat and Flower under honcho, which prefixes each log line
with its process and stops them all when one exits or on Ctrl-C. The dev services we started are
stopped last, after everything that uses them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

from honcho.manager import Manager
from honcho.printer import Printer

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
    """The API server: gunicorn with the project's gunicorn.conf.py (JSON errors, no per-user control socket)."""
    return (
        f"{sys.executable} -m gunicorn --config gunicorn.conf.py --bind {host}:{port} --workers 2 "
        "--access-logfile - wsgi:app"
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


def _interrupt(_signum, _frame):
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    services = None
    try:
        services = _start_dev_services()
        subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=PROJECT_ROOT, check=True)
        manager = Manager(Printer(sys.stdout))
        for name, command in processes().items():
            manager.add_process(name, command, cwd=str(PROJECT_ROOT))
        manager.loop()
        return manager.returncode or 0
    except KeyboardInterrupt:
        return 130
    except subprocess.CalledProcessError as error:
        print(f"up: {error}", file=sys.stderr)
        return 1
    finally:
        with contextlib.suppress(KeyboardInterrupt):
            _stop(services)


if __name__ == "__main__":
    sys.exit(main())
