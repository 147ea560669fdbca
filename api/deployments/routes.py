"""Deployments (API.md, "Deployments")."""

from flask.views import MethodView
from sqlalchemy import select

from api.access import current_access, current_user_id, member
from api.deployments.schemas import (
    BatchIn,
    DeploymentIn,
    DeploymentListQuery,
    DeploymentOut,
    DryRunOut,
    EventOut,
    FailIn,
    LogsOut,
    OrganizationDeploymentsQuery,
)
from api.extensions import Blueprint, ErrorSchema
from api.pagination import paginate
from shared.agents import service as agents
from shared.clusters.models import AGENT, Cluster
from shared.db import db
from shared.deployments import service as deployments
from shared.deployments.models import Status
from shared.organizations import service as organizations
from shared.organizations.roles import Role
from shared.resources import Resources
from shared.scheduling.dry_run import dry_run

blp = Blueprint("deployments", __name__, url_prefix="/api/v1", description="Deployments and their history.")


def runtime_out(deployment) -> dict | None:
    if deployment.runtime_state is None:
        return None
    return {
        "state": deployment.runtime_state,
        "agent": deployment.runtime_agent,
        "container": deployment.runtime_container,
        "started_at": deployment.runtime_started_at,
        "exit_code": deployment.runtime_exit_code,
        "message": deployment.runtime_message,
    }


def deployments_out(items) -> list[dict]:
    dependencies = deployments.dependencies_of(session=db.session, deployment_ids=[d.id for d in items])
    agent_clusters = {
        cluster_id
        for cluster_id, runtime in db.session.execute(
            select(Cluster.id, Cluster.runtime).where(Cluster.id.in_({d.cluster_id for d in items}))
        )
        if runtime == AGENT
    }
    positions = deployments.positions_of(
        session=db.session, deployment_ids=[d.id for d in items if d.status == Status.QUEUED.value]
    )
    return [
        {
            "id": d.id,
            "organization_id": d.organization_id,
            "cluster_id": d.cluster_id,
            "name": d.name,
            "image": d.image,
            "resources": d.resources.to_api(),
            "priority": d.priority,
            "status": d.status,
            "reason": (
                deployments.running_reason(d, on_agent=d.cluster_id in agent_clusters)
                if d.status == Status.RUNNING.value
                else d.reason
            ),
            "position": positions.get(d.id),
            "depends_on": dependencies[d.id],
            "attempts": d.attempts,
            "max_retries": d.max_retries,
            "preemptions": d.preemptions,
            "run_seconds": d.run_seconds,
            "command": d.command,
            "env": d.env or {},
            "grace_seconds": d.grace_seconds,
            "generation": d.generation,
            "runtime": runtime_out(d) if d.cluster_id in agent_clusters else None,
            "created_by": d.created_by,
            "created_at": d.created_at,
            "started_at": d.started_at,
            "finished_at": d.finished_at,
        }
        for d in items
    ]


def _submission(body: dict) -> deployments.Submission:
    return deployments.Submission(
        name=body["name"],
        image=body["image"],
        resources=Resources(body["cpu"], body["ram_gb"], body["gpu"]),
        priority=body["priority"],
        depends_on=body["depends_on"],
        max_retries=body["max_retries"],
        run_seconds=body["run_seconds"],
        command=body["command"],
        env=body["env"],
        grace_seconds=body["grace_seconds"],
    )


def _submit(bodies: list[dict], batch: bool) -> list[dict]:
    # The access rule's one query already found the cluster, the caller's role and username.
    access = current_access()
    return deployments.submit_many(
        session=db.session,
        cluster=access.cluster,
        actor_id=current_user_id(),
        actor_name=access.username,
        submissions=[_submission(body) for body in bodies],
        batch=batch,
    )


def _actor_name() -> str:
    return organizations.username_of(session=db.session, user_id=current_user_id())


