"""What happened: a cluster's events and the organization's audit log (API.md, "History and views across the
organization"). Each entry is written with the change it records, once, and never for a refused change."""

import json

import pytest
from sqlalchemy import text

from shared.scheduling import reconcile as reconciler
from tests.api.test_agents import sync

API = "/api/v1"


@pytest.fixture
def org(auth):
    return auth.org("history")


def cluster_events(client, cluster_id, identity, **query):
    response = client.get(f"{API}/clusters/{cluster_id}/events", query_string=query, headers=identity.headers)
    assert response.status_code == 200, response.json
    return response.json


def audit_log(client, organization_id, identity, **query):
    response = client.get(f"{API}/organizations/{organization_id}/events", query_string=query, headers=identity.headers)
    assert response.status_code == 200, response.json
    return response.json


def types(entries):
    return [entry["type"] for entry in entries]


def create_cluster(client, organization, admin, **body):
    payload = {"name": "gpu-a", "cpu": 8, "ram_gb": 32, "gpu": 4, **body}
    response = client.post(f"{API}/organizations/{organization.id}/clusters", json=payload, headers=admin.headers)
    assert response.status_code == 201, response.json
    return response.json


def patch_cluster(client, cluster_id, admin, **body):
    return client.patch(f"{API}/clusters/{cluster_id}", json=body, headers=admin.headers)


# Cluster events ----------------------------------------------------------------------------------------------


def test_a_resize_is_one_event_saying_from_what_to_what(client, org):
    organization, admin = org
    cluster = create_cluster(client, organization, admin)
    assert patch_cluster(client, cluster["id"], admin, gpu=8, ram_gb=64).status_code == 200
    [event] = cluster_events(client, cluster["id"], admin)
    assert event["type"] == "capacity_changed"
    assert event["actor"] == admin.username
    assert event["message"] == ("Cluster gpu-a resized from 8 CPU, 32 GB RAM, 4 GPU to 8 CPU, 64 GB RAM, 8 GPU.")
    assert event["at"].endswith("+00:00")


def test_a_patch_that_changes_nothing_and_a_refused_shrink_write_nothing(client, org, fleet, session):
    organization, admin = org
    cluster = fleet.cluster(organization, gpu=2)
    fleet.start(fleet.deployment(cluster, admin, gpu=2))
    assert patch_cluster(client, cluster.id, admin, gpu=2).status_code == 200
    assert patch_cluster(client, cluster.id, admin, gpu=1).status_code == 409
    assert cluster_events(client, cluster.id, admin) == []
    assert "cluster_resized" not in types(audit_log(client, organization.id, admin))


def test_runtime_changes_and_an_agent_losing_the_cluster_are_recorded(client, org, fleet):
    organization, admin = org
    cluster = fleet.cluster(organization, runtime="agent")
    created = client.post(f"{API}/clusters/{cluster.id}/agent-tokens", json={"name": "rack"}, headers=admin.headers)
    assert sync(client, created.json["token"], name="host-1").status_code == 200
    assert patch_cluster(client, cluster.id, admin, runtime="simulated").status_code == 200
    assert patch_cluster(client, cluster.id, admin, runtime="agent").status_code == 200

    events = cluster_events(client, cluster.id, admin)
    assert types(events) == [
        "runtime_changed",
        "agent_lost",
        "runtime_changed",
        "agent_took_over",
        "agent_token_created",
    ]
    assert events[0]["message"] == "Runtime changed from simulated to agent."
    assert events[1] == {**events[1], "actor": admin.username}
    assert "host-1" in events[1]["message"] and "simulated" in events[1]["message"]
    assert events[3]["actor"] == "agent host-1"
    assert events[4] == {**events[4], "actor": admin.username, "message": "Agent token rack created."}


