"""What one submission costs the database: one transaction, one query for access, the inserts, and the
queue's priority only when this submission is the one that enqueues the pass."""

import pytest
from sqlalchemy import event

from shared.db import db
from tests.conftest import forget_pass_requests


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


def test_a_submission_is_one_transaction_of_four_statements(client, org, fleet, statements, redis_client):
    organization, admin = org
    cluster = fleet.cluster(organization, cpu=8, ram_gb=32, gpu=0)
    body = {"name": "train", "image": "ghcr.io/acme/train:1", "cpu": 1, "ram_gb": 1, "gpu": 0}
    seen, checkouts = statements
    forget_pass_requests(redis_client)
    seen.clear()

    first = client.post(f"/api/v1/clusters/{cluster.id}/deployments", json=body, headers=admin.headers)
    assert first.status_code == 202
    # access (cluster + role + username), deployments (WITH: the insert, counting what is queued ahead for its
    # position), events, the queue quota; then, enqueuing the pass, its priority.
    assert seen == ["SELECT", "WITH", "INSERT", "UPDATE", "SELECT"]

    seen.clear()
    checkouts.clear()
    second = client.post(f"/api/v1/clusters/{cluster.id}/deployments", json=body, headers=admin.headers)
    assert second.status_code == 202
    # A pass is pending: nothing after the commit.
    assert seen == ["SELECT", "WITH", "INSERT", "UPDATE"]
    assert len(checkouts) == 1
