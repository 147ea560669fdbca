"""Agent tokens (admins) and the agents' sync (agent tokens only): RUNTIME.md."""

import functools

from flask import request
from flask.views import MethodView

from api.access import AGENT, current_agent_token, current_user_id, member
from api.agents.schemas import AgentTokenCreated, AgentTokenIn, AgentTokenOut, SyncIn, SyncOut
from api.extensions import Blueprint, ErrorSchema
from shared.agents import service as agents
from shared.db import db
from shared.organizations.roles import Role

blp = Blueprint("agents", __name__, url_prefix="/api/v1", description="Agents: their tokens and their sync.")

# A sync may carry the final output (64 KiB each) of many runs at once: more than other requests' 1 MiB.
SYNC_MAX_BYTES = 16 * 1024 * 1024


def _token_out(row) -> dict:
    return {"id": row.id, "name": row.name, "created_at": row.created_at, "last_used_at": row.last_used_at}


@blp.route("/clusters/<uuid:cluster_id>/agent-tokens")
class ClusterAgentTokens(MethodView):
    @blp.access(member(Role.ADMIN, of="cluster_id"))
    @blp.arguments(AgentTokenIn)
    @blp.response(201, AgentTokenCreated)
    def post(self, body, cluster_id):
        """Create an agent token for the cluster; the token is shown only in this answer."""
        row, token = agents.create_token(
            session=db.session, cluster_id=cluster_id, name=body["name"], actor_id=current_user_id()
        )
        return {**_token_out(row), "token": token}

    @blp.access(member(Role.ADMIN, of="cluster_id"))
    @blp.response(200, AgentTokenOut(many=True))
    def get(self, cluster_id):
        """The cluster's agent tokens, oldest first, with when each was last used (never the token)."""
        return [_token_out(row) for row in agents.list_tokens(session=db.session, cluster_id=cluster_id)]


@blp.route("/clusters/<uuid:cluster_id>/agent-tokens/<uuid:token_id>")
class ClusterAgentToken(MethodView):
    @blp.access(member(Role.ADMIN, of="cluster_id"))
    @blp.response(204)
    def delete(self, cluster_id, token_id):
        """Revoke an agent token: its next call is refused (401)."""
        agents.revoke_token(session=db.session, cluster_id=cluster_id, token_id=token_id, actor_id=current_user_id())


def _allow_larger_body(view):
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        request.max_content_length = SYNC_MAX_BYTES
        return view(*args, **kwargs)

    return wrapper


@blp.route("/agent/sync")
class AgentSync(MethodView):
    @blp.access(AGENT)
    @_allow_larger_body
    @blp.arguments(SyncIn)
    @blp.response(200, SyncOut)
    @blp.alt_response(
        409,
        schema=ErrorSchema,
        description="Another agent holds the cluster's lease (the message and `errors` say which, until when; "
        "`Retry-After` when it lapses), or the cluster's runtime is not `agent`. Stand by and retry.",
    )
    def post(self, body):
        """Report every run the agent knows; get the whole set it must run and the runs it must stop."""
        agent = agents.AgentInfo(**body["agent"])
        reports = [
            agents.Report(
                deployment_id=item["id"],
                generation=item["generation"],
                state=item["state"],
                at=item["at"],
                exit_code=item["exit_code"],
                message=item["message"],
                container=item["container"],
                logs=item["logs"],
            )
            for item in body["deployments"]
        ]
        return agents.sync(session=db.session, token=current_agent_token(), agent=agent, reports=reports)