def test_revoking_the_holding_agents_token_records_the_revocation_and_the_loss(client, org, fleet):
    organization, admin = org
    cluster = fleet.cluster(organization, runtime="agent")
    tokens = f"{API}/clusters/{cluster.id}/agent-tokens"
    holding = client.post(tokens, json={"name": "rack"}, headers=admin.headers).json
    spare = client.post(tokens, json={"name": "spare"}, headers=admin.headers).json
    assert sync(client, holding["token"], name="host-1").status_code == 200

    assert client.delete(f"{tokens}/{spare['id']}", headers=admin.headers).status_code == 204
    assert types(cluster_events(client, cluster.id, admin))[0] == "agent_token_revoked"  # no loss: not its token
    assert client.delete(f"{tokens}/{holding['id']}", headers=admin.headers).status_code == 204
    assert client.delete(f"{tokens}/{holding['id']}", headers=admin.headers).status_code == 404

    events = cluster_events(client, cluster.id, admin)
    assert types(events) == [
        "agent_lost",
        "agent_token_revoked",
        "agent_token_revoked",
        "agent_took_over",
        "agent_token_created",
        "agent_token_created",
    ]
    assert events[0]["message"].startswith("Agent host-1 lost the cluster: its token rack was revoked")
    assert events[1]["message"] == "Agent token rack revoked."
    assert {event["actor"] for event in events} == {admin.username, "agent host-1"}


def test_a_counter_repair_is_in_the_clusters_events(client, org, fleet, session):
    organization, admin = org
    cluster = fleet.cluster(organization, gpu=4)
    fleet.start(fleet.deployment(cluster, admin, gpu=2))
    session.execute(text("UPDATE clusters SET gpu_allocated = 3 WHERE id = :id"), {"id": cluster.id})
    session.commit()
    reconciler.reconcile(session=session, send_completion=lambda *_: None)
    [event] = cluster_events(client, cluster.id, admin)
    assert event["type"] == "counters_repaired" and event["actor"] == "reconciler"


def test_cluster_events_are_newest_first_a_page_at_a_time_for_every_member(client, auth, org):
    organization, admin = org
    viewer = auth.member("viewer", organization)
    cluster = create_cluster(client, organization, admin, gpu=0)
    for gpu in range(1, 6):
        assert patch_cluster(client, cluster["id"], admin, gpu=gpu).status_code == 200

    every = cluster_events(client, cluster["id"], viewer)
    assert [event["message"].rsplit(" ", 2)[-2] for event in every] == ["5", "4", "3", "2", "1"]
    assert [event["at"] for event in every] == sorted((event["at"] for event in every), reverse=True)
    response = client.get(
        f"{API}/clusters/{cluster['id']}/events", query_string={"page": 2, "page_size": 2}, headers=viewer.headers
    )
    assert response.json == every[2:4]
    assert json.loads(response.headers["X-Pagination"])["total"] == 5


def test_another_organizations_cluster_events_are_not_found(client, auth, org):
    organization, admin = org
    cluster = create_cluster(client, organization, admin)
    _, stranger = auth.org("elsewhere")
    response = client.get(f"{API}/clusters/{cluster['id']}/events", headers=stranger.headers)
    assert response.status_code == 404
    assert response.json["message"] == "Cluster not found."


# The audit log -----------------------------------------------------------------------------------------------


def test_only_admins_read_the_audit_log(client, auth, org):
    organization, admin = org
    path = f"{API}/organizations/{organization.id}/events"
    for role in ("developer", "viewer"):
        response = client.get(path, headers=auth.member(role, organization).headers)
        assert response.status_code == 403, role
    _, stranger = auth.org("elsewhere")
    assert client.get(path, headers=stranger.headers).status_code == 404
    assert client.get(path, headers=admin.headers).status_code == 200


def test_creating_the_organization_is_its_first_entry(client, org):
    organization, admin = org
    [entry] = audit_log(client, organization.id, admin)
    assert entry["type"] == "organization_created" and entry["actor"] == admin.username
    assert entry["message"].startswith("Created organization history, as its admin")


