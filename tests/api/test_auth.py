"""Accounts and the token lifecycle (API.md "Auth")."""

import base64
import json
from datetime import timedelta

import jwt as pyjwt
import pytest
from flask_jwt_extended import create_access_token, create_refresh_token

from tests.conftest import PASSWORD

ME = "/api/v1/auth/me"


def register(client, username="alice", email=None, password=PASSWORD, environ_base=None, **extra):
    body = {"username": username, "email": email or f"{username}@example.com", "password": password, **extra}
    return client.post("/api/v1/auth/register", json=body, environ_base=environ_base or {})


def login(client, username="alice", password=PASSWORD, environ_base=None, **extra):
    body = {"username": username, "password": password, **extra}
    return client.post("/api/v1/auth/login", json=body, environ_base=environ_base or {})


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


# --- registration -------------------------------------------------------------------------------


def test_register_returns_the_account_without_role_or_password(client):
    response = register(client)
    assert response.status_code == 201
    body = response.json
    assert set(body) == {"id", "username", "email", "created_at"}
    assert body["username"] == "alice" and body["email"] == "alice@example.com"


def test_passwords_are_stored_as_argon2id_with_owasp_parameters(client, session):
    from shared.identity.models import User

    register(client)
    stored = session.query(User).one().password_hash
    assert stored.startswith("$argon2id$") and "m=19456,t=2,p=1" in stored
    assert PASSWORD not in stored


@pytest.mark.parametrize("field", ["role", "id", "is_admin"])
def test_register_refuses_server_owned_fields(client, field):
    response = register(client, **{field: "admin"})
    assert response.status_code == 422
    assert field in response.json["errors"]["json"]


@pytest.mark.parametrize(
    "username, email, password, bad",
    [
        ("ab", "a@example.com", PASSWORD, "username"),
        ("has space", "a@example.com", PASSWORD, "username"),
        ("x" * 65, "a@example.com", PASSWORD, "username"),
        ("alice\n", "a@example.com", PASSWORD, "username"),
        ("alice", "not-an-email", PASSWORD, "email"),
        ("alice", "a@example.com", "short", "password"),
        ("alice", "a@example.com", "p" * 129, "password"),
    ],
)
def test_register_validates_each_field(client, username, email, password, bad):
    response = register(client, username=username, email=email, password=password)
    assert response.status_code == 422
    assert response.json["code"] == 422 and response.json["message"]
    assert list(response.json["errors"]["json"]) == [bad]


@pytest.mark.parametrize(
    "username, password, why",
    [
        ("alice", "password", "most common"),
        ("alice", "Iloveyou", "most common"),
        ("alice", "qwerty123", "most common"),
        ("alice_smith", "ALICE_SMITH", "username or email"),
        ("alice", "Alice@Example.com", "username or email"),
    ],
)
def test_register_refuses_common_passwords_and_the_username_or_email(client, username, password, why):
    response = register(client, username=username, password=password)
    assert response.status_code == 422
    assert why in response.json["message"]
    assert response.json["errors"] == {"json": {"password": [response.json["message"]]}}


def test_duplicate_username_or_email_is_409_case_insensitively(client):
    assert register(client).status_code == 201
    assert register(client, username="ALICE", email="other@example.com").status_code == 409
    response = register(client, username="bob", email="Alice@Example.com")
    assert response.status_code == 409 and "email" in response.json["message"]


