"""Probes: liveness without I/O, readiness with a round trip to PostgreSQL and Redis."""

from __future__ import annotations

from flask import current_app
from flask.views import MethodView
from sqlalchemy import text

from api.access import PUBLIC
from api.extensions import Blueprint, error_body
from shared.db import db
from shared.redis import get_redis

blp = Blueprint("health", __name__, description="Liveness and readiness probes.")


def _check_database() -> None:
    with db.engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def _check_redis() -> None:
    get_redis(current_app.extensions["settings"].redis_url).ping()


@blp.route("/healthz")
class Health(MethodView):
    @blp.access(PUBLIC)
    @blp.response(200)
    def get(self):
        """Liveness: the process is up (no I/O)."""
        return {"status": "ok"}


@blp.route("/readyz")
class Ready(MethodView):
    @blp.access(PUBLIC)
    @blp.response(200)
    @blp.alt_response(503, description="A dependency is unreachable; `checks` says which.")
    def get(self):
        """Readiness: PostgreSQL and Redis both answer."""
        checks = {}
        for name, probe in (("database", _check_database), ("redis", _check_redis)):
            try:
                probe()
                checks[name] = "ok"
            except Exception as error:  # any failure to answer means not ready
                checks[name] = f"unreachable: {type(error).__name__}"
        down = [name for name, state in checks.items() if state != "ok"]
        if down:
            body = error_body(503, f"Not ready: {' and '.join(down)} unreachable.")
            body["checks"] = checks
            return body, 503
        return {"status": "ready", "checks": checks}
