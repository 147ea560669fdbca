import marshmallow as ma

from api.clusters.schemas import ResourcesOut, cpu, gpu, ram_gb
from api.extensions import Schema
from api.fields import DependencyRef, ImageRef, Name, StrictFloat, StrictInteger
from shared.deployments.models import STATUS_VALUES

MAX_RUN_SECONDS = 30 * 86400
MAX_BATCH = 1_000


class DeploymentIn(Schema):
    name = Name(required=True)
    image = ImageRef(required=True)
    cpu = cpu(required=True)
    ram_gb = ram_gb(required=True)
    gpu = gpu(required=True)
    priority = StrictInteger(
        load_default=500,
        validate=ma.validate.Range(0, 1000),
        metadata={"description": "0-1000, higher runs first and may preempt lower."},
    )
    depends_on = ma.fields.List(
        ma.fields.UUID(),
        load_default=list,
        metadata={
            "description": "Deployments of this organization that must complete first "
            "(at most MAX_DEPENDENCIES_PER_DEPLOYMENT, 100 by default)."
        },
    )
    max_retries = StrictInteger(load_default=3, validate=ma.validate.Range(0, 10))
    run_seconds = StrictFloat(
        load_default=None,
        allow_none=True,
        validate=ma.validate.Range(min=0, max=MAX_RUN_SECONDS, min_inclusive=False),
        metadata={"description": "If set, the deployment completes by itself this many seconds after it starts."},
    )


class BatchItemIn(DeploymentIn):
    """A single submit's body; `depends_on` may also name an earlier item as "#<index>"."""

    depends_on = ma.fields.List(
        DependencyRef(),
        load_default=list,
        validate=ma.validate.Length(max=100),
        metadata={
            "description": "Deployments of this organization that must complete first, or earlier items of "
            'the batch as "#<index>" (e.g. "#0").'
        },
    )


class BatchIn(Schema):
    deployments = ma.fields.List(
        ma.fields.Nested(BatchItemIn),
        required=True,
        validate=ma.validate.Length(min=1, max=MAX_BATCH),
        metadata={"description": f"1 to {MAX_BATCH:,} deployments, each the body of a single submit."},
    )


class DeploymentOut(Schema):
    id = ma.fields.UUID(required=True)
    organization_id = ma.fields.UUID(required=True)
    cluster_id = ma.fields.UUID(required=True)
    name = ma.fields.String(required=True)
    image = ma.fields.String(required=True)
    resources = ma.fields.Nested(ResourcesOut, required=True)
    priority = ma.fields.Integer(required=True)
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(STATUS_VALUES))
    reason = ma.fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "Why it is where it is, in one sentence; null if nothing to say."},
    )
    depends_on = ma.fields.List(ma.fields.UUID(), required=True)
    attempts = ma.fields.Integer(required=True)
    max_retries = ma.fields.Integer(required=True)
    preemptions = ma.fields.Integer(required=True)
    run_seconds = ma.fields.Float(required=True, allow_none=True)
    created_by = ma.fields.UUID(required=True, allow_none=True)
    created_at = ma.fields.AwareDateTime(required=True, format="iso")
    started_at = ma.fields.AwareDateTime(required=True, allow_none=True, format="iso")
    finished_at = ma.fields.AwareDateTime(required=True, allow_none=True, format="iso")


class DeploymentListQuery(Schema):
    status = ma.fields.String(validate=ma.validate.OneOf(STATUS_VALUES))


class FailIn(Schema):
    reason = ma.fields.String(validate=ma.validate.Length(min=1, max=500), allow_none=True, load_default=None)


class EventOut(Schema):
    at = ma.fields.AwareDateTime(required=True, format="iso")
    type = ma.fields.String(required=True)
    message = ma.fields.String(required=True)
    actor = ma.fields.String(
        required=True, metadata={"description": "Who or what caused it: a username, `scheduler` or `reconciler`."}
    )
