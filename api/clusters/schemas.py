import marshmallow as ma

from api.extensions import Schema
from api.fields import Name, Quantity
from shared.clusters import events
from shared.clusters.models import RUNTIMES, SIMULATED
from shared.resources import CPU_SCALE, RAM_SCALE

MAX_CPU = 1_000_000  # cores
MAX_RAM_GB = 100_000_000
MAX_GPU = 1_000_000


def cpu(**kwargs):
    return Quantity(scale=CPU_SCALE, maximum=MAX_CPU, metadata={"description": "CPU cores (<= 3 decimals)."}, **kwargs)


def ram_gb(**kwargs):
    return Quantity(
        scale=RAM_SCALE, maximum=MAX_RAM_GB, metadata={"description": "RAM in GB (<= 3 decimals)."}, **kwargs
    )


def gpu(**kwargs):
    return Quantity(scale=1, maximum=MAX_GPU, integer=True, metadata={"description": "Whole GPUs."}, **kwargs)


RUNTIME_DESCRIPTION = (
    "What runs its deployments: `simulated` (nothing: run_seconds and the complete / fail endpoints end them) "
    "or `agent` (an agent on the cluster's host runs them; see RUNTIME.md)."
)


def runtime(**kwargs):
    return ma.fields.String(
        validate=ma.validate.OneOf(RUNTIMES), metadata={"description": RUNTIME_DESCRIPTION}, **kwargs
    )


class ClusterIn(Schema):
    name = Name(required=True)
    cpu = cpu(required=True)
    ram_gb = ram_gb(required=True)
    gpu = gpu(required=True)
    runtime = runtime(load_default=SIMULATED)


class ClusterPatch(Schema):
    name = Name()
    cpu = cpu()
    ram_gb = ram_gb()
    gpu = gpu()
    runtime = runtime()


class ResourcesOut(Schema):
    # Raw: whole numbers stay integers in the JSON (4, not 4.0); the value is already exact.
    cpu = ma.fields.Raw(required=True, metadata={"type": "number"})
    ram_gb = ma.fields.Raw(required=True, metadata={"type": "number"})
    gpu = ma.fields.Integer(required=True)


class DeploymentCountsOut(Schema):
    queued = ma.fields.Integer(required=True)
    running = ma.fields.Integer(required=True)
    completed = ma.fields.Integer(required=True)
    failed = ma.fields.Integer(required=True)
    cancelled = ma.fields.Integer(required=True)


class AgentOut(Schema):
    name = ma.fields.String(required=True)
    driver = ma.fields.String(required=True)
    version = ma.fields.String(required=True)
    last_seen_at = ma.fields.AwareDateTime(required=True, format="iso", metadata={"description": "Its last sync."})
    live = ma.fields.Boolean(
        required=True, metadata={"description": "Its last sync is younger than lease_seconds (AGENT_LEASE_SECONDS)."}
    )


class ClusterOut(Schema):
    id = ma.fields.UUID(required=True)
    organization_id = ma.fields.UUID(required=True)
    name = ma.fields.String(required=True)
    capacity = ma.fields.Nested(ResourcesOut, required=True)
    allocated = ma.fields.Nested(ResourcesOut, required=True)
    available = ma.fields.Nested(ResourcesOut, required=True)
    deployments = ma.fields.Nested(DeploymentCountsOut, required=True, metadata={"description": "Counts by status."})
    runtime = runtime(required=True)
    agent = ma.fields.Nested(
        AgentOut,
        required=True,
        allow_none=True,
        metadata={
            "description": "The agent holding (or last holding) an agent cluster; null if none ever synced, "
            "and on simulated clusters."
        },
    )
    created_at = ma.fields.AwareDateTime(required=True, format="iso")


class ClusterEventOut(Schema):
    at = ma.fields.AwareDateTime(required=True, format="iso")
    type = ma.fields.String(required=True, metadata={"description": "One of " + ", ".join(events.TYPES) + "."})
    message = ma.fields.String(required=True, metadata={"description": "What happened, in one sentence."})
    actor = ma.fields.String(
        required=True,
        metadata={"description": "Who or what caused it: a username, `reconciler`, or `agent <name>`."},
    )
