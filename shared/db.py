"""The database: declarative base (with a constraint naming convention), engine and sessions.

Sessions are scoped to the current thread: the API removes its session at the end of each request,
a worker task at the end of each task. After a fork, the child drops the parent's pooled connections.
"""

from __future__ import annotations

from sqlalchemy import MetaData, create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, scoped_session, sessionmaker

# Alembic names constraints from this, so migrations are reproducible and constraints can be dropped by name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def array_literal(values) -> str:
    """A PostgreSQL array literal (`{a,b}`) of plain values (ids, numbers), bound as one string and cast
    in SQL: far cheaper to send and parse than one bound parameter per element."""
    return "{" + ",".join(map(str, values)) + "}"


class Database:
    """One engine and one thread-scoped session registry per process."""

    def __init__(self) -> None:
        self._engine: Engine | None = None
        self.session = scoped_session(sessionmaker(expire_on_commit=False))

    def configure(self, url: str, **engine_options) -> None:
        """Point this process at a database; a no-op when already configured for the same URL."""
        if self._engine is not None and self._engine.url.render_as_string(hide_password=False) == url:
            return
        if self._engine is not None:
            self.session.remove()
            self._engine.dispose()
        # pre_ping: a pooled connection that died with a database restart is replaced, not handed out.
        self._engine = create_engine(url, pool_pre_ping=True, **engine_options)
        self.session.configure(bind=self._engine)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("database not configured: call db.configure(url) first")
        return self._engine

    def after_fork(self) -> None:
        """In a forked child: forget the parent's connections without closing them under its feet."""
        if self._engine is not None:
            self._engine.dispose(close=False)


db = Database()
