"""Sessions (README, "Security model"): a login is a session that every token of it belongs to; rotation,
reuse detection, logout, logout everywhere, password change and account deletion end sessions."""

import dataclasses
import time

import jwt as pyjwt
import pytest

from tests.conftest import PASSWORD

ME = "/api/v1/auth/me"
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"
LOGOUT_ALL = "/api/v1/auth/logout-all"
PASSWORD_CHANGE = "/api/v1/auth/password"
NEW_PASSWORD = "a brand new horse battery"


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def claims_of(token):
    return pyjwt.decode(token, options={"verify_signature": False})


def login(client, username, password=PASSWORD):
    return client.post("/api/v1/auth/login", json={"username": username, "password": password})


def refresh(client, refresh_token):
    return client.post(REFRESH, headers=bearer(refresh_token))


def works(client, access_token) -> bool:
    return client.get(ME, headers=bearer(access_token)).status_code == 200


# --- rotation, reuse, lifetime ------------------------------------------------------------------


def test_every_token_of_a_login_carries_its_session(client, auth):
    me = auth.user()
    second = refresh(client, me.refresh_token).json
    issued = (me.access_token, me.refresh_token, second["access_token"], second["refresh_token"])
    assert len({claims_of(token)["sid"] for token in issued}) == 1


def test_replaying_a_rotated_refresh_token_ends_the_whole_session(client, auth):
    me = auth.user()
    second = refresh(client, me.refresh_token).json
    replayed = refresh(client, me.refresh_token)
    assert replayed.status_code == 401 and "already used" in replayed.json["message"]
    # The holder of the rotated token (the user or the thief, we cannot tell) is out too.
    assert refresh(client, second["refresh_token"]).status_code == 401
    assert not works(client, second["access_token"])
    assert not works(client, me.access_token)


def test_reuse_ends_only_that_session(client, auth):
    me = auth.user()
    other_device = login(client, me.username).json
    refresh(client, me.refresh_token)
    refresh(client, me.refresh_token)
    assert works(client, other_device["access_token"])
    assert refresh(client, other_device["refresh_token"]).status_code == 200


def test_rotation_never_extends_the_session_past_its_absolute_lifetime(client, auth, settings):
    me = auth.user()
    first = claims_of(me.refresh_token)
    time.sleep(1.1)  # so that a lifetime counted from now would end later than one counted from the login
    rotated = refresh(client, me.refresh_token).json
    assert first["exp"] == first["iat"] + settings.session_max_days * 86400
    assert claims_of(rotated["refresh_token"])["exp"] == first["exp"]
    assert claims_of(rotated["access_token"])["exp"] <= first["exp"]


def test_a_session_shorter_than_a_refresh_token_bounds_it(auth, settings, redis_client):
    from api import create_app

    app = create_app(dataclasses.replace(settings, session_max_days=1))
    client = app.test_client()
    me = auth.user()
    body = login(client, me.username).json
    claims = claims_of(body["refresh_token"])
    assert claims["exp"] - claims["iat"] == 86400
    assert 0 < redis_client.ttl(f"hv:session:{claims['sid']}") <= 86400


def test_a_session_whose_state_is_gone_is_over(client, auth, redis_client):
    me = auth.user()
    redis_client.delete(f"hv:session:{claims_of(me.access_token)['sid']}")  # as when its TTL runs out
    assert not works(client, me.access_token)
    assert refresh(client, me.refresh_token).status_code == 401


# --- logout, logout-all -------------------------------------------------------------------------


def test_logout_with_an_older_access_token_ends_the_current_session(client, auth):
    me = auth.user()
    current = refresh(client, me.refresh_token).json
    assert client.post(LOGOUT, headers=me.headers).status_code == 204
    assert not works(client, current["access_token"])
    assert refresh(client, current["refresh_token"]).status_code == 401


def test_logout_ends_only_its_own_session(client, auth):
    me = auth.user()
    other_device = login(client, me.username).json
    client.post(LOGOUT, headers=me.headers)
    assert works(client, other_device["access_token"])


def test_logout_all_ends_every_session_of_the_user_and_no_one_elses(client, auth):
    me, someone_else = auth.user(), auth.user()
    other_device = login(client, me.username).json
    assert client.post(LOGOUT_ALL, headers=me.headers).status_code == 204
    for access_token, refresh_token in [
        (me.access_token, me.refresh_token),
        (other_device["access_token"], other_device["refresh_token"]),
    ]:
        assert not works(client, access_token)
        assert refresh(client, refresh_token).status_code == 401
    assert works(client, someone_else.access_token)
    assert works(client, login(client, me.username).json["access_token"])  # a new login afterwards is fine


# --- password change ----------------------------------------------------------------------------


