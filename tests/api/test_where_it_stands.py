"""Where a deployment stands (API.md, "Where a deployment stands, and what would happen"): `position` while
queued, a running deployment's reason, and the dry run of a submission."""

import dataclasses
import uuid

import pytest
from sqlalchemy import text

from shared import config
from shared.db import Base
from shared.deployments.models import Deployment
from shared.scheduling import passes
from shared.scheduling.requests import pending_key
from tests.conftest import forget_pass_requests

BODY = {"name": "train", "image": "ghcr.io/acme/train:1", "cpu": 1, "ram_gb": 1, "gpu": 0}


@pytest.fixture
def org(auth):
    return auth.org()


@pytest.fixture
def cluster(fleet, org):
    return fleet.cluster(org[0], name="gpu-a", cpu=8, ram_gb=32, gpu=4)


def submit(client, cluster, identity, **body):
    response = client.post(
        f"/api/v1/clusters/{cluster.id}/deployments", json={**BODY, **body}, headers=identity.headers
    )
    assert response.status_code == 202, response.json
    return response.json


def dry_run(client, cluster, identity, **body):
    return client.post(
        f"/api/v1/clusters/{cluster.id}/deployments/dry-run", json={**BODY, **body}, headers=identity.headers
    )


def positions(client, cluster, identity, query=""):
    response = client.get(f"/api/v1/clusters/{cluster.id}/deployments{query}", headers=identity.headers)
    assert response.status_code == 200, response.json
    return [(d["name"], d["position"]) for d in response.json]


def cancel(client, deployment, identity):
    response = client.post(f"/api/v1/deployments/{deployment['id']}/cancel", headers=identity.headers)
    assert response.status_code == 200, response.json
    return response.json


# Positions -------------------------------------------------------------------------------------------------


def test_positions_follow_priority_then_age_and_move_up_after_starts_and_cancels(client, fleet, session, org, cluster):
    _, admin = org
    older = submit(client, cluster, admin, name="older")
    younger = submit(client, cluster, admin, name="younger")
    urgent = submit(client, cluster, admin, name="urgent", priority=900)
    low = submit(client, cluster, admin, name="low", priority=100)
    # As submitted: each one's place at that moment.
    assert [older["position"], younger["position"], urgent["position"], low["position"]] == [1, 2, 1, 4]

    assert positions(client, cluster, admin) == [("urgent", 1), ("older", 2), ("younger", 3), ("low", 4)]
    assert positions(client, cluster, admin, "?page=2&page_size=2") == [("younger", 3), ("low", 4)]

    fleet.start(session.get(Deployment, uuid.UUID(urgent["id"])))
    assert positions(client, cluster, admin) == [("urgent", None), ("older", 1), ("younger", 2), ("low", 3)]
    cancelled = cancel(client, older, admin)
    assert cancelled["status"] == "cancelled" and cancelled["position"] is None
    assert positions(client, cluster, admin, "?status=queued") == [("younger", 1), ("low", 2)]
    one = client.get(f"/api/v1/deployments/{low['id']}", headers=admin.headers).json
    assert one["position"] == 2


def test_positions_of_a_batch_count_what_was_queued_and_the_batch_itself(client, org, cluster):
    _, admin = org
    submit(client, cluster, admin, name="waiting", priority=500)
    items = [
        {**BODY, "name": "b-low", "priority": 100},
        {**BODY, "name": "b-high", "priority": 900},
        {**BODY, "name": "b-mid-1"},
        {**BODY, "name": "b-mid-2"},
    ]
    response = client.post(
        f"/api/v1/clusters/{cluster.id}/deployments/batch", json={"deployments": items}, headers=admin.headers
    )
    assert response.status_code == 202, response.json
    answered = [(d["name"], d["position"]) for d in response.json]
    assert answered == [("b-low", 5), ("b-high", 1), ("b-mid-1", 3), ("b-mid-2", 4)]
    assert positions(client, cluster, admin) == [
        ("b-high", 1),
        ("waiting", 2),
        ("b-mid-1", 3),
        ("b-mid-2", 4),
        ("b-low", 5),
    ]


def test_positions_are_per_cluster(client, fleet, org, cluster):
    organization, admin = org
    other = fleet.cluster(organization, name="gpu-b")
    submit(client, cluster, admin, name="here-1")
    submit(client, other, admin, name="there-1")
    submit(client, cluster, admin, name="here-2")
    listed = client.get(f"/api/v1/organizations/{organization.id}/deployments", headers=admin.headers).json
    assert [(d["name"], d["position"]) for d in listed] == [("here-2", 2), ("there-1", 1), ("here-1", 1)]


