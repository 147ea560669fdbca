"""Deny by default: a route that declares no access rule does not serve."""

import pytest
from flask import Flask

from api.access import enforce_declared_access, undeclared_routes


def test_the_app_has_no_undeclared_route(app):
    assert undeclared_routes(app) == []


def test_an_app_with_an_undeclared_route_refuses_to_start():
    app = Flask("probe")

    @app.get("/open-door")
    def open_door():
        return "anyone?"

    with pytest.raises(RuntimeError, match="GET /open-door"):
        enforce_declared_access(app)
