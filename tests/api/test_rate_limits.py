"""Authentication endpoints are rate limited (Flask-Limiter on Redis); a 429 says when to retry."""

import dataclasses
import logging

import pytest

from tests.api.test_auth import login, register

ADDRESS_A = {"REMOTE_ADDR": "198.51.100.1"}
ADDRESS_B = {"REMOTE_ADDR": "198.51.100.2"}


@pytest.fixture
def limits(app, monkeypatch):
    """Change the app's limit settings for one test (they are read per request)."""

    def apply(**changes):
        settings = dataclasses.replace(app.extensions["settings"], **changes)
        monkeypatch.setitem(app.extensions, "settings", settings)

    return apply


def test_failed_logins_per_username_are_limited_with_retry_after(client):
    register(client)
    for _ in range(5):
        assert login(client, password="wrong password").status_code == 401
    response = login(client, password="wrong password")
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    assert response.json["code"] == 429 and response.json["message"]
    # The username is locked for a while, even with the right password.
    assert login(client).status_code == 429


def test_failures_from_one_address_never_lock_the_owner_out_from_another(client):
    register(client)
    for _ in range(5):
        assert login(client, password="wrong password", environ_base=ADDRESS_A).status_code == 401
    # The guesser's address is stopped for this username, whatever the case or the password...
    assert login(client, username="ALICE", password="x", environ_base=ADDRESS_A).status_code == 429
    assert login(client, environ_base=ADDRESS_A).status_code == 429
    # ...while the owner, elsewhere, logs in.
    assert login(client, environ_base=ADDRESS_B).status_code == 200


def test_successful_logins_do_not_count(client):
    register(client)
    for _ in range(8):
        assert login(client).status_code == 200


def test_failed_logins_per_address_are_limited(client, limits):
    limits(login_address_limit="3/minute")
    for name in ("a1", "a2", "a3"):
        response = client.post(
            "/api/v1/auth/login", json={"username": name, "password": "wrong"}, environ_base=ADDRESS_A
        )
        assert response.status_code == 401
    blocked = client.post("/api/v1/auth/login", json={"username": "a4", "password": "x"}, environ_base=ADDRESS_A)
    assert blocked.status_code == 429
    other = client.post("/api/v1/auth/login", json={"username": "a4", "password": "x"}, environ_base=ADDRESS_B)
    assert other.status_code == 401


def test_registration_per_address_is_limited(client, limits):
    limits(register_limit="2/minute")
    assert register(client, username="one").status_code == 201
    assert register(client, username="two").status_code == 201
    assert register(client, username="three").status_code == 429


def test_asking_whether_accounts_exist_is_limited_and_logged(client, caplog):
    assert register(client, username="alice", environ_base=ADDRESS_B).status_code == 201
    caplog.set_level(logging.WARNING, logger="shared.identity.service")
    for i in range(5):
        taken = register(client, username="alice", email=f"probe{i}@example.com", environ_base=ADDRESS_A)
        assert taken.status_code == 409
    blocked = register(client, username="newcomer", environ_base=ADDRESS_A)
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0
    refusals = [r.getMessage() for r in caplog.records if "already registered" in r.getMessage()]
    assert len(refusals) == 5 and ADDRESS_A["REMOTE_ADDR"] in refusals[0] and "'alice'" in refusals[0]
    assert register(client, username="newcomer", environ_base=ADDRESS_B).status_code == 201


def test_invalid_registrations_do_not_use_up_the_limit(client, limits):
    limits(register_limit="1/minute")
    for _ in range(3):
        assert register(client, password="password").status_code == 422
    assert register(client).status_code == 201


def test_guessing_invite_codes_is_limited(client, auth, limits):
    limits(join_limit="3/minute")
    guesser = auth.user()
    for i in range(3):
        response = client.post(
            "/api/v1/organizations/join", json={"invite_code": f"guess-{i}"}, headers=guesser.headers
        )
        assert response.status_code == 404
    blocked = client.post("/api/v1/organizations/join", json={"invite_code": "guess-4"}, headers=guesser.headers)
    assert blocked.status_code == 429 and "Retry-After" in blocked.headers


def test_refresh_is_limited(client, auth, limits):
    limits(refresh_limit="1/minute")
    me = auth.user()
    first = client.post("/api/v1/auth/refresh", headers=me.refresh_headers)
    assert first.status_code == 200
    second = client.post("/api/v1/auth/refresh", headers={"Authorization": f"Bearer {first.json['refresh_token']}"})
    assert second.status_code == 429


def test_other_endpoints_are_not_limited(client, auth):
    me = auth.user()
    for _ in range(70):
        assert client.get("/api/v1/auth/me", headers=me.headers).status_code == 200
