"""Throwaway servers for the test suite and the benchmarks: a fresh, migrated database and a flushed Redis.

With DATABASE_URL / REDIS_URL set, they live beside the given ones without touching their data: a
database `<name>_<purpose>` is (re)created on the same server, and Redis database 15 (or
TEST_REDIS_URL) is used. Without them, embedded servers run under .hypervisor/<purpose>.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis

from devtools.services import EmbeddedServices, ensure_database
from shared.config import PROJECT_ROOT, STATE_DIR


def alembic_config(database_url: str):
    """Alembic's configuration, aimed at `database_url` (migrations/env.py reads it from the attributes)."""
    from alembic.config import Config

    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logger"] = False
    return config


def migrate(database_url: str) -> None:
    """Bring the database to the latest migration (the app never uses create_all)."""
    from alembic import command

    command.upgrade(alembic_config(database_url), "head")


@contextlib.contextmanager
def scratch_servers(purpose: str) -> Iterator[tuple[str, str, Path]]:
    """(database_url, redis_url, state folder) of a fresh migrated database and a flushed Redis."""
    state = STATE_DIR / purpose
    embedded = None
    database_url, redis_url = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
    if database_url and redis_url:
        parts = urlsplit(database_url)
        name = f"{parts.path.lstrip('/') or 'hypervisor'}_{purpose}"
        ensure_database(database_url.replace("postgresql+psycopg2://", "postgresql://"), name, recreate=True)
        database_url = urlunsplit(parts._replace(path="/" + name))
        redis_url = os.environ.get("TEST_REDIS_URL") or urlunsplit(urlsplit(redis_url)._replace(path="/15"))
    else:
        embedded = EmbeddedServices(state).start()
        name = f"hypervisor_{purpose}"
        ensure_database(embedded.database_server_uri, name, recreate=True)
        database_url, redis_url = embedded.database_url(name), embedded.redis_url
    try:
        redis.Redis.from_url(redis_url).flushdb()
        migrate(database_url)
        yield database_url, redis_url, state
    finally:
        if embedded is not None:
            embedded.stop()
