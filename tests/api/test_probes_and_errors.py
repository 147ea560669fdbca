"""Probes, docs and the single error format."""

import pytest

from api import create_app
from shared.config import Settings


def test_healthz_answers_without_io(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_readyz_reports_both_dependencies(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json["checks"] == {"database": "ok", "redis": "ok"}


def _app_with(settings, **changes):
    values = {**settings.__dict__, **changes}
    return create_app(Settings(**values))


@pytest.mark.parametrize("down", ["redis", "database"])
def test_readyz_is_503_naming_what_is_down(settings, down):
    # Real unreachable endpoints: a loopback port nothing listens on, a socket folder with no server.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    changes = (
        {"redis_url": f"redis://127.0.0.1:{closed_port}/0"}
        if down == "redis"
        else {"database_url": "postgresql+psycopg2://postgres@/nothing?host=/nonexistent-socket-dir"}
    )
    app = _app_with(settings, **changes)
    try:
        response = app.test_client().get("/readyz")
        assert response.status_code == 503
        body = response.json
        assert body["code"] == 503 and body["status"] == "Service Unavailable"
        assert down in body["message"]
        assert body["checks"][down].startswith("unreachable")
        other = "database" if down == "redis" else "redis"
        assert body["checks"][other] == "ok"
    finally:
        from shared.db import db

        db.configure(settings.database_url)  # the rest of the suite keeps the real database


def test_unknown_route_is_404_in_the_error_format(client):
    response = client.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response.json["code"] == 404
    assert response.json["status"] == "Not Found"
    assert response.json["message"]


def test_wrong_method_is_405_in_the_error_format(client):
    response = client.post("/healthz")
    assert response.status_code == 405
    assert response.json["status"] == "Method Not Allowed"
    assert "GET" in response.headers["Allow"]


def test_openapi_declares_bearer_jwt(client):
    spec = client.get("/openapi.json").json
    assert spec["info"]["title"] == "Hypervisor"
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    assert "/healthz" in spec["paths"] and "/readyz" in spec["paths"]


@pytest.mark.parametrize("page, marker", [("/docs", "swagger-ui"), ("/redoc", "redoc")])
def test_interactive_docs_are_served(client, page, marker):
    response = client.get(page)
    assert response.status_code == 200
    assert marker in response.get_data(as_text=True).lower()


def test_root_points_to_the_docs(client):
    response = client.get("/")
    assert response.status_code == 200
    links = response.json
    assert links["docs"] == "/docs" and links["redoc"] == "/redoc" and links["openapi"] == "/openapi.json"
    for link in ("docs", "redoc", "openapi", "healthz"):
        assert client.get(links[link]).status_code == 200, link
