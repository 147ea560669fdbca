"""Every table of the system, imported in one place so Alembic and the tests see the whole schema."""

from shared.clusters.models import Allocation, Cluster, ClusterEvent
from shared.deployments.models import Deployment, DeploymentDependency, DeploymentEvent
from shared.identity.models import User
from shared.organizations.models import Invite, Membership, Organization

__all__ = [
    "Allocation",
    "Cluster",
    "ClusterEvent",
    "Deployment",
    "DeploymentDependency",
    "DeploymentEvent",
    "Invite",
    "Membership",
    "Organization",
    "User",
]