def test_malformed_json_is_400_in_the_error_format(client):
    response = client.post("/api/v1/auth/register", data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json["code"] == 400 and response.json["message"]


# --- login --------------------------------------------------------------------------------------


def test_login_returns_a_bearer_pair(client, settings):
    register(client)
    response = login(client)
    assert response.status_code == 200
    body = response.json
    assert body["token_type"] == "Bearer" and body["expires_in"] == settings.access_token_minutes * 60
    assert client.get(ME, headers=bearer(body["access_token"])).json["username"] == "alice"


def test_unknown_user_and_wrong_password_get_the_same_401(client):
    register(client)
    wrong_password = login(client, password="wrong password")
    unknown_user = login(client, username="nobody")
    assert wrong_password.status_code == unknown_user.status_code == 401
    assert wrong_password.json == unknown_user.json


def test_tokens_carry_subject_issuer_audience_and_lifetimes(client, settings):
    register(client)
    body = login(client).json
    access = pyjwt.decode(body["access_token"], options={"verify_signature": False})
    refresh = pyjwt.decode(body["refresh_token"], options={"verify_signature": False})
    user_id = client.get(ME, headers=bearer(body["access_token"])).json["id"]
    assert access["sub"] == refresh["sub"] == user_id
    assert access["iss"] == settings.jwt_issuer and access["aud"] == settings.jwt_audience
    assert access["exp"] - access["iat"] == 15 * 60
    # Bounded by the session's end too (SESSION_MAX_DAYS, also 30 days, counted from a moment just before):
    # a second may tick between the two.
    assert 30 * 86400 - 1 <= refresh["exp"] - refresh["iat"] <= 30 * 86400
    assert pyjwt.get_unverified_header(body["access_token"])["alg"] == "HS256"


def test_me_lists_organizations_with_roles(client, auth):
    organization, admin = auth.org("acme")
    response = client.get(ME, headers=admin.headers)
    assert response.json["organizations"] == [{"id": str(organization.id), "name": "acme", "role": "admin"}]


# --- token lifecycle ----------------------------------------------------------------------------


def test_refresh_rotates_and_the_new_refresh_token_works_once(client, auth):
    me = auth.user()
    first = client.post("/api/v1/auth/refresh", headers=me.refresh_headers)
    assert first.status_code == 200
    assert first.json["refresh_token"] != me.refresh_token
    assert client.get(ME, headers=bearer(first.json["access_token"])).status_code == 200
    second = client.post("/api/v1/auth/refresh", headers=bearer(first.json["refresh_token"]))
    assert second.status_code == 200
    assert client.get(ME, headers=bearer(second.json["access_token"])).status_code == 200


def test_logout_revokes_the_access_token_and_its_refresh_token_at_once(client, auth):
    me = auth.user()
    assert client.post("/api/v1/auth/logout", headers=me.headers).status_code == 204
    after = client.get(ME, headers=me.headers)
    assert after.status_code == 401 and after.json["code"] == 401
    assert client.post("/api/v1/auth/refresh", headers=me.refresh_headers).status_code == 401


def test_session_state_lives_in_redis_only_as_long_as_the_session(client, auth, redis_client, settings):
    me = auth.user()
    ttl = redis_client.ttl(f"hv:session:{_claims_of(me.access_token)['sid']}")
    assert 0 < ttl <= settings.session_max_days * 86400
    client.post("/api/v1/auth/logout", headers=me.headers)
    assert not redis_client.exists(f"hv:session:{_claims_of(me.access_token)['sid']}")


def test_a_refresh_token_is_never_an_access_token(client, auth):
    me = auth.user()
    response = client.get(ME, headers=me.refresh_headers)
    assert response.status_code == 401 and response.json["code"] == 401


def test_an_access_token_cannot_refresh(client, auth):
    me = auth.user()
    assert client.post("/api/v1/auth/refresh", headers=me.headers).status_code == 401


def test_an_expired_token_is_401(app, client, auth):
    me = auth.user()
    with app.app_context():
        expired = create_access_token(
            identity=str(me.id),
            expires_delta=timedelta(seconds=-5),
            additional_claims={"sid": _claims_of(me.access_token)["sid"]},
        )
    response = client.get(ME, headers=bearer(expired))
    assert response.status_code == 401 and "expired" in response.json["message"]


def _forge(claims, key, algorithm="HS256", **header):
    return pyjwt.encode(claims, key, algorithm=algorithm, headers=header or None)


def _claims_of(token):
    return pyjwt.decode(token, options={"verify_signature": False})


def test_a_tampered_signature_is_401(client, auth):
    me = auth.user()
    header, payload, signature = me.access_token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    assert client.get(ME, headers=bearer(f"{header}.{payload}.{flipped}")).status_code == 401


def test_a_tampered_payload_is_401(client, auth):
    me, other = auth.user(), auth.user()
    header, _payload, signature = me.access_token.split(".")
    claims = _claims_of(me.access_token) | {"sub": str(other.id)}
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert client.get(ME, headers=bearer(f"{header}.{forged_payload}.{signature}")).status_code == 401


def test_wrong_audience_and_wrong_issuer_are_401(client, auth, settings):
    me = auth.user()
    claims = _claims_of(me.access_token)
    for changed in ({"aud": "someone-else"}, {"iss": "someone-else"}):
        token = _forge(claims | changed, settings.secret_key)
        response = client.get(ME, headers=bearer(token))
        assert response.status_code == 401, changed


def test_a_token_signed_with_another_key_is_401(client, auth):
    me = auth.user()
    token = _forge(_claims_of(me.access_token), "another key of at least thirty-two bytes!!")
    assert client.get(ME, headers=bearer(token)).status_code == 401


def test_alg_none_is_401(client, auth):
    me = auth.user()
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    payload = me.access_token.split(".")[1]
    assert client.get(ME, headers=bearer(f"{header}.{payload}.")).status_code == 401


@pytest.mark.parametrize("value", ["Bearer", "Bearer not-a-jwt", "Basic dXNlcjpwYXNz", "Bearer a.b.c"])
def test_garbage_authorization_is_401_never_422(client, value):
    response = client.get(ME, headers={"Authorization": value})
    assert response.status_code == 401
    assert set(response.json) == {"code", "status", "message"}


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "BeArEr"])
def test_the_bearer_scheme_is_case_insensitive(client, auth, scheme):
    me = auth.user()
    assert client.get(ME, headers={"Authorization": f"{scheme} {me.access_token}"}).status_code == 200


