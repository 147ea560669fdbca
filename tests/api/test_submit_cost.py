"""What one submission costs the database: one transaction, one query for access, the inserts, and the
queue's priority only when this submission is the one that enqueues the pass."""

import pytest
from sqlalchemy import event

from shared.db import db


@pytest.fixture
def org(auth):
    return auth.org()


@pytest.fixture
def statements():
    seen = []

    def record(_connection, _cursor, statement, *_args):
        seen.append(statement.split(None, 1)[0].upper())

    checkouts = []
    event.listen(db.engine, "before_cursor_execute", record)
    event.listen(db.engine.pool, "checkout", lambda *_args: checkouts.append(1))
    yield seen, checkouts
    event.remove(db.engine, "before_cursor_execute", record)


def test_a_submission_is_one_transaction_of_three_statements(client, org, fleet, statements, redis_client):
    organization, admin = org
    cluster = fleet.cluster(organization, cpu=8, ram_gb=32, gpu=0)
    body = {"name": "train", "image": "ghcr.io/acme/train:1", "cpu": 1, "ram_gb": 1, "gpu": 0}
    seen, checkouts = statements
    redis_client.flushdb()
    seen.clear()

    first = client.post(f"/api/v1/clusters/{cluster.id}/deployments", json=body, headers=admin.headers)
    assert first.status_code == 202
    # access (cluster + role + username), deployments, events; then, enqueuing the pass, its priority.
    assert seen == ["SELECT", "INSERT", "INSERT", "SELECT"]

    seen.clear()
    checkouts.clear()
    second = client.post(f"/api/v1/clusters/{cluster.id}/deployments", json=body, headers=admin.headers)
    assert second.status_code == 202
    # A pass is pending: nothing after the commit.
    assert seen == ["SELECT", "INSERT", "INSERT"]
    assert len(checkouts) == 1
