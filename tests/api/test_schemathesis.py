"""Bad input never hurts: schemathesis drives every operation of /openapi.json in-process, as a logged-in
admin with a real organization, cluster and deployment, with valid and invalid data and a fixed seed.
No 5xx; every response has a documented status and conforms to its documented schema; invalid data is
refused and valid data accepted, so the spec and the validation cannot drift apart."""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi import checks as openapi_checks

SEED = 20261122
CHECKS = [
    checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.negative_data_rejection,
    openapi_checks.positive_data_acceptance,
]


@pytest.fixture(scope="module")
def world(app, servers, password_hash):
    """One organization with a cluster running a deployment; ids are fed to schemathesis as path parameters.
    Submissions go to a second cluster, as large as the schema allows and never resized by a generated
    PATCH, so that every valid resource request fits in it."""
    from sqlalchemy.orm import Session

    from api.clusters.schemas import MAX_CPU, MAX_GPU, MAX_RAM_GB
    from shared.db import db
    from tests.conftest import Auth, Fleet

    with Session(db.engine, expire_on_commit=False) as session:
        auth = Auth(app, session, password_hash)
        organization, admin = auth.org("fuzzed")
        fleet = Fleet(session)
        cluster = fleet.cluster(organization, name="fuzz", cpu=64, ram_gb=256, gpu=8)
        roomy = fleet.cluster(organization, name="roomy", cpu=MAX_CPU, ram_gb=MAX_RAM_GB, gpu=MAX_GPU)
        deployment = fleet.start(fleet.deployment(cluster, admin))
        from shared.agents import service as agents

        token_row, _ = agents.create_token(session=session, cluster_id=cluster.id, name="fuzzed", actor_id=admin.id)
        agent_cluster = fleet.cluster(organization, name="agents", runtime="agent")
        _, agent_token = agents.create_token(
            session=session, cluster_id=agent_cluster.id, name="host", actor_id=admin.id
        )
        return {
            "token_id": token_row.id,
            "agent_token": agent_token,
            "admin": admin,
            "org_id": organization.id,
            "cluster_id": cluster.id,
            "roomy_cluster_id": roomy.id,
            "deployment_id": deployment.id,
            "user_id": admin.id,
        }


SUBMIT = "POST /api/v1/clusters/{cluster_id}/deployments"
SYNC = "POST /api/v1/agent/sync"
BATCH = "POST /api/v1/clusters/{cluster_id}/deployments/batch"
CASES_RUN = []


@pytest.fixture(scope="module", autouse=True)
def report_cases():
    """Report how many generated requests ran (a figure worth seeing in every `make test`)."""
    import time

    from tests.conftest import FIGURES

    started = time.monotonic()
    yield
    operations = len({label for label, _ in CASES_RUN})
    negative = sum(1 for _, mode in CASES_RUN if mode is not None and mode.is_negative)
    FIGURES.append(
        f"schemathesis: {len(CASES_RUN)} generated requests ({negative} with invalid data) over "
        f"{operations} operations in {time.monotonic() - started:.1f} s"
    )


@pytest.fixture(scope="module")
def schema(app):
    config = SchemathesisConfig.from_dict({"seed": SEED})
    return schemathesis.openapi.from_wsgi("/openapi.json", app, config=config)


def _fresh_token(app, user_id):
    from shared.identity import tokens
    from shared.redis import get_redis

    settings = app.extensions["settings"]
    with app.app_context():
        return tokens.start_session(
            get_redis(settings.redis_url), str(user_id), tokens.Lifetimes.from_settings(settings)
        ).access_token


lazy_schema = schemathesis.pytest.from_fixture("schema")


@lazy_schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_every_operation_survives_generated_input(case, app, world):
    components = case.meta.components if case.meta else {}

    def positive(location):
        info = components.get(location)
        return info is None or not info.mode.is_negative

    # Aim valid cases at real objects (random ids would only ever meet 404s); leave invalid ones alone.
    if case.path_parameters and positive("path"):
        for name in ("org_id", "cluster_id", "deployment_id", "user_id", "token_id"):
            if name in case.path_parameters:
                case.path_parameters[name] = str(world[name])
        if case.operation.label in (SUBMIT, BATCH):
            case.path_parameters["cluster_id"] = str(world["roomy_cluster_id"])
    if positive("body") and isinstance(case.body, dict):
        # Rules no schema can state: valid data may depend only on deployments that exist (in a batch, also on
        # earlier items); variable names have a pattern OpenAPI 3.0 cannot state for an object's keys, and all
        # of them together a size limit (32 KiB).
        submissions = case.body.get("deployments") if case.operation.label == BATCH else [case.body]
        for submission in submissions if isinstance(submissions, list) else ():
            if not isinstance(submission, dict):
                continue
            if submission.get("depends_on"):
                submission["depends_on"] = [str(world["deployment_id"])]
            if isinstance(submission.get("env"), dict):
                submission["env"] = {f"V{i}": value[:256] for i, value in enumerate(submission["env"].values())}
    headers = None
    if positive("header"):
        # A fresh session per case: a generated logout (or logout-all) ends only sessions started before it.
        headers = {"Authorization": f"Bearer {_fresh_token(app, world['user_id'])}"}
        if case.operation.label == SYNC:
            headers = {"Authorization": f"Bearer {world['agent_token']}"}
    CASES_RUN.append((case.operation.label, case.meta.generation.mode if case.meta else None))
    case.call_and_validate(headers=headers, checks=CHECKS)
