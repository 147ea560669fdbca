"""Organizations, invite codes and memberships (API.md "Organizations and membership")."""

import threading
import uuid
from datetime import timedelta

from shared.timeutil import utcnow

ORGS = "/api/v1/organizations"


def join(client, identity, code):
    return client.post(f"{ORGS}/join", json={"invite_code": code}, headers=identity.headers)


def at_once(app, *requests):
    """Send each request, `(function, *arguments)` called as `function(client, *arguments)`, from its own
    thread and test client, all released together; their statuses."""
    statuses = []
    barrier = threading.Barrier(len(requests))

    def send(function, *arguments):
        with app.test_client() as client:
            barrier.wait()
            statuses.append(function(client, *arguments).status_code)

    threads = [threading.Thread(target=send, args=request) for request in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def standing_code(client, organization, admin):
    return client.get(f"{ORGS}/{organization.id}", headers=admin.headers).json["invite_code"]


def rotate(client, organization, admin):
    return client.post(f"{ORGS}/{organization.id}/invite-code", headers=admin.headers)


def remove(client, organization, actor, target):
    return client.delete(f"{ORGS}/{organization.id}/members/{target.id}", headers=actor.headers)


def set_role(client, organization, actor, target, role):
    return client.patch(f"{ORGS}/{organization.id}/members/{target.id}", json={"role": role}, headers=actor.headers)


def test_the_creator_is_admin_and_gets_a_developer_invite_code(client, auth):
    me = auth.user()
    response = client.post(ORGS, json={"name": "acme"}, headers=me.headers)
    assert response.status_code == 201
    body = response.json
    assert body["role"] == "admin" and body["name"] == "acme"
    assert len(body["invite_code"]) >= 22  # >= 128 bits, URL-safe base64

    newcomer = auth.user()
    joined = join(client, newcomer, body["invite_code"])
    assert joined.status_code == 200
    assert joined.json == {"id": body["id"], "name": "acme", "role": "developer"}


def test_organization_names_are_validated(client, auth):
    me = auth.user()
    for name in ("", " padded ", "x" * 129, "tab\tinside", "trailing\n", "bell\x07", "line\u2028break", "c1\x85"):
        assert client.post(ORGS, json={"name": name}, headers=me.headers).status_code == 422, name


def test_an_organization_name_may_be_any_text_the_spec_allows(client, auth):
    # The spec's pattern is the whole rule: format characters such as an emoji's zero-width joiner pass.
    me = auth.user()
    name = "Équipe 👩\u200d💻 R&D"
    response = client.post(ORGS, json={"name": name}, headers=me.headers)
    assert response.status_code == 201 and response.json["name"] == name


def test_the_list_holds_only_the_callers_organizations(client, auth):
    mine, me = auth.org("mine")
    auth.org("theirs")
    listed = client.get(ORGS, headers=me.headers).json
    assert listed == [{"id": str(mine.id), "name": "mine", "role": "admin"}]


def test_only_admins_see_the_invite_code(client, auth):
    organization, admin = auth.org()
    developer = auth.member("developer", organization)
    as_admin = client.get(f"{ORGS}/{organization.id}", headers=admin.headers).json
    as_developer = client.get(f"{ORGS}/{organization.id}", headers=developer.headers).json
    assert as_admin["invite_code"]
    assert "invite_code" not in as_developer and as_developer["role"] == "developer"


def test_another_organization_is_404_exactly_like_a_missing_one(client, auth):
    organization, _ = auth.org()
    outsider = auth.user()
    other = client.get(f"{ORGS}/{organization.id}", headers=outsider.headers)
    missing = client.get(f"{ORGS}/{uuid.uuid4()}", headers=outsider.headers)
    assert other.status_code == missing.status_code == 404
    assert other.json == missing.json


def test_joining_twice_is_409(client, auth):
    organization, admin = auth.org()
    code = client.get(f"{ORGS}/{organization.id}", headers=admin.headers).json["invite_code"]
    me = auth.user()
    assert join(client, me, code).status_code == 200
    assert join(client, me, code).status_code == 409


def test_an_unknown_code_is_404(client, auth):
    assert join(client, auth.user(), "no-such-code").status_code == 404


# --- invites -----------------------------------------------------------------------------------


def create_invite(client, organization, admin, **body):
    return client.post(f"{ORGS}/{organization.id}/invites", json=body, headers=admin.headers)


def test_an_invite_grants_its_role(client, auth):
    organization, admin = auth.org()
    invite = create_invite(client, organization, admin, role="viewer").json
    assert invite["role"] == "viewer" and invite["uses"] == 0
    assert join(client, auth.user(), invite["code"]).json["role"] == "viewer"
    admin_invite = create_invite(client, organization, admin, role="admin").json
    assert join(client, auth.user(), admin_invite["code"]).json["role"] == "admin"


def test_an_invite_is_used_up_after_max_uses(client, auth):
    organization, admin = auth.org()
    invite = create_invite(client, organization, admin, role="viewer", max_uses=2).json
    assert join(client, auth.user(), invite["code"]).status_code == 200
    assert join(client, auth.user(), invite["code"]).status_code == 200
    used_up = join(client, auth.user(), invite["code"])
    assert used_up.status_code == 404


def test_max_uses_holds_under_concurrent_joins(app, auth):
    organization, admin = auth.org()
    with app.test_client() as client:
        code = create_invite(client, organization, admin, max_uses=1).json["code"]
    joiners = [auth.user() for _ in range(6)]
    statuses = []

    def attempt(identity):
        with app.test_client() as own_client:
            statuses.append(join(own_client, identity, code).status_code)

    threads = [threading.Thread(target=attempt, args=(j,)) for j in joiners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] + [404] * 5


def test_an_expired_invite_is_404(client, auth, session):
    from shared.organizations.models import Invite

    organization, admin = auth.org()
    invite = create_invite(client, organization, admin, expires_in_hours=1).json
    assert invite["expires_at"]
    row = session.get(Invite, invite["code"])
    row.expires_at = utcnow() - timedelta(seconds=1)
    session.commit()
    assert join(client, auth.user(), invite["code"]).status_code == 404


def test_a_revoked_invite_is_404_at_once(client, auth):
    organization, admin = auth.org()
    invite = create_invite(client, organization, admin).json
    revoked = client.delete(f"{ORGS}/{organization.id}/invites/{invite['code']}", headers=admin.headers)
    assert revoked.status_code == 204
    assert join(client, auth.user(), invite["code"]).status_code == 404
    listed = client.get(f"{ORGS}/{organization.id}/invites", headers=admin.headers).json
    assert invite["code"] not in [i["code"] for i in listed]


def test_revoking_the_standing_code_hides_it(client, auth):
    organization, admin = auth.org()
    code = client.get(f"{ORGS}/{organization.id}", headers=admin.headers).json["invite_code"]
    client.delete(f"{ORGS}/{organization.id}/invites/{code}", headers=admin.headers)
    assert client.get(f"{ORGS}/{organization.id}", headers=admin.headers).json["invite_code"] is None
    assert join(client, auth.user(), code).status_code == 404


def test_an_invite_of_another_organization_cannot_be_revoked(client, auth):
    mine, admin = auth.org()
    theirs, their_admin = auth.org()
    code = create_invite(client, theirs, their_admin).json["code"]
    response = client.delete(f"{ORGS}/{mine.id}/invites/{code}", headers=admin.headers)
    assert response.status_code == 404
    assert join(client, auth.user(), code).status_code == 200


def test_invite_input_is_validated(client, auth):
    organization, admin = auth.org()
    for body in ({"role": "owner"}, {"max_uses": 0}, {"expires_in_hours": -1}, {"uses": 3}, {"code": "mine"}):
        assert create_invite(client, organization, admin, **body).status_code == 422, body


# --- members -----------------------------------------------------------------------------------


def members(client, organization, identity):
    return client.get(f"{ORGS}/{organization.id}/members", headers=identity.headers)


def test_members_are_listed_with_roles(client, auth):
    organization, admin = auth.org()
    viewer = auth.member("viewer", organization)
    listed = members(client, organization, viewer).json
    assert {(m["username"], m["role"]) for m in listed} == {(admin.username, "admin"), (viewer.username, "viewer")}


def test_an_admin_changes_a_role(client, auth):
    organization, admin = auth.org()
    viewer = auth.member("viewer", organization)
    response = client.patch(
        f"{ORGS}/{organization.id}/members/{viewer.id}", json={"role": "developer"}, headers=admin.headers
    )
    assert response.status_code == 200 and response.json["role"] == "developer"


def test_the_last_admin_cannot_be_demoted(client, auth):
    organization, admin = auth.org()
    response = client.patch(
        f"{ORGS}/{organization.id}/members/{admin.id}", json={"role": "viewer"}, headers=admin.headers
    )
    assert response.status_code == 409 and "last admin" in response.json["message"]


def test_an_admin_can_step_down_once_another_admin_exists(client, auth):
    organization, admin = auth.org()
    second = auth.member("admin", organization)
    response = client.patch(
        f"{ORGS}/{organization.id}/members/{admin.id}", json={"role": "viewer"}, headers=admin.headers
    )
    assert response.status_code == 200
    assert (
        client.patch(
            f"{ORGS}/{organization.id}/members/{second.id}", json={"role": "viewer"}, headers=second.headers
        ).status_code
        == 409
    )


def test_two_admins_demoting_each_other_at_once_leave_one_admin(app, auth, session):
    from shared.organizations.models import Membership

    organization, first = auth.org()
    second = auth.member("admin", organization)
    statuses = []

    def demote(actor, target):
        with app.test_client() as client:
            response = client.patch(
                f"{ORGS}/{organization.id}/members/{target.id}", json={"role": "viewer"}, headers=actor.headers
            )
            statuses.append(response.status_code)

    threads = [threading.Thread(target=demote, args=pair) for pair in ((first, second), (second, first))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    session.expire_all()
    admins = session.query(Membership).filter_by(organization_id=organization.id, role="admin").count()
    assert admins == 1
    assert sorted(statuses) in ([200, 403], [200, 409])


def test_the_last_admin_cannot_leave(client, auth):
    organization, admin = auth.org()
    response = client.delete(f"{ORGS}/{organization.id}/members/{admin.id}", headers=admin.headers)
    assert response.status_code == 409


def test_a_member_can_leave(client, auth):
    organization, _ = auth.org()
    viewer = auth.member("viewer", organization)
    assert client.delete(f"{ORGS}/{organization.id}/members/{viewer.id}", headers=viewer.headers).status_code == 204
    assert client.get(f"{ORGS}/{organization.id}", headers=viewer.headers).status_code == 404


def test_a_developer_cannot_remove_another_member(client, auth):
    organization, admin = auth.org()
    developer = auth.member("developer", organization)
    response = client.delete(f"{ORGS}/{organization.id}/members/{admin.id}", headers=developer.headers)
    assert response.status_code == 403


def test_role_changes_accept_only_known_roles(client, auth):
    organization, admin = auth.org()
    viewer = auth.member("viewer", organization)
    for body in ({"role": "owner"}, {}, {"role": "admin", "user_id": str(admin.id)}):
        response = client.patch(f"{ORGS}/{organization.id}/members/{viewer.id}", json=body, headers=admin.headers)
        assert response.status_code == 422, body


def test_a_missing_member_is_404(client, auth):
    organization, admin = auth.org()
    response = client.patch(
        f"{ORGS}/{organization.id}/members/{uuid.uuid4()}", json={"role": "viewer"}, headers=admin.headers
    )
    assert response.status_code == 404


def test_mutual_demotions_at_once_never_both_succeed(app, auth):
    """Issue 10, finding 5: the caller's role is re-checked under the organization lock."""
    for _ in range(20):
        organization, first = auth.org()
        second = auth.member("admin", organization)
        auth.member("admin", organization)  # a third admin: the last-admin rule must not be what saves it
        statuses = at_once(
            app,
            (set_role, organization, first, second, "viewer"),
            (set_role, organization, second, first, "viewer"),
        )
        assert sorted(statuses) == [200, 403]


def test_mutual_removals_at_once_never_both_succeed(app, auth):
    """Issue 10, finding 5: a caller removed while its request waited for the lock is no longer a member."""
    for _ in range(20):
        organization, first = auth.org()
        second = auth.member("admin", organization)
        auth.member("admin", organization)
        statuses = at_once(app, (remove, organization, first, second), (remove, organization, second, first))
        assert sorted(statuses) == [204, 404]


# --- who issued an invite (issue 10, finding 1) ---------------------------------------------------


def test_a_removed_admin_cannot_take_the_organization_back_with_their_own_code(client, auth):
    organization, first = auth.org()
    second = auth.user()
    assert join(client, second, standing_code(client, organization, first)).status_code == 200
    assert set_role(client, organization, first, second, "admin").status_code == 200
    code = create_invite(client, organization, second, role="admin").json["code"]

    assert remove(client, organization, first, second).status_code == 204
    assert join(client, second, code).status_code == 404
    listed = client.get(f"{ORGS}/{organization.id}/invites", headers=first.headers).json
    assert code not in [invite["code"] for invite in listed]
    assert {(m["username"], m["role"]) for m in members(client, organization, first).json} == {
        (first.username, "admin")
    }


def test_a_demoted_admins_codes_die_with_the_demotion(client, auth):
    organization, first = auth.org()
    second = auth.member("admin", organization)
    code = create_invite(client, organization, second, role="viewer").json["code"]
    assert set_role(client, organization, first, second, "developer").status_code == 200
    assert join(client, auth.user(), code).status_code == 404
    assert set_role(client, organization, first, second, "admin").status_code == 200
    assert join(client, auth.user(), code).status_code == 404, "a promotion does not bring old codes back"


def test_an_admin_who_leaves_takes_their_codes_along(client, auth):
    organization, _ = auth.org()
    second = auth.member("admin", organization)
    code = create_invite(client, organization, second).json["code"]
    assert remove(client, organization, second, second).status_code == 204
    assert join(client, auth.user(), code).status_code == 404


def test_the_standing_code_dies_when_its_creator_leaves_and_an_admin_rotates_it(client, auth):
    organization, creator = auth.org()
    successor = auth.member("admin", organization)
    old = standing_code(client, organization, creator)
    assert remove(client, organization, creator, creator).status_code == 204
    assert join(client, auth.user(), old).status_code == 404
    assert standing_code(client, organization, successor) is None

    rotated = rotate(client, organization, successor)
    assert rotated.status_code == 201
    assert rotated.json["role"] == "developer" and rotated.json["standing"] is True
    assert rotated.json["issued_by"] == {"user_id": str(successor.id), "username": successor.username}
    assert standing_code(client, organization, successor) == rotated.json["code"]
    assert join(client, auth.user(), rotated.json["code"]).json["role"] == "developer"


def test_rotating_the_standing_code_kills_the_old_one_at_once(client, auth):
    organization, admin = auth.org()
    old = standing_code(client, organization, admin)
    new = rotate(client, organization, admin).json["code"]
    assert new != old
    assert join(client, auth.user(), old).status_code == 404
    assert join(client, auth.user(), new).status_code == 200
    listed = client.get(f"{ORGS}/{organization.id}/invites", headers=admin.headers).json
    assert [invite["code"] for invite in listed if invite["standing"]] == [new]


def test_only_admins_rotate_the_standing_code(client, auth):
    organization, admin = auth.org()
    developer = auth.member("developer", organization)
    old = standing_code(client, organization, admin)
    assert rotate(client, organization, developer).status_code == 403
    assert rotate(client, organization, auth.user()).status_code == 404
    assert standing_code(client, organization, admin) == old


def test_invites_show_who_issued_them(client, auth):
    organization, admin = auth.org()
    issued = create_invite(client, organization, admin, role="viewer").json
    expected = {"user_id": str(admin.id), "username": admin.username}
    assert issued["issued_by"] == expected and issued["standing"] is False
    listed = client.get(f"{ORGS}/{organization.id}/invites", headers=admin.headers).json
    assert {invite["code"]: invite["issued_by"] for invite in listed} == {
        issued["code"]: expected,
        standing_code(client, organization, admin): expected,
    }


def test_an_invite_never_grants_more_than_its_issuer_holds_when_used(client, auth, session):
    """Checked at join time, whatever revocation missed (rows changed behind the service's back)."""
    from shared.organizations.models import Membership

    organization, _ = auth.org()
    second = auth.member("admin", organization)
    code = create_invite(client, organization, second, role="admin").json["code"]
    session.get(Membership, (organization.id, second.id)).role = "developer"
    session.commit()
    assert join(client, auth.user(), code).status_code == 404

    session.get(Membership, (organization.id, second.id)).role = "admin"
    session.commit()
    assert join(client, auth.user(), code).json["role"] == "admin"

    session.delete(session.get(Membership, (organization.id, second.id)))
    session.commit()
    assert join(client, auth.user(), code).status_code == 404


def test_a_code_never_outlives_its_issuers_removal_under_concurrent_joins(app, auth):
    for _ in range(10):
        organization, first = auth.org()
        second = auth.member("admin", organization)
        with app.test_client() as client:
            code = create_invite(client, organization, second, role="admin").json["code"]
        joiner = auth.user()
        statuses = at_once(app, (remove, organization, first, second), (join, joiner, code))
        assert statuses.count(204) == 1 and set(statuses) <= {204, 200, 404}
        with app.test_client() as client:
            assert join(client, auth.user(), code).status_code == 404
