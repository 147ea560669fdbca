"""`GET /metrics`: Prometheus figures of the API and of the database, and the count of every request answered.

The route is PUBLIC for api/access.py (no user token: Prometheus has none) with a check of its own: when
METRICS_TOKEN is set, the scrape must send it as `Authorization: Bearer <token>` (else 401).
"""

from __future__ import annotations

from flask import Flask, Response, current_app, request
from flask.views import MethodView
from prometheus_client import Counter

from api.access import PUBLIC
from api.extensions import Blueprint, ErrorSchema
from shared import metrics
from shared.db import db
from shared.errors import Unauthorized

blp = Blueprint("metrics", __name__, description="Prometheus metrics.")

HTTP_REQUESTS = Counter(
    "hypervisor_http_requests",
    "HTTP requests the API answered, by method, route template and status.",
    ["method", "endpoint", "status"],
)
# Labels take a bounded set of values: a route template (never a path with ids) or this, and known methods.
UNMATCHED = "unmatched"
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
TOKEN_NEEDED = "These metrics need the metrics token: send it as `Authorization: Bearer <METRICS_TOKEN>`."  # noqa: S105


def _count(response):
    rule = request.url_rule
    method = request.method if request.method in METHODS else "other"
    HTTP_REQUESTS.labels(method, rule.rule if rule is not None else UNMATCHED, str(response.status_code)).inc()
    return response


def init_metrics(app: Flask) -> None:
    """Count every response the app gives (errors included), by route template."""
    app.after_request(_count)


@blp.route("/metrics")
class Metrics(MethodView):
    @blp.access(PUBLIC)
    @blp.doc(
        responses={
            200: {
                "description": "Prometheus text format (version 0.0.4).",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        }
    )
    @blp.alt_response(401, schema=ErrorSchema, description="METRICS_TOKEN is set and was not sent as a Bearer token.")
    def get(self):
        """Prometheus metrics of the API and of the database.

        Deployments by cluster and status and each cluster's capacity and allocation are read from the
        database at each scrape; HTTP requests are counted across all of the API's processes. No credential
        is needed unless METRICS_TOKEN is set: then send it as `Authorization: Bearer <METRICS_TOKEN>`.
        """
        if not metrics.authorized(
            current_app.extensions["settings"].metrics_token, request.headers.get("Authorization")
        ):
            raise Unauthorized(TOKEN_NEEDED)
        body = metrics.exposition(metrics.DatabaseCollector(db.session))
        return Response(body, 200, content_type=metrics.CONTENT_TYPE)