TRANSITION_CONFLICT = "The deployment's status does not allow this (the message says its current status)."
BY_PROCESS_CONFLICT = (
    "The deployment's status does not allow this, or it runs on an agent cluster, where its process's exit "
    "decides how it ends."
)


@blp.route("/clusters/<uuid:cluster_id>/deployments")
class ClusterDeployments(MethodView):
    @blp.access(member(Role.DEVELOPER, of="cluster_id"))
    @blp.arguments(DeploymentIn())
    @blp.response(202, DeploymentOut)
    @blp.alt_response(
        422,
        schema=ErrorSchema,
        description="Invalid fields; or it could never fit the cluster, a dependency is unknown, or it sets "
        "run_seconds on an agent cluster (the message says which).",
    )
    @blp.alt_response(
        429,
        schema=ErrorSchema,
        description="The cluster's or the organization's queue is full (MAX_QUEUED_PER_CLUSTER, "
        "MAX_QUEUED_PER_ORGANIZATION; the message names the limit): retry after `Retry-After` seconds.",
    )
    def post(self, body, cluster_id):
        """Submit a deployment; it is queued and a scheduling pass is on its way (poll it)."""
        return _submit([body], batch=False)[0]

    @blp.access(member(Role.VIEWER, of="cluster_id"))
    @blp.arguments(DeploymentListQuery, location="query")
    @blp.response(200, DeploymentOut(many=True))
    @blp.paginate()
    def get(self, query, cluster_id, pagination_parameters):
        """The cluster's deployments in scheduling order: priority high to low, then oldest first."""
        status = Status(query["status"]) if "status" in query else None
        page, total = deployments.list_for_cluster(
            session=db.session, cluster_id=cluster_id, status=status, **paginate(pagination_parameters)
        )
        pagination_parameters.item_count = total
        return deployments_out(page)


@blp.route("/clusters/<uuid:cluster_id>/deployments/batch")
class ClusterDeploymentBatch(MethodView):
    @blp.access(member(Role.DEVELOPER, of="cluster_id"))
    @blp.arguments(BatchIn())
    @blp.response(202, DeploymentOut(many=True))
    def post(self, body, cluster_id):
        """Submit up to 1,000 deployments at once, all or nothing; one scheduling pass is requested.

        Each item is the body of a single submit, validated the same way; `depends_on` may name earlier
        items as "#<index>". If any item is invalid nothing is stored, and the 422's `errors` name each
        bad item by its index (`errors.json.deployments.<index>`). The answer lists them in the order given.
        """
        return _submit(body["deployments"], batch=True)


@blp.route("/clusters/<uuid:cluster_id>/deployments/dry-run")
class ClusterDeploymentDryRun(MethodView):
    @blp.access(member(Role.DEVELOPER, of="cluster_id"))
    @blp.arguments(DeploymentIn())
    @blp.response(200, DryRunOut)
    @blp.alt_response(422, schema=ErrorSchema, description="A malformed body: the same 422 a submit would give.")
    def post(self, body, cluster_id):
        """What a scheduling pass would do with this submission now; nothing is stored, no pass is requested.

        The body is a single submit's. Computed by the scheduler's own algorithm on the cluster's current
        state, with the submission as its youngest queued deployment. `reject` when a submit would refuse it
        (too large for the cluster, an unknown dependency, too many dependencies, run_seconds on an agent
        cluster, a full queue) or the next pass would fail it (a dependency that ended failed or cancelled).
        """
        forecast = dry_run(session=db.session, cluster=current_access().cluster, submission=_submission(body))
        return {
            "outcome": forecast.outcome,
            "victims": forecast.victims,
            "position": forecast.position,
            "reason": forecast.reason,
        }


