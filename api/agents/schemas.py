import marshmallow as ma

from api.clusters.schemas import ResourcesOut
from api.extensions import NUL_REPLACED, Schema
from api.fields import Name, StrictInteger

# A sync carries at most this many reports: far more runs than one host has, and a bounded amount of work.
MAX_REPORTS = 1000
REPORT_STATES = ("running", "exited", "stopped", "failed")
INT32_MAX = 2**31 - 1  # the columns' integer type
FREE_TEXT = ("logs", "message")
CONTAINER_MAX_LENGTH = 255  # deployments.runtime_container


class AgentTokenIn(Schema):
    name = Name(required=True, metadata={"description": "What the token is for, e.g. the host it runs on."})


class AgentTokenOut(Schema):
    id = ma.fields.UUID(required=True)
    name = ma.fields.String(required=True)
    created_at = ma.fields.AwareDateTime(required=True, format="iso")
    last_used_at = ma.fields.AwareDateTime(required=True, allow_none=True, format="iso")


class AgentTokenCreated(AgentTokenOut):
    token = ma.fields.String(
        required=True, metadata={"description": "The token: shown only here (the server keeps only its hash)."}
    )


class AgentIn(Schema):
    name = Name(required=True, metadata={"description": "The agent's name (by default its host name)."})
    driver = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=64))
    version = ma.fields.String(required=True, validate=ma.validate.Length(max=64))


class ReportIn(Schema):
    id = ma.fields.UUID(required=True, metadata={"description": "The deployment."})
    generation = StrictInteger(required=True, validate=ma.validate.Range(min=1, max=INT32_MAX))
    state = ma.fields.String(required=True, validate=ma.validate.OneOf(REPORT_STATES))
    exit_code = StrictInteger(
        load_default=None,
        allow_none=True,
        validate=ma.validate.Range(-INT32_MAX - 1, INT32_MAX),
        metadata={"description": "With `exited`: the process's exit code (without one, the run counts as failed)."},
    )
    message = ma.fields.String(load_default=None, allow_none=True, metadata={NUL_REPLACED: True})
    at = ma.fields.AwareDateTime(load_default=None, allow_none=True, format="iso")
    container = ma.fields.String(
        load_default=None,
        allow_none=True,
        validate=ma.validate.Length(min=1, max=CONTAINER_MAX_LENGTH),
        metadata={
            "description": "The runtime's id of the run (docker: the container id), shown as `runtime.container` "
            "once a `running` report arrives; null when the runtime has none (process)."
        },
    )
    logs = ma.fields.String(
        load_default=None,
        allow_none=True,
        metadata={
            "description": "With a final report: the run's output (its last 64 KiB are kept; a NUL becomes U+FFFD).",
            NUL_REPLACED: True,
        },
    )


class SyncIn(Schema):
    agent = ma.fields.Nested(AgentIn, required=True)
    deployments = ma.fields.List(
        ma.fields.Nested(ReportIn),
        load_default=list,
        validate=ma.validate.Length(max=MAX_REPORTS),
        metadata={
            "description": f"Every run the agent knows (at most {MAX_REPORTS}). A report for an unknown deployment, "
            "one of another cluster, or a generation that is not current changes nothing."
        },
    )

    @ma.pre_load
    def _refuse_nul(self, data, **kwargs):
        # A process may print a NUL, and PostgreSQL text cannot hold one: a report's output and message keep
        # U+FFFD in its place, rather than the whole sync being refused (the agent would repeat it forever).
        reports = data.get("deployments") if isinstance(data, dict) else None
        if isinstance(reports, list):
            data = {**data, "deployments": [_without_nul(report) for report in reports]}
        return super()._refuse_nul(data, **kwargs)


def _without_nul(report):
    if not isinstance(report, dict):
        return report
    return {
        name: value.replace("\x00", "\ufffd") if name in FREE_TEXT and isinstance(value, str) else value
        for name, value in report.items()
    }


class RunOut(Schema):
    id = ma.fields.UUID(required=True)
    generation = ma.fields.Integer(required=True)
    state = ma.fields.String(required=True, validate=ma.validate.OneOf(("pending", "running")))
    name = ma.fields.String(required=True)
    image = ma.fields.String(required=True)
    command = ma.fields.List(ma.fields.String(), required=True, allow_none=True)
    env = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.String(), required=True)
    resources = ma.fields.Nested(ResourcesOut, required=True)
    grace_seconds = ma.fields.Integer(required=True)


class StopOut(Schema):
    id = ma.fields.UUID(required=True)
    generation = ma.fields.Integer(required=True)
    grace_seconds = ma.fields.Integer(required=True)
    reason = ma.fields.String(required=True, allow_none=True)


class SyncOut(Schema):
    cluster_id = ma.fields.UUID(required=True)
    sync_seconds = ma.fields.Integer(required=True, metadata={"description": "How often to sync."})
    lease_seconds = ma.fields.Integer(required=True, metadata={"description": "A sync holds the cluster this long."})
    fence_seconds = ma.fields.Integer(
        required=True, metadata={"description": "With no successful sync for this long, stop every run."}
    )
    run = ma.fields.List(ma.fields.Nested(RunOut), required=True, metadata={"description": "The whole set to run now."})
    stop = ma.fields.List(ma.fields.Nested(StopOut), required=True, metadata={"description": "The runs to stop."})