def test_a_running_deployment_says_since_when_and_until_when(client, fleet, org, cluster):
    _, admin = org
    timed = fleet.start(fleet.deployment(cluster, admin, name="timed", run_seconds=600))
    open_ended = fleet.start(fleet.deployment(cluster, admin, name="open-ended"))

    shown = client.get(f"/api/v1/deployments/{timed.id}", headers=admin.headers).json
    since = timed.started_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    until = timed.completes_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert shown["reason"] == f"Running since {since}; completes at {until}."
    assert shown["position"] is None
    shown = client.get(f"/api/v1/deployments/{open_ended.id}", headers=admin.headers).json
    assert shown["reason"] == f"Running since {open_ended.started_at.strftime('%Y-%m-%d %H:%M:%S UTC')}."


# Dry run ---------------------------------------------------------------------------------------------------


def _row_counts(session) -> dict:
    counts = {
        table.name: session.execute(text(f'SELECT count(*) FROM "{table.name}"')).scalar()
        for table in Base.metadata.sorted_tables
    }
    counts["queued"] = session.execute(text("SELECT sum(queued) FROM cluster_queues")).scalar()
    session.rollback()
    return counts


def test_a_dry_run_that_fits_would_start_and_stores_nothing_nor_asks_for_a_pass(
    client, session, org, cluster, redis_client
):
    _, admin = org
    forget_pass_requests(redis_client)
    before = _row_counts(session)

    response = dry_run(client, cluster, admin, gpu=2)

    assert response.status_code == 200, response.json
    assert response.json == {
        "outcome": "start",
        "victims": [],
        "position": None,
        "reason": "It would start in the next pass: it fits in the free room.",
    }
    assert _row_counts(session) == before
    assert redis_client.get(pending_key(cluster.id)) is None


def test_a_dry_run_preempts_the_same_minimal_victims_a_pass_would(client, fleet, session, org, cluster):
    _, admin = org
    fleet.start(fleet.deployment(cluster, admin, name="old-low", gpu=1, priority=100))
    newer = fleet.start(fleet.deployment(cluster, admin, name="new-low", gpu=2, priority=100))
    fleet.start(fleet.deployment(cluster, admin, name="mid", gpu=1, priority=200))

    forecast = dry_run(client, cluster, admin, name="urgent", gpu=2, priority=800)

    assert forecast.status_code == 200, forecast.json
    assert forecast.json["outcome"] == "preempt"
    assert forecast.json["victims"] == [{"id": str(newer.id), "name": "new-low", "priority": 100}]
    assert forecast.json["position"] is None and "new-low" in forecast.json["reason"]
    # The real thing: the pass hands the same victims to scheduler.preempt.
    stored = submit(client, cluster, admin, name="urgent", gpu=2, priority=800)
    outcome = passes.apply_pass(session, cluster.id)
    assert outcome.handoff == (uuid.UUID(stored["id"]), (newer.id,))


def test_a_dry_run_that_must_wait_says_what_a_pass_would_write_and_where_it_would_stand(
    client, fleet, session, org, cluster
):
    _, admin = org
    fleet.start(fleet.deployment(cluster, admin, name="holder", gpu=3, priority=700))
    submit(client, cluster, admin, name="ahead", gpu=2, priority=600)
    submit(client, cluster, admin, name="behind", gpu=0, priority=100)

    forecast = dry_run(client, cluster, admin, name="probe", gpu=2, priority=600)

    assert forecast.status_code == 200, forecast.json
    assert forecast.json["outcome"] == "wait" and forecast.json["victims"] == []
    stored = submit(client, cluster, admin, name="probe", gpu=2, priority=600)
    passes.apply_pass(session, cluster.id)
    shown = client.get(f"/api/v1/deployments/{stored['id']}", headers=admin.headers).json
    assert shown["status"] == "queued"
    assert forecast.json["reason"] == shown["reason"] == "waiting behind ahead (same priority, older)"
    # "behind" starts in that pass (backfill): "probe" is second, after "ahead".
    assert forecast.json["position"] == shown["position"] == 2


def test_a_dry_run_waits_for_resources_with_the_pass_reason(client, fleet, session, org, cluster):
    _, admin = org
    fleet.start(fleet.deployment(cluster, admin, name="big", gpu=4, priority=900))
    forecast = dry_run(client, cluster, admin, gpu=1, priority=500).json
    stored = submit(client, cluster, admin, gpu=1, priority=500)
    passes.apply_pass(session, cluster.id)
    shown = client.get(f"/api/v1/deployments/{stored['id']}", headers=admin.headers).json
    assert forecast["outcome"] == "wait"
    assert forecast["reason"] == shown["reason"] == "needs 1 GPU; 0 GPU free, none reclaimable from lower priorities"
    assert forecast["position"] == shown["position"] == 1


