import marshmallow as ma

from api.clusters.schemas import ResourcesOut, cpu, gpu, ram_gb
from api.extensions import Schema
from api.fields import DependencyRef, ImageRef, Name, Pattern, StrictFloat, StrictInteger
from shared.deployments.models import DEFAULT_GRACE_SECONDS, STATUS_VALUES, RuntimeState

MAX_RUN_SECONDS = 30 * 86400
MAX_BATCH = 1_000
MAX_COMMAND_ITEMS = 64
MAX_ARGUMENT_LENGTH = 4096
MAX_ENV_ENTRIES = 64
MAX_ENV_BYTES = 32 * 1024
MAX_GRACE_SECONDS = 3600
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
ENV_DESCRIPTION = (
    f"Variables added to the run's environment: at most {MAX_ENV_ENTRIES}, {MAX_ENV_BYTES // 1024} KiB in all "
    "(names and values, UTF-8), names `[A-Za-z_][A-Za-z0-9_]*`. **Not a secret store**: every member of the "
    "organization reads them, and the agent's host sees them."
)


def _env_within_bounds(env: dict) -> None:
    if len(env) > MAX_ENV_ENTRIES:
        raise ma.ValidationError(f"{len(env)} variables; at most {MAX_ENV_ENTRIES}.")
    size = sum(len(name.encode()) + len(value.encode()) for name, value in env.items())
    if size > MAX_ENV_BYTES:
        raise ma.ValidationError(f"{size} bytes of names and values; at most {MAX_ENV_BYTES // 1024} KiB.")


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
        metadata={
            "description": "If set, the deployment completes by itself this many seconds after it starts "
            "(simulated clusters only: refused with 422 on an agent cluster)."
        },
    )
    command = ma.fields.List(
        ma.fields.String(validate=ma.validate.Length(max=MAX_ARGUMENT_LENGTH)),
        load_default=None,
        allow_none=True,
        validate=ma.validate.Length(min=1, max=MAX_COMMAND_ITEMS),
        metadata={"description": f"argv of the run (no shell), 1-{MAX_COMMAND_ITEMS} items; null: the image's own."},
    )
    env = ma.fields.Dict(
        keys=ma.fields.String(validate=Pattern(ENV_NAME_PATTERN, error="Not a variable name: [A-Za-z_][A-Za-z0-9_]*.")),
        values=ma.fields.String(validate=ma.validate.Length(max=MAX_ENV_BYTES)),
        load_default=dict,
        validate=_env_within_bounds,
        metadata={"description": ENV_DESCRIPTION, "maxProperties": MAX_ENV_ENTRIES},
    )
    grace_seconds = StrictInteger(
        load_default=DEFAULT_GRACE_SECONDS,
        validate=ma.validate.Range(0, MAX_GRACE_SECONDS),
        metadata={"description": "How long a stop waits after SIGTERM before SIGKILL (0-3600 s)."},
    )


class RuntimeOut(Schema):
    state = ma.fields.String(
        required=True,
        validate=ma.validate.OneOf([state.value for state in RuntimeState]),
        metadata={
            "description": "`pending` (admitted, no agent has started it yet), `running` (an agent reports it "
            "running), `stopping` (preempted or cancelled; the agent is stopping it); the last one once it ended."
        },
    )
    agent = ma.fields.String(required=True, allow_none=True, metadata={"description": "The agent running it."})
    container = ma.fields.String(
        required=True,
        allow_none=True,
        metadata={
            "description": "The run's container id (docker driver), as its agent reported it; null for a process."
        },
    )
    started_at = ma.fields.AwareDateTime(required=True, allow_none=True, format="iso")
    exit_code = ma.fields.Integer(required=True, allow_none=True)
    message = ma.fields.String(required=True, allow_none=True)


