"""Real infrastructure for the suite: PostgreSQL, Redis, the app, and Celery worker processes.

Servers come from devtools/scratch.py: embedded under .hypervisor/test without DATABASE_URL /
REDIS_URL; with them, a database `<name>_test` beside the given one and Redis database 15.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Figures that tests measure in passing (cases run, chaos results), printed at the end of the run.
FIGURES: list[str] = []


def pytest_terminal_summary(terminalreporter):
    for line in FIGURES:
        terminalreporter.write_line(line)


TEST_STATE = ROOT / ".hypervisor" / "test"


@pytest.fixture(scope="session")
def servers():
    """(database_url, redis_url) of a fresh test database and a flushed Redis; exported to the environment
    before any application module reads its settings, so the app and worker processes use them too."""
    from devtools.scratch import scratch_servers

    with scratch_servers("test") as (database_url, redis_url, state):
        os.environ.update(
            DATABASE_URL=database_url,
            REDIS_URL=redis_url,
            HV_ENV="test",
            SECRET_KEY=secrets.token_urlsafe(48),
            HV_STATE_DIR=str(state),
            # No worker exporter on the default port: tests that want one give it a free port.
            WORKER_METRICS_PORT="0",
        )
        yield database_url, redis_url


@pytest.fixture(scope="session")
def settings(servers):
    from shared.config import get_settings

    return get_settings()


@pytest.fixture(scope="session")
def app(settings):
    from api import create_app

    return create_app(settings)


@pytest.fixture(scope="session")
def redis_client(settings):
    from shared.redis import get_redis

    return get_redis(settings.redis_url)


def forget_pass_requests(redis_client) -> None:
    """Forget every pass requested so far (coalescing markers and queued messages), and nothing else: the
    sessions of the test's users live in the same Redis."""
    from shared.queues import QUEUES
    from shared.scheduling.requests import PENDING

    redis_client.delete(*QUEUES, *redis_client.scan_iter(f"{PENDING}*"))


@pytest.fixture
def clean(app, redis_client):
    """Empty tables and a flushed Redis before the test: each test starts from nothing."""
    from sqlalchemy import text

    from shared.db import Base, db

    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    if tables:
        with db.engine.begin() as connection:
            connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    redis_client.flushdb()
    yield
    db.session.remove()


@pytest.fixture
def client(app, clean):
    return app.test_client()


@pytest.fixture
def session(app, clean):
    """A database session of the test's own for arranging and checking state directly (the app's
    request-scoped session is removed after every request, which would detach the test's objects)."""
    from sqlalchemy.orm import Session

    from shared.db import db

    with Session(db.engine, expire_on_commit=False) as own:
        yield own


class WorkerProcess:
    """A real `celery worker` process of this project, started and stopped by the suite."""

    def __init__(self, name: str, concurrency: int = 2, env: dict | None = None) -> None:
        self.name = name
        self.env = {**os.environ, **(env or {})}
        self.log_path = TEST_STATE / f"worker-{name}.log"
        from shared.queues import QUEUES

        self.command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.app",
            "worker",
            "--loglevel",
            "INFO",
            "--concurrency",
            str(concurrency),
            "--queues",
            ",".join(QUEUES),
            "--hostname",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
        ]
        self.process: subprocess.Popen | None = None

    def start(self, celery_app, timeout: float = 60) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "w")  # noqa: SIM115  (kept open for the process's lifetime)
        self.process = subprocess.Popen(self.command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited: {self.log_path.read_text()[-2000:]}")
            replies = celery_app.control.ping(destination=[self.hostname], timeout=0.5)
            if replies:
                return self
        raise RuntimeError(f"worker {self.name} did not answer within {timeout}s: {self.log_path.read_text()[-2000:]}")

    @property
    def hostname(self) -> str:
        import socket

        return f"{self.name}@{socket.gethostname()}"

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, timeout: float = 20) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="session")
def celery_app(app):
    return app.extensions["celery"]


