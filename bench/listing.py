"""List endpoints at scale: one cluster holding 100,000 deployments, read through the real app; then the
positions of queued deployments, on clusters with 1,000 and 100,000 of them queued.

Rows are inserted in bulk with SQL (the point is reading them back), then each request is timed
through Flask's test client against the real database: what a client waits for, minus the network.
"""

import json
import os
import secrets
import statistics
import time
import uuid

from sqlalchemy import text

from devtools.scratch import scratch_servers

DEPLOYMENTS = 100_000
QUEUES = (1_000, 100_000)
REPEAT = 30
MIXED_STATUSES = "(ARRAY['queued','running','completed','failed','cancelled'])[1 + (n % 5)]"


def _populate(session, organization_id, cluster_id, user_id, count=DEPLOYMENTS, statuses=MIXED_STATUSES) -> None:
    session.execute(
        text(
            f"""
            INSERT INTO deployments (id, organization_id, cluster_id, name, image, cpu_millis, ram_mb, gpu,
                priority, status, attempts, max_retries, preemptions, resumes_preempted, created_by, created_at,
                version)
            SELECT gen_random_uuid(), :org, :cluster, 'job-' || n, 'ghcr.io/acme/train:1', 100, 100, 0,
                (n * 7919) % 1001, {statuses}, 0, 3, 0, false, :user,
                now() - (n || ' seconds')::interval, 1
            FROM generate_series(1, :count) AS n
            """
        ),
        {"org": organization_id, "cluster": cluster_id, "user": user_id, "count": count},
    )
    session.execute(text("ANALYZE deployments"))
    session.commit()


def _time(client, path, headers) -> list[float]:
    samples = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        response = client.get(path, headers=headers)
        samples.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, response.json
    return samples


def run() -> None:
    with scratch_servers("bench") as (database_url, redis_url, _state):
        os.environ.update(
            DATABASE_URL=database_url, REDIS_URL=redis_url, HV_ENV="test", SECRET_KEY=secrets.token_urlsafe(48)
        )
        from sqlalchemy.orm import Session

        from api import create_app
        from shared.clusters import service as clusters
        from shared.db import db
        from shared.identity import tokens
        from shared.identity.models import User
        from shared.organizations import service as organizations
        from shared.redis import get_redis
        from shared.resources import Resources

        app = create_app()
        with Session(db.engine) as session:
            user = User(username="bench", email="bench@example.com", password_hash="-")
            session.add(user)
            session.commit()
            organization, _, _ = organizations.create(session=session, actor_id=user.id, name="bench")
            cluster = clusters.create(
                session=session,
                organization_id=organization.id,
                actor_id=user.id,
                name="big",
                capacity=Resources.from_api(1_000_000, 1_000_000, 0),
            )
            start = time.perf_counter()
            _populate(session, organization.id, cluster.id, user.id)
            print(f"inserted {DEPLOYMENTS:,} deployments in {time.perf_counter() - start:.1f} s")
            queues = []
            for queued in QUEUES:
                queue = clusters.create(
                    session=session,
                    organization_id=organization.id,
                    name=f"queue-{queued}",
                    capacity=Resources.from_api(1_000_000, 1_000_000, 0),
                )
                _populate(session, organization.id, queue.id, user.id, count=queued, statuses="'queued'")
                queues.append((queued, queue.id))
            user_id, cluster_id, organization_id = user.id, cluster.id, organization.id
        with app.app_context():
            lifetimes = tokens.Lifetimes.from_settings(app.extensions["settings"])
            pair = tokens.start_session(get_redis(redis_url), str(user_id), lifetimes)
            headers = {"Authorization": f"Bearer {pair.access_token}"}
        client = app.test_client()
        base = f"/api/v1/clusters/{cluster_id}/deployments"
        some_id = json.loads(client.get(base + "?page_size=1", headers=headers).data)[0]["id"]
        cases = [
            ("first page (100), scheduling order", base),
            ("page 500 of 1,000", base + "?page=500&page_size=100"),
            ("status=queued, first page", base + "?status=queued"),
            ("status=running, page 100", base + "?status=running&page=100"),
            ("one deployment", f"/api/v1/deployments/{some_id}"),
            ("cluster with counts by status", f"/api/v1/clusters/{cluster_id}"),
            ("missing deployment (404)", f"/api/v1/deployments/{uuid.uuid4()}"),
        ]
        print(
            f"{'GET, ' + format(DEPLOYMENTS, ',') + ' deployments in the cluster':<44}{'median ms':>10}{'p95 ms':>10}"
        )
        for label, path in cases:
            samples = _time(client, path, headers) if "404" not in label else _time_404(client, path, headers)
            p95 = statistics.quantiles(samples, n=20)[-1]
            print(f"{label:<44}{statistics.median(samples):>10.1f}{p95:>10.1f}")
        for queued, queue_id in queues:
            _time_queue(client, headers, queued, queue_id, organization_id)


def _time_queue(client, headers, queued, cluster_id, organization_id) -> None:
    """Lists of a cluster whose deployments are all queued: every one shown has a position to compute."""
    base = f"/api/v1/clusters/{cluster_id}/deployments"
    last_page = max(1, queued // 100)
    last = json.loads(client.get(f"{base}?page={last_page}&page_size=100", headers=headers).data)[-1]
    cases = [
        ("first page (100)", base),
        (f"page {last_page} of {last_page} (100)", f"{base}?page={last_page}&page_size=100"),
        ("status=queued, 1,000 per page", f"{base}?status=queued&page_size=1000"),
        ("the last one in the queue", f"/api/v1/deployments/{last['id']}"),
        ("organization's list, newest first (100)", f"/api/v1/organizations/{organization_id}/deployments"),
    ]
    print(f"{'GET, ' + format(queued, ',') + ' queued in the cluster':<44}{'median ms':>10}{'p95 ms':>10}")
    for label, path in cases:
        if client.get(path, headers=headers).status_code == 404:
            print(f"{label:<44}{'n/a':>10}")  # a checkout without the route
            continue
        samples = _time(client, path, headers)
        p95 = statistics.quantiles(samples, n=20)[-1]
        print(f"{label:<44}{statistics.median(samples):>10.1f}{p95:>10.1f}")


def _time_404(client, path, headers) -> list[float]:
    samples = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        assert client.get(path, headers=headers).status_code == 404
        samples.append((time.perf_counter() - start) * 1000)
    return samples