def test_password_change_requires_the_current_password(client, auth):
    me = auth.user()
    wrong = client.post(
        PASSWORD_CHANGE, headers=me.headers, json={"current_password": "not it at all", "new_password": NEW_PASSWORD}
    )
    assert wrong.status_code == 403 and wrong.json["message"] == "The password is wrong."
    assert works(client, me.access_token)
    assert login(client, me.username).status_code == 200
    assert login(client, me.username, NEW_PASSWORD).status_code == 401


def test_password_change_ends_every_other_session_and_keeps_this_client_logged_in(client, auth):
    me = auth.user()
    other_device = login(client, me.username).json
    response = client.post(
        PASSWORD_CHANGE, headers=me.headers, json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert response.status_code == 200
    assert works(client, response.json["access_token"])
    assert refresh(client, response.json["refresh_token"]).status_code == 200
    for access_token, refresh_token in [
        (me.access_token, me.refresh_token),
        (other_device["access_token"], other_device["refresh_token"]),
    ]:
        assert not works(client, access_token)
        assert refresh(client, refresh_token).status_code == 401
    assert login(client, me.username).status_code == 401
    assert login(client, me.username, NEW_PASSWORD).status_code == 200


def test_password_change_validates_the_new_password(client, auth):
    me = auth.user()
    body = {"current_password": PASSWORD, "new_password": "x"}
    response = client.post(PASSWORD_CHANGE, headers=me.headers, json=body)
    assert response.status_code == 422 and list(response.json["errors"]["json"]) == ["new_password"]


@pytest.mark.parametrize("new_password", ["password123", "{username}"])
def test_password_change_refuses_a_common_password_or_the_username(client, auth, new_password):
    me = auth.user()
    body = {"current_password": PASSWORD, "new_password": new_password.format(username=me.username)}
    response = client.post(PASSWORD_CHANGE, headers=me.headers, json=body)
    assert response.status_code == 422 and list(response.json["errors"]["json"]) == ["new_password"]
    assert works(client, me.access_token)


def test_wrong_passwords_are_rate_limited_per_user(client, auth):
    me = auth.user()
    body = {"current_password": "not it at all", "new_password": NEW_PASSWORD}
    statuses = [client.post(PASSWORD_CHANGE, headers=me.headers, json=body).status_code for _ in range(5)]
    assert statuses == [403] * 5
    limited = client.delete(ME, headers=me.headers, json={"password": PASSWORD})
    assert limited.status_code == 429 and "Retry-After" in limited.headers


# --- account deletion ---------------------------------------------------------------------------


def test_deleting_the_account_ends_its_sessions_and_keeps_its_deployments(client, auth, session, fleet):
    from shared.deployments.models import Deployment
    from shared.identity.models import User
    from shared.organizations.models import Membership

    organization, admin = auth.org("acme")
    me = auth.member("developer", organization)
    deployment = fleet.deployment(fleet.cluster(organization), me)
    current = refresh(client, me.refresh_token).json

    assert client.delete(ME, headers=bearer(current["access_token"]), json={"password": "nope nope"}).status_code == 403
    assert client.delete(ME, headers=bearer(current["access_token"]), json={"password": PASSWORD}).status_code == 204

    for access_token in (me.access_token, current["access_token"]):
        assert client.get(ME, headers=bearer(access_token)).status_code == 401
        write = client.post("/api/v1/organizations", headers=bearer(access_token), json={"name": "again"})
        assert write.status_code == 401, write.json
    assert refresh(client, current["refresh_token"]).status_code == 401
    assert login(client, me.username).status_code == 401

    session.expire_all()
    assert session.get(User, me.id) is None
    assert session.get(Membership, (organization.id, me.id)) is None
    assert session.get(Deployment, deployment.id).created_by is None
    assert works(client, admin.access_token)


def test_the_only_admin_of_an_organization_cannot_delete_their_account(client, auth):
    organization, admin = auth.org("acme")
    colleague = auth.member("developer", organization)
    refused = client.delete(ME, headers=admin.headers, json={"password": PASSWORD})
    assert refused.status_code == 409 and "acme" in refused.json["message"]
    assert works(client, admin.access_token)

    promoted = client.patch(
        f"/api/v1/organizations/{organization.id}/members/{colleague.id}", headers=admin.headers, json={"role": "admin"}
    )
    assert promoted.status_code == 200
    assert client.delete(ME, headers=admin.headers, json={"password": PASSWORD}).status_code == 204


# --- cost ---------------------------------------------------------------------------------------


def _commands(redis_client) -> dict:
    return {name: stats["calls"] for name, stats in redis_client.info("commandstats").items()}


def test_checking_a_token_costs_one_redis_command(client, auth, redis_client):
    me = auth.user()
    works(client, me.access_token)  # warm up: connections, script caches
    before = _commands(redis_client)
    assert works(client, me.access_token)
    after = _commands(redis_client)
    spent = {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}
    spent.pop("cmdstat_info", None)
    assert spent == {"cmdstat_mget": 1}
