"""The HTTP API: a thin Flask layer that validates requests, calls services and enqueues work."""

from __future__ import annotations

import logging
from datetime import timedelta

from flask import Flask

from api.access import enforce_declared_access
from api.docs import DOCS_CONFIG
from api.extensions import init_extensions
from api.metrics import init_metrics
from api.ratelimit import init_limiter
from api.security import init_security_headers
from shared.config import Settings, get_settings
from shared.db import db
from worker.factory import make_celery

API_PREFIX = "/api/v1"


def configure_logging(level: str) -> None:
    """One readable line per record, the same in every process."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask app (and its Celery app) from settings, by default read from the environment."""
    settings = settings or get_settings()
    configure_logging(settings.log_level)

    app = Flask("hypervisor")
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=1024 * 1024,
        API_TITLE="Hypervisor",
        API_VERSION="1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        **DOCS_CONFIG,
        JWT_SECRET_KEY=settings.secret_key,
        JWT_ALGORITHM="HS256",
        JWT_DECODE_ALGORITHMS=["HS256"],
        JWT_ENCODE_ISSUER=settings.jwt_issuer,
        JWT_DECODE_ISSUER=settings.jwt_issuer,
        JWT_ENCODE_AUDIENCE=settings.jwt_audience,
        JWT_DECODE_AUDIENCE=settings.jwt_audience,
        JWT_ACCESS_TOKEN_EXPIRES=timedelta(minutes=settings.access_token_minutes),
        JWT_REFRESH_TOKEN_EXPIRES=timedelta(days=settings.refresh_token_days),
        JWT_TOKEN_LOCATION=["headers", "cookies"],
        JWT_COOKIE_CSRF_PROTECT=True,
        JWT_COOKIE_SAMESITE="Lax",
        JWT_COOKIE_SECURE=settings.production,
    )
    app.extensions["settings"] = settings

    db.configure(settings.database_url, connect_args={"connect_timeout": 5})
    app.teardown_appcontext(lambda _exc: db.session.remove())

    api = init_extensions(app)
    init_limiter(app)
    init_security_headers(app)
    init_metrics(app)
    from api import docs, health, index, metrics
    from api.agents.routes import blp as agents
    from api.auth.routes import blp as auth
    from api.clusters.routes import blp as clusters
    from api.deployments.routes import blp as deployments
    from api.organizations.routes import blp as organizations

    for blueprint in (index.blp, health.blp, metrics.blp, auth, organizations, clusters, deployments, agents):
        api.register_blueprint(blueprint)
    app.register_blueprint(docs.blp)
    make_celery(app)
    enforce_declared_access(app)
    return app