@pytest.mark.parametrize(
    "body, says",
    [
        ({"gpu": 9}, "could never run there"),
        ({"depends_on": [str(uuid.UUID(int=7))]}, "No deployment 00000000-0000-0000-0000-000000000007"),
        ({"depends_on": [str(uuid.uuid4()) for _ in range(101)]}, "101 dependencies"),
    ],
)
def test_a_dry_run_a_submit_would_refuse_is_a_reject_saying_why(client, session, org, cluster, body, says):
    _, admin = org
    before = _row_counts(session)
    forecast = dry_run(client, cluster, admin, **body)
    assert forecast.status_code == 200, forecast.json
    assert forecast.json["outcome"] == "reject" and says in forecast.json["reason"]
    assert forecast.json["victims"] == [] and forecast.json["position"] is None
    refused = client.post(f"/api/v1/clusters/{cluster.id}/deployments", json={**BODY, **body}, headers=admin.headers)
    assert refused.status_code == 422 and refused.json["message"] == forecast.json["reason"]
    assert _row_counts(session) == before


def test_a_dry_run_with_run_seconds_on_an_agent_cluster_is_a_reject(client, fleet, org):
    organization, admin = org
    agents_cluster = fleet.cluster(organization, name="host", runtime="agent")
    forecast = dry_run(client, agents_cluster, admin, run_seconds=30).json
    assert forecast["outcome"] == "reject" and "run_seconds" in forecast["reason"]


def test_a_dry_run_on_a_full_queue_is_a_reject_with_the_429s_message(client, org, cluster, monkeypatch):
    _, admin = org
    submit(client, cluster, admin)
    monkeypatch.setattr(config, "_settings", dataclasses.replace(config.get_settings(), max_queued_per_cluster=1))
    forecast = dry_run(client, cluster, admin).json
    refused = client.post(f"/api/v1/clusters/{cluster.id}/deployments", json=BODY, headers=admin.headers)
    assert refused.status_code == 429
    assert forecast["outcome"] == "reject" and forecast["reason"] == refused.json["message"]


def test_a_dry_run_depending_on_a_failed_deployment_is_a_reject(client, fleet, org, cluster):
    _, admin = org
    prep = submit(client, cluster, admin, name="prep")
    cancel(client, prep, admin)
    forecast = dry_run(client, cluster, admin, depends_on=[prep["id"]]).json
    assert forecast["outcome"] == "reject"
    assert forecast["reason"] == (
        f"A submit would be accepted, but the next pass would fail it: dependency prep ({prep['id']}) ended cancelled."
    )


def test_a_dry_run_waiting_for_a_dependency_says_so(client, org, cluster):
    _, admin = org
    prep = submit(client, cluster, admin, name="prep")
    forecast = dry_run(client, cluster, admin, depends_on=[prep["id"]]).json
    assert forecast["outcome"] == "wait" and forecast["reason"] == "waiting for dependency prep (queued)"


def test_a_dry_run_on_an_agent_cluster_without_a_live_agent_waits_for_one(client, fleet, org):
    organization, admin = org
    agents_cluster = fleet.cluster(organization, name="host", runtime="agent")
    forecast = dry_run(client, agents_cluster, admin).json
    assert forecast["outcome"] == "wait"
    assert forecast["reason"] == "No agent has synced with this cluster yet: start one with a token of the cluster."


@pytest.mark.parametrize(
    "body",
    [
        {"gpu": -1},
        {"priority": 1001},
        {"name": ""},
        {"cpu": "1"},
        {"depends_on": ["not-a-uuid"]},
        {"unknown": 1},
    ],
)
def test_a_malformed_dry_run_is_the_422_a_submit_gives(client, session, org, cluster, body):
    _, admin = org
    before = _row_counts(session)
    forecast = dry_run(client, cluster, admin, **body)
    submitted = client.post(f"/api/v1/clusters/{cluster.id}/deployments", json={**BODY, **body}, headers=admin.headers)
    assert forecast.status_code == submitted.status_code == 422
    assert forecast.json == submitted.json
    assert _row_counts(session) == before


def test_a_viewer_may_not_dry_run(client, auth, org, cluster):
    viewer = auth.member("viewer", org[0])
    assert dry_run(client, cluster, viewer).status_code == 403