@pytest.fixture(scope="module")
def worker(celery_app):
    """A real worker process for the module's tests (stopped after them, so other modules run without one)."""
    process = WorkerProcess("test-worker").start(celery_app)
    yield process
    process.stop()


PASSWORD = "correct horse battery"


@pytest.fixture(scope="session")
def password_hash(app):
    from shared.identity.passwords import hash_password

    return hash_password(PASSWORD)


class Identity:
    """A user with a live token pair: `headers` authenticate a request as them."""

    def __init__(self, user, access_token, refresh_token):
        self.user, self.id, self.username = user, user.id, user.username
        self.access_token, self.refresh_token = access_token, refresh_token

    @property
    def headers(self):
        return {"Authorization": f"Bearer {self.access_token}"}

    @property
    def refresh_headers(self):
        return {"Authorization": f"Bearer {self.refresh_token}"}


class Auth:
    """Makes the identities of a test in one line each: `auth.member("viewer", org)`, `auth.org()`."""

    def __init__(self, app, session, password_hash):
        self.app, self.session, self.password_hash = app, session, password_hash
        self._count = 0

    def user(self, username=None):
        from shared.identity import tokens
        from shared.identity.models import User
        from shared.redis import get_redis

        self._count += 1
        username = username or f"user{self._count}_{secrets.token_hex(3)}"
        user = User(username=username, email=f"{username}@example.com", password_hash=self.password_hash)
        self.session.add(user)
        self.session.commit()
        with self.app.app_context():
            settings = self.app.extensions["settings"]
            pair = tokens.start_session(
                get_redis(settings.redis_url), str(user.id), tokens.Lifetimes.from_settings(settings)
            )
        return Identity(user, pair.access_token, pair.refresh_token)

    def org(self, name="org"):
        """A new organization and its admin: returns (organization, admin identity)."""
        from shared.organizations import service as organizations

        admin = self.user()
        organization, _, _ = organizations.create(session=self.session, actor_id=admin.id, name=name)
        return organization, admin

    def member(self, role, organization):
        from shared.organizations.models import Membership

        identity = self.user()
        self.session.add(Membership(organization_id=organization.id, user_id=identity.id, role=role))
        self.session.commit()
        return identity


@pytest.fixture
def auth(app, session, password_hash):
    return Auth(app, session, password_hash)


class Fleet:
    """Clusters and deployments arranged directly through the services, for tests that act on them."""

    def __init__(self, session):
        self.session = session

    def cluster(self, organization, name=None, cpu=8, ram_gb=32, gpu=4, runtime="simulated"):
        """A cluster of the organization, created by one of its admins."""
        from sqlalchemy import select

        from shared.clusters import service as clusters
        from shared.organizations.models import Membership
        from shared.resources import Resources

        admin_id = self.session.scalar(
            select(Membership.user_id)
            .where(Membership.organization_id == organization.id, Membership.role == "admin")
            .limit(1)
        )
        return clusters.create(
            session=self.session,
            organization_id=organization.id,
            actor_id=admin_id,
            name=name or f"cluster-{secrets.token_hex(3)}",
            capacity=Resources.from_api(cpu, ram_gb, gpu),
            runtime=runtime,
        )

    def deployment(self, cluster, owner, name=None, cpu=1, ram_gb=1, gpu=0, priority=500, **options):
        from shared.deployments import service as deployments
        from shared.resources import Resources

        return deployments.submit(
            session=self.session,
            cluster_id=cluster.id,
            actor_id=owner.id,
            actor_name=owner.username,
            name=name or f"job-{secrets.token_hex(3)}",
            image="ghcr.io/acme/train:1",
            resources=Resources.from_api(cpu, ram_gb, gpu),
            priority=priority,
            **options,
        )

    def start(self, deployment):
        """Run a queued deployment now, as a scheduling pass would."""
        from shared.clusters.accounting import lock_cluster
        from shared.deployments import transitions

        cluster = lock_cluster(self.session, deployment.cluster_id)
        self.session.refresh(deployment)
        transitions.start(self.session, cluster, deployment)
        self.session.commit()
        return deployment


@pytest.fixture
def fleet(session):
    return Fleet(session)
