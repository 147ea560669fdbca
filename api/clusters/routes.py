"""Clusters (API.md, "Clusters")."""

from flask.views import MethodView

from api.access import current_user_id, member
from api.clusters.schemas import ClusterEventOut, ClusterIn, ClusterOut, ClusterPatch
from api.extensions import Blueprint, ErrorSchema
from api.pagination import paginate
from shared.agents import service as agents
from shared.clusters import events
from shared.clusters import service as clusters
from shared.db import db
from shared.organizations.roles import Role
from shared.resources import Resources

blp = Blueprint("clusters", __name__, url_prefix="/api/v1", description="Clusters and their capacity.")


def cluster_out(cluster, counts, agent) -> dict:
    return {
        "id": cluster.id,
        "organization_id": cluster.organization_id,
        "name": cluster.name,
        "capacity": cluster.capacity.to_api(),
        "allocated": cluster.allocated.to_api(),
        "available": cluster.available.to_api(),
        "deployments": counts,
        "runtime": cluster.runtime,
        "agent": agent.to_api() if agent else None,
        "created_at": cluster.created_at,
    }


def _one(cluster) -> dict:
    counts = clusters.deployment_counts(session=db.session, cluster_ids=[cluster.id])[cluster.id]
    return cluster_out(cluster, counts, agents.agent_status(session=db.session, cluster=cluster))


@blp.route("/organizations/<uuid:org_id>/clusters")
class OrganizationClusters(MethodView):
    @blp.access(member(Role.ADMIN))
    @blp.arguments(ClusterIn)
    @blp.response(201, ClusterOut)
    @blp.alt_response(
        409,
        schema=ErrorSchema,
        description="The organization already has a cluster of that name, or as many clusters as it may have "
        "(MAX_CLUSTERS_PER_ORGANIZATION; the message names the limit).",
    )
    def post(self, body, org_id):
        """Declare a cluster with a fixed capacity."""
        cluster = clusters.create(
            session=db.session,
            organization_id=org_id,
            actor_id=current_user_id(),
            name=body["name"],
            capacity=Resources(body["cpu"], body["ram_gb"], body["gpu"]),
            runtime=body["runtime"],
        )
        return _one(cluster)

    @blp.access(member(Role.VIEWER))
    @blp.response(200, ClusterOut(many=True))
    @blp.paginate()
    def get(self, org_id, pagination_parameters):
        """The organization's clusters, oldest first."""
        page, total = clusters.list_for_org(
            session=db.session, organization_id=org_id, **paginate(pagination_parameters)
        )
        pagination_parameters.item_count = total
        counts = clusters.deployment_counts(session=db.session, cluster_ids=[c.id for c in page])
        holders = agents.agent_statuses(session=db.session, clusters=page)
        return [cluster_out(c, counts[c.id], holders.get(c.id)) for c in page]


@blp.route("/clusters/<uuid:cluster_id>")
class ClusterDetail(MethodView):
    @blp.access(member(Role.VIEWER, of="cluster_id"))
    @blp.response(200, ClusterOut)
    def get(self, cluster_id):
        """One cluster: capacity, what is allocated and available, deployment counts by status."""
        return _one(clusters.get_or_404(session=db.session, cluster_id=cluster_id))

    @blp.access(member(Role.ADMIN, of="cluster_id"))
    @blp.arguments(ClusterPatch, required=False)
    @blp.response(200, ClusterOut)
    @blp.alt_response(
        409,
        schema=ErrorSchema,
        description="Shrinking below what is allocated, a name taken, or a new runtime while a deployment runs.",
    )
    def patch(self, body, cluster_id):
        """Rename, resize or change the runtime. Growing schedules waiting work; shrinking below the allocation is
        refused, and so is a new runtime while a deployment runs."""
        cluster = clusters.update(
            session=db.session,
            cluster_id=cluster_id,
            actor_id=current_user_id(),
            name=body.get("name"),
            cpu_millis=body.get("cpu"),
            ram_mb=body.get("ram_gb"),
            gpu=body.get("gpu"),
            runtime=body.get("runtime"),
        )
        return _one(cluster)

    @blp.access(member(Role.ADMIN, of="cluster_id"))
    @blp.response(204)
    @blp.alt_response(409, schema=ErrorSchema, description="It still has queued or running deployments.")
    def delete(self, cluster_id):
        """Delete a cluster with no queued or running deployments."""
        clusters.delete(session=db.session, cluster_id=cluster_id, actor_id=current_user_id())


@blp.route("/clusters/<uuid:cluster_id>/events")
class ClusterEvents(MethodView):
    @blp.access(member(Role.VIEWER, of="cluster_id"))
    @blp.response(200, ClusterEventOut(many=True))
    @blp.paginate()
    def get(self, cluster_id, pagination_parameters):
        """What happened to the cluster, newest first: capacity and runtime changes, counter repairs, agents
        taking or losing it, agent tokens created or revoked."""
        page, total = events.list_for_cluster(
            session=db.session, cluster_id=cluster_id, **paginate(pagination_parameters)
        )
        pagination_parameters.item_count = total
        return page