@pytest.mark.parametrize("value", ["{token}", "Token {token}", "Bearer {token} {token}"])
def test_a_token_without_the_bearer_scheme_is_told_how_to_send_it(client, auth, value):
    me = auth.user()
    response = client.get(ME, headers={"Authorization": value.format(token=me.access_token)})
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json["message"] == "Send the token as `Authorization: Bearer <token>`."


def _forged(settings, token, drop=(), claims=None, **header):
    """The token re-signed with the real key: `drop` removes claims, `claims` changes some, `header` sets
    header fields (None removes one)."""
    from api.extensions import key_id

    kept = {name: value for name, value in _claims_of(token).items() if name not in drop} | (claims or {})
    header = {"kid": key_id(settings.secret_key)} | header
    return _forge(kept, settings.secret_key, **{name: value for name, value in header.items() if value is not None})


def test_a_forged_token_with_every_claim_is_accepted(client, auth, settings):
    me = auth.user()
    assert client.get(ME, headers=bearer(_forged(settings, me.access_token))).status_code == 200


@pytest.mark.parametrize("claim", ["exp", "jti", "type", "sid", "iat"])
def test_a_token_missing_a_required_claim_is_401(client, auth, settings, claim):
    me = auth.user()
    response = client.get(ME, headers=bearer(_forged(settings, me.access_token, drop=[claim])))
    assert response.status_code == 401 and response.json["message"] == "The token is invalid."


def test_a_refresh_token_without_type_is_not_taken_for_an_access_token(client, auth, settings):
    me = auth.user()
    response = client.get(ME, headers=bearer(_forged(settings, me.refresh_token, drop=["type"])))
    assert response.status_code == 401


@pytest.mark.parametrize(
    "header",
    [
        {"kid": "0123456789abcdef"},
        {"kid": None},
        {"jku": "https://attacker.example/keys.json"},
        {"jwk": {"kty": "oct", "k": "c2VjcmV0"}},
        {"x5u": "https://attacker.example/cert.pem"},
        {"crit": ["exp"]},
    ],
    ids=["unknown-kid", "no-kid", "jku", "jwk", "x5u", "crit"],
)
def test_a_token_with_an_unknown_key_or_an_unexpected_header_is_401(client, auth, settings, header):
    me = auth.user()
    response = client.get(ME, headers=bearer(_forged(settings, me.access_token, **header)))
    assert response.status_code == 401 and response.json["message"] == "The token is invalid."


def test_a_token_of_an_unknown_type_is_401(client, auth, settings):
    me = auth.user()
    assert client.get(ME, headers=bearer(_forged(settings, me.access_token, claims={"type": "id"}))).status_code == 401


def test_missing_token_is_401(client):
    response = client.get(ME)
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"