def test_joining_names_the_invite_its_issuer_and_the_role(client, auth, org):
    organization, admin = org
    issued = client.post(
        f"{API}/organizations/{organization.id}/invites", json={"role": "viewer", "max_uses": 2}, headers=admin.headers
    ).json
    joiner = auth.user()
    joined = client.post(f"{API}/organizations/join", json={"invite_code": issued["code"]}, headers=joiner.headers)
    assert joined.status_code == 200
    again = client.post(f"{API}/organizations/join", json={"invite_code": issued["code"]}, headers=joiner.headers)
    assert again.status_code == 409

    entries = audit_log(client, organization.id, admin)
    assert types(entries) == ["member_joined", "invite_issued", "organization_created"]
    joined_entry, issued_entry = entries[0], entries[1]
    label = issued["code"][:6] + "…"
    assert joined_entry["actor"] == joiner.username
    assert joined_entry["message"] == f"Joined as viewer with invite {label} issued by {admin.username} (use 1 of 2)."
    assert issued_entry["actor"] == admin.username
    assert issued_entry["message"] == f"Issued invite {label} granting viewer, up to 2 uses."
    assert issued["code"] not in json.dumps(entries)  # no live secret in the log


def test_role_changes_removals_and_leaving_name_who_did_what(client, auth, org):
    organization, admin = org
    developer = auth.member("developer", organization)
    viewer = auth.member("viewer", organization)
    members = f"{API}/organizations/{organization.id}/members"
    assert client.patch(f"{members}/{developer.id}", json={"role": "admin"}, headers=admin.headers).status_code == 200
    assert client.patch(f"{members}/{developer.id}", json={"role": "admin"}, headers=admin.headers).status_code == 200
    assert client.delete(f"{members}/{viewer.id}", headers=developer.headers).status_code == 204
    assert client.delete(f"{members}/{developer.id}", headers=developer.headers).status_code == 204

    entries = audit_log(client, organization.id, admin)
    assert types(entries) == ["member_left", "member_removed", "role_changed", "organization_created"]
    left, removed, changed = entries[:3]
    assert (left["actor"], left["message"]) == (developer.username, "Left the organization (was admin).")
    assert removed["actor"] == developer.username
    assert removed["message"] == f"Removed {viewer.username} (viewer) from the organization."
    assert changed["actor"] == admin.username
    assert changed["message"] == f"Changed {developer.username}'s role from developer to admin."


def test_a_refused_change_writes_nothing(client, auth, org):
    organization, admin = org
    developer = auth.member("developer", organization)
    members = f"{API}/organizations/{organization.id}/members"
    before = audit_log(client, organization.id, admin)
    # The last admin: neither demoted (409) nor leaving (409); a developer may not remove others (403).
    assert client.patch(f"{members}/{admin.id}", json={"role": "viewer"}, headers=admin.headers).status_code == 409
    assert client.delete(f"{members}/{admin.id}", headers=admin.headers).status_code == 409
    assert client.delete(f"{members}/{admin.id}", headers=developer.headers).status_code == 403
    invites = f"{API}/organizations/{organization.id}/invites"
    assert client.post(invites, json={"role": "viewer"}, headers=developer.headers).status_code == 403
    assert client.delete(f"{invites}/no-such-code", headers=admin.headers).status_code == 404
    assert audit_log(client, organization.id, admin) == before