@blp.route("/organizations/<uuid:org_id>/deployments")
class OrganizationDeployments(MethodView):
    @blp.access(member(Role.VIEWER))
    @blp.arguments(OrganizationDeploymentsQuery, location="query")
    @blp.response(200, DeploymentOut(many=True))
    @blp.paginate()
    def get(self, query, org_id, pagination_parameters):
        """The organization's deployments on all its clusters, newest first; filter by status, cluster, submitter
        or name (a case-insensitive substring)."""
        page, total = deployments.list_for_organization(
            session=db.session,
            organization_id=org_id,
            status=Status(query["status"]) if "status" in query else None,
            cluster_id=query.get("cluster_id"),
            created_by=query.get("created_by"),
            name=query.get("name"),
            **paginate(pagination_parameters),
        )
        pagination_parameters.item_count = total
        return deployments_out(page)


@blp.route("/deployments/<uuid:deployment_id>")
class DeploymentDetail(MethodView):
    @blp.access(member(Role.VIEWER, of="deployment_id"))
    @blp.response(200, DeploymentOut)
    def get(self, deployment_id):
        """One deployment: its status and, in `reason`, why it is there."""
        return deployments_out([deployments.get_or_404(session=db.session, deployment_id=deployment_id)])[0]


@blp.route("/deployments/<uuid:deployment_id>/events")
class DeploymentEvents(MethodView):
    @blp.access(member(Role.VIEWER, of="deployment_id"))
    @blp.response(200, EventOut(many=True))
    @blp.paginate()
    def get(self, deployment_id, pagination_parameters):
        """Every status change, oldest first, with who or what caused it."""
        events = deployments.events(session=db.session, deployment_id=deployment_id)
        pagination_parameters.item_count = len(events)
        return events[pagination_parameters.first_item : pagination_parameters.last_item + 1]


@blp.route("/deployments/<uuid:deployment_id>/complete")
class CompleteDeployment(MethodView):
    @blp.access(member(Role.DEVELOPER, of="deployment_id"))
    @blp.response(200, DeploymentOut)
    @blp.alt_response(409, schema=ErrorSchema, description=BY_PROCESS_CONFLICT)
    def post(self, deployment_id):
        """Mark a running deployment completed; its resources are freed (simulated clusters only)."""
        deployment = deployments.complete(session=db.session, deployment_id=deployment_id, actor=_actor_name())
        return deployments_out([deployment])[0]


@blp.route("/deployments/<uuid:deployment_id>/fail")
class FailDeployment(MethodView):
    @blp.access(member(Role.DEVELOPER, of="deployment_id"))
    @blp.arguments(FailIn, required=False)
    @blp.response(200, DeploymentOut)
    @blp.alt_response(409, schema=ErrorSchema, description=BY_PROCESS_CONFLICT)
    def post(self, body, deployment_id):
        """Report a running deployment failed: requeued while attempts <= max_retries, else failed (simulated
        clusters only)."""
        deployment = deployments.fail(
            session=db.session, deployment_id=deployment_id, actor=_actor_name(), reason=body["reason"]
        )
        return deployments_out([deployment])[0]


@blp.route("/deployments/<uuid:deployment_id>/cancel")
class CancelDeployment(MethodView):
    @blp.access(member(Role.DEVELOPER, of="deployment_id"))
    @blp.response(200, DeploymentOut)
    @blp.alt_response(409, schema=ErrorSchema, description=TRANSITION_CONFLICT)
    def post(self, deployment_id):
        """Cancel a queued or running deployment. On an agent cluster a running one is `stopping` until its agent
        reports it stopped, then `cancelled`."""
        deployment = deployments.cancel(session=db.session, deployment_id=deployment_id, actor=_actor_name())
        return deployments_out([deployment])[0]


@blp.route("/deployments/<uuid:deployment_id>/logs")
class DeploymentLogs(MethodView):
    @blp.access(member(Role.VIEWER, of="deployment_id"))
    @blp.response(200, LogsOut)
    def get(self, deployment_id):
        """The output of its latest run that an agent sent (its last 64 KiB; empty when none)."""
        return agents.logs_of(session=db.session, deployment_id=deployment_id)