def test_a_token_whose_subject_is_not_a_user_id_is_401(app, client):
    with app.app_context():
        token = create_access_token(identity="not-a-uuid")
    assert client.get(ME, headers=bearer(token)).status_code == 401


def test_a_token_of_no_session_is_401(app, client, auth):
    me = auth.user()
    with app.app_context():
        refresh = create_refresh_token(identity=str(me.id))
        other_session = create_refresh_token(identity=str(me.id), additional_claims={"sid": "no-such-session"})
    assert client.post("/api/v1/auth/refresh", headers=bearer(refresh)).status_code == 401
    assert client.post("/api/v1/auth/refresh", headers=bearer(other_session)).status_code == 401


# --- cookie mode --------------------------------------------------------------------------------


def _cookie(client, name):
    cookie = client.get_cookie(name)
    return cookie.value if cookie else None


def test_cookie_mode_sets_httponly_cookies_and_demands_csrf_on_writes(client, auth):
    register(client, username="carol")
    response = login(client, username="carol", cookies=True)
    assert response.status_code == 200
    set_cookies = response.headers.getlist("Set-Cookie")
    access_cookie = next(c for c in set_cookies if c.startswith("access_token_cookie="))
    assert "HttpOnly" in access_cookie and "SameSite=Lax" in access_cookie
    csrf = _cookie(client, "csrf_access_token")
    assert csrf

    assert client.get(ME).status_code == 200  # reads need no CSRF header
    refused = client.post("/api/v1/organizations", json={"name": "acme"})
    assert refused.status_code == 401 and refused.json["code"] == 401
    created = client.post("/api/v1/organizations", json={"name": "acme"}, headers={"X-CSRF-TOKEN": csrf})
    assert created.status_code == 201


def test_cookie_mode_keeps_the_tokens_out_of_the_body(client):
    register(client, username="erin")
    logged_in = login(client, username="erin", cookies=True)
    assert logged_in.status_code == 200
    assert set(logged_in.json) == {"token_type", "expires_in"}
    refreshed = client.post("/api/v1/auth/refresh", headers={"X-CSRF-TOKEN": _cookie(client, "csrf_refresh_token")})
    assert refreshed.status_code == 200
    assert set(refreshed.json) == {"token_type", "expires_in"}
    assert client.get(ME).status_code == 200  # the refreshed cookies carry the session
    documented = client.get("/openapi.json").json["components"]["schemas"]["TokensOut"]
    assert sorted(documented["required"]) == ["expires_in", "token_type"]


def test_cookie_mode_password_change_keeps_the_new_tokens_out_of_the_body(client):
    register(client, username="frank")
    login(client, username="frank", cookies=True)
    changed = client.post(
        "/api/v1/auth/password",
        json={"current_password": PASSWORD, "new_password": "a different passphrase"},
        headers={"X-CSRF-TOKEN": _cookie(client, "csrf_access_token")},
    )
    assert changed.status_code == 200
    assert set(changed.json) == {"token_type", "expires_in"}
    assert client.get(ME).status_code == 200  # the new session's cookies


def test_cookie_mode_refresh_and_logout(client):
    register(client, username="dave")
    login(client, username="dave", cookies=True)
    refreshed = client.post("/api/v1/auth/refresh", headers={"X-CSRF-TOKEN": _cookie(client, "csrf_refresh_token")})
    assert refreshed.status_code == 200
    out = client.post("/api/v1/auth/logout", headers={"X-CSRF-TOKEN": _cookie(client, "csrf_access_token")})
    assert out.status_code == 204
    assert _cookie(client, "access_token_cookie") is None
    assert client.get(ME).status_code == 401


# --- key rotation -------------------------------------------------------------------------------


def test_rotating_secret_key_keeps_tokens_signed_with_the_previous_one(auth, settings):
    import dataclasses

    from api import create_app

    me = auth.user()
    new_key = "a brand new signing key, long enough to be safe"
    during = create_app(dataclasses.replace(settings, secret_key=new_key, previous_secret_key=settings.secret_key))
    assert during.test_client().get(ME, headers=me.headers).status_code == 200
    after = create_app(dataclasses.replace(settings, secret_key=new_key))
    assert after.test_client().get(ME, headers=me.headers).status_code == 401
