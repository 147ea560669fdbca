"""One scheduling pass applied to PostgreSQL (shared/scheduling/passes.py `apply_pass`), in process.

A cluster holds 2,000 queued deployments that all fit: one pass starts them all. Then a second pass
finds nothing to do over the 2,000 now running. Printed: wall ms and SQL statements of each
(an executemany counts once). Target (issue 11): starting 2,000 in <= 300 ms.
"""

from __future__ import annotations

import os
import secrets
import time

from sqlalchemy import event, text

from devtools.scratch import scratch_servers

QUEUED = 2_000
REPEAT = 3


def _populate(session, organization_id, cluster_id, user_id) -> None:
    session.execute(
        text(
            """
            INSERT INTO deployments (id, organization_id, cluster_id, name, image, cpu_millis, ram_mb, gpu,
                priority, status, reason, attempts, max_retries, preemptions, resumes_preempted, created_by,
                created_at, version)
            SELECT gen_random_uuid(), :org, :cluster, 'job-' || n, 'ghcr.io/acme/train:1', 100, 100, 0,
                (n * 7919) % 1001, 'queued', 'Waiting for the scheduler''s next pass.', 0, 3, 0, false, :user,
                now() - (n || ' milliseconds')::interval, 1
            FROM generate_series(1, :count) AS n
            """
        ),
        {"org": organization_id, "cluster": cluster_id, "user": user_id, "count": QUEUED},
    )
    session.execute(text("ANALYZE deployments"))
    session.commit()


def run() -> None:
    with scratch_servers("bench-pass") as (database_url, redis_url, _state):
        os.environ.update(
            DATABASE_URL=database_url, REDIS_URL=redis_url, HV_ENV="test", SECRET_KEY=secrets.token_urlsafe(48)
        )
        from sqlalchemy.orm import Session

        from shared.clusters import service as clusters
        from shared.config import get_settings
        from shared.db import db
        from shared.identity.models import User
        from shared.organizations import service as organizations
        from shared.resources import Resources
        from shared.scheduling.passes import apply_pass

        db.configure(get_settings().database_url)
        statements = [0]

        @event.listens_for(db.engine, "before_cursor_execute")
        def _count(*_args):
            statements[0] += 1

        with Session(db.engine) as session:
            user = User(username="bench", email="bench@example.com", password_hash="-")
            session.add(user)
            session.commit()
            organization, _, _ = organizations.create(session=session, actor_id=user.id, name="bench")
            user_id, organization_id = user.id, organization.id
        print(f"{'pass':<44}{'ms':>9}{'statements':>12}{'started':>9}")
        for attempt in range(REPEAT):
            with Session(db.engine) as session:
                cluster = clusters.create(
                    session=session,
                    organization_id=organization_id,
                    actor_id=user_id,
                    name=f"big-{attempt}",
                    capacity=Resources.from_api(100_000, 100_000, 0),
                )
                cluster_id = cluster.id
                _populate(session, organization_id, cluster_id, user_id)
            for label in (f"start {QUEUED:,} queued", f"empty pass over {QUEUED:,} running"):
                with Session(db.engine) as session:
                    statements[0] = 0
                    start = time.perf_counter()
                    outcome = apply_pass(session, cluster_id)
                    elapsed = (time.perf_counter() - start) * 1000
                row = f"{label} (run {attempt + 1})"
                print(f"{row:<44}{elapsed:>9.1f}{statements[0]:>12,}{len(outcome.started):>9,}")
        print(f"target: starting {QUEUED:,} in one pass <= 300 ms")
        db.engine.dispose()