def test_invites_revoked_by_an_admin_or_with_their_issuer_and_the_standing_code_rotated(client, auth, org):
    organization, admin = org
    second = auth.member("admin", organization)
    invites = f"{API}/organizations/{organization.id}/invites"
    mine = client.post(invites, json={"role": "developer"}, headers=admin.headers).json
    theirs = client.post(invites, json={"role": "viewer", "expires_in_hours": 1}, headers=second.headers).json
    assert client.delete(f"{invites}/{mine['code']}", headers=admin.headers).status_code == 204
    rotated = client.post(f"{API}/organizations/{organization.id}/invite-code", headers=second.headers).json
    members = f"{API}/organizations/{organization.id}/members"
    assert client.patch(f"{members}/{second.id}", json={"role": "viewer"}, headers=admin.headers).status_code == 200

    entries = audit_log(client, organization.id, admin)
    assert types(entries) == [
        "invite_revoked",
        "invite_revoked",
        "role_changed",
        "standing_code_rotated",
        "invite_revoked",
        "invite_issued",
        "invite_issued",
        "organization_created",
    ]
    # The demoted admin's two codes (the one they issued, and the standing code they rotated) die with it.
    died = {entry["message"] for entry in entries[:2]}
    reason = f"its issuer {second.username} is no longer an admin"
    assert died == {f"Invite {code[:6]}… revoked: {reason}." for code in (theirs["code"], rotated["code"])}
    assert {entry["actor"] for entry in entries[:3]} == {admin.username}
    assert entries[3]["actor"] == second.username and rotated["code"][:6] in entries[3]["message"]
    assert entries[4]["message"] == f"Revoked invite {mine['code'][:6]}… granting developer."
    assert "until" in entries[5]["message"]


def test_a_deleted_clusters_entries_survive_it(client, org):
    organization, admin = org
    cluster = create_cluster(client, organization, admin, name="short-lived")
    assert patch_cluster(client, cluster["id"], admin, cpu=4, name="brief").status_code == 200
    assert client.delete(f"{API}/clusters/{cluster['id']}", headers=admin.headers).status_code == 204

    entries = audit_log(client, organization.id, admin)
    assert types(entries) == [
        "cluster_deleted",
        "cluster_resized",
        "cluster_renamed",
        "cluster_created",
        "organization_created",
    ]
    assert entries[0]["message"] == "Deleted cluster brief (4 CPU, 32 GB RAM, 4 GPU)."
    assert entries[1]["message"] == "Cluster brief resized from 8 CPU, 32 GB RAM, 4 GPU to 4 CPU, 32 GB RAM, 4 GPU."
    assert entries[3]["message"] == "Created cluster short-lived with 8 CPU, 32 GB RAM, 4 GPU (simulated runtime)."
    assert {entry["actor"] for entry in entries} == {admin.username}


def test_a_refused_cluster_deletion_writes_nothing(client, org, fleet):
    organization, admin = org
    cluster = fleet.cluster(organization)
    fleet.deployment(cluster, admin)
    before = audit_log(client, organization.id, admin)
    assert client.delete(f"{API}/clusters/{cluster.id}", headers=admin.headers).status_code == 409
    assert audit_log(client, organization.id, admin) == before


def test_a_deleted_accounts_entries_keep_its_username(client, auth, org):
    organization, admin = org
    leaver = auth.member("admin", organization)
    create_cluster(client, organization, leaver)
    gone = client.delete(f"{API}/auth/me", json={"password": "correct horse battery"}, headers=leaver.headers)
    assert gone.status_code == 204

    entries = audit_log(client, organization.id, admin)
    assert types(entries)[:2] == ["member_left", "cluster_created"]
    assert entries[0]["message"] == "Left the organization (was admin): the account was deleted."
    assert [entry["actor"] for entry in entries[:2]] == [leaver.username, leaver.username]


def test_the_audit_log_is_newest_first_a_page_at_a_time(client, org):
    organization, admin = org
    for number in range(4):
        create_cluster(client, organization, admin, name=f"c{number}")
    every = audit_log(client, organization.id, admin)
    assert [entry["message"].split()[2] for entry in every[:4]] == ["c3", "c2", "c1", "c0"]
    response = client.get(
        f"{API}/organizations/{organization.id}/events",
        query_string={"page": 2, "page_size": 2},
        headers=admin.headers,
    )
    assert response.json == every[2:4]
    assert json.loads(response.headers["X-Pagination"])["total"] == 5
    assert audit_log(client, organization.id, admin, page=9) == []


@pytest.mark.parametrize("query", [{"page": "x"}, {"page_size": 0}, {"page": 0}])
def test_bad_pagination_is_a_422(client, org, query):
    organization, admin = org
    response = client.get(f"{API}/organizations/{organization.id}/events", query_string=query, headers=admin.headers)
    assert response.status_code == 422
