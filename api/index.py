"""`GET /`: where to start, with links to the docs, the spec and the probes."""

from __future__ import annotations

import marshmallow as ma
from flask import url_for
from flask.views import MethodView

from api.access import PUBLIC
from api.extensions import Blueprint, Schema

blp = Blueprint("index", __name__, description="Where to start.")


class IndexOut(Schema):
    name = ma.fields.String(metadata={"description": "The service's name."})
    docs = ma.fields.String(metadata={"description": "Swagger UI: the API, to read and to try."})
    redoc = ma.fields.String(metadata={"description": "ReDoc: the API, to read."})
    openapi = ma.fields.String(metadata={"description": "The OpenAPI spec (JSON)."})
    healthz = ma.fields.String(metadata={"description": "Liveness probe."})
    readyz = ma.fields.String(metadata={"description": "Readiness probe."})
    api = ma.fields.String(metadata={"description": "The prefix of every API route."})


@blp.route("/")
class Index(MethodView):
    @blp.access(PUBLIC)
    @blp.response(200, IndexOut)
    def get(self):
        """Where to start: links to the docs, the spec and the probes."""
        from api import API_PREFIX

        return {
            "name": "Hypervisor",
            "docs": url_for("api-docs.openapi_swagger_ui"),
            "redoc": url_for("api-docs.openapi_redoc"),
            "openapi": url_for("api-docs.openapi_json"),
            "healthz": url_for("health.Health"),
            "readyz": url_for("health.Ready"),
            "api": API_PREFIX,
        }