class BatchItemIn(DeploymentIn):
    """A single submit's body; `depends_on` may also name an earlier item as "#<index>"."""

    depends_on = ma.fields.List(
        DependencyRef(),
        load_default=list,
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
        metadata={
            "description": "Why it is where it is, in one sentence; null if nothing to say. While running: since "
            "when and, where known (run_seconds), when it completes."
        },
    )
    position = ma.fields.Integer(
        required=True,
        allow_none=True,
        metadata={
            "description": "While queued: its 1-based place in its cluster's scheduling order (priority high to "
            "low, then oldest first); null otherwise."
        },
    )
    depends_on = ma.fields.List(ma.fields.UUID(), required=True)
    attempts = ma.fields.Integer(required=True)
    max_retries = ma.fields.Integer(required=True)
    preemptions = ma.fields.Integer(required=True)
    run_seconds = ma.fields.Float(required=True, allow_none=True)
    command = ma.fields.List(ma.fields.String(), required=True, allow_none=True)
    env = ma.fields.Dict(
        keys=ma.fields.String(), values=ma.fields.String(), required=True, metadata={"description": ENV_DESCRIPTION}
    )
    grace_seconds = ma.fields.Integer(required=True)
    generation = ma.fields.Integer(
        required=True, metadata={"description": "+1 each time it is started: names one run (0: never started)."}
    )
    runtime = ma.fields.Nested(
        RuntimeOut,
        required=True,
        allow_none=True,
        metadata={
            "description": "Its run on an agent cluster (the last one, once ended); null on simulated clusters "
            "and before its first start."
        },
    )
    created_by = ma.fields.UUID(required=True, allow_none=True)
    created_at = ma.fields.AwareDateTime(required=True, format="iso")
    started_at = ma.fields.AwareDateTime(required=True, allow_none=True, format="iso")
    finished_at = ma.fields.AwareDateTime(required=True, allow_none=True, format="iso")


class DeploymentListQuery(Schema):
    status = ma.fields.String(validate=ma.validate.OneOf(STATUS_VALUES))


class OrganizationDeploymentsQuery(DeploymentListQuery):
    cluster_id = ma.fields.UUID(metadata={"description": "Only this cluster's."})
    created_by = ma.fields.UUID(metadata={"description": "Only those submitted by this user."})
    name = ma.fields.String(
        validate=ma.validate.Length(min=1, max=128),
        metadata={"description": "Only those whose name contains this (case-insensitive)."},
    )


class VictimOut(Schema):
    id = ma.fields.UUID(required=True)
    name = ma.fields.String(required=True)
    priority = ma.fields.Integer(required=True)


class DryRunOut(Schema):
    outcome = ma.fields.String(
        required=True,
        validate=ma.validate.OneOf(["start", "preempt", "wait", "reject"]),
        metadata={
            "description": "What a pass would do with it now: `start` (it fits), `preempt` (it starts once "
            "`victims` are preempted; on an agent cluster they are stopped first), `wait` (it stays queued: "
            "`reason` says why), `reject` (a submit would refuse it, or the pass would fail it: `reason` says why)."
        },
    )
    victims = ma.fields.List(
        ma.fields.Nested(VictimOut),
        required=True,
        metadata={"description": "The running deployments it would preempt (a minimal set); empty otherwise."},
    )
    position = ma.fields.Integer(
        required=True,
        allow_none=True,
        metadata={"description": "With `wait`: its place in the cluster's scheduling order after that pass."},
    )
    reason = ma.fields.String(required=True, metadata={"description": "Why, in one sentence."})


class FailIn(Schema):
    reason = ma.fields.String(validate=ma.validate.Length(min=1, max=500), allow_none=True, load_default=None)


class EventOut(Schema):
    at = ma.fields.AwareDateTime(required=True, format="iso")
    type = ma.fields.String(required=True)
    message = ma.fields.String(required=True)
    actor = ma.fields.String(
        required=True, metadata={"description": "Who or what caused it: a username, `scheduler` or `reconciler`."}
    )


class LogsOut(Schema):
    generation = ma.fields.Integer(required=True, metadata={"description": "The run these logs are from."})
    logs = ma.fields.String(
        required=True, metadata={"description": "The last 64 KiB of its output an agent sent; empty when none."}
    )
    truncated = ma.fields.Boolean(
        required=True, metadata={"description": "Earlier output was dropped (the logs are a full 64 KiB)."}
    )
