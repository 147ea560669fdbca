"""Every table of the system, imported in one place so Alembic and the tests see the whole schema."""

from shared.agents.models import AgentToken, ClusterAgent
from shared.audit.models import OrganizationEvent
from shared.clusters.models import Allocation, Cluster, ClusterEvent
from shared.deployments.models import Deployment, DeploymentDependency, DeploymentEvent, DeploymentLog
from shared.identity.models import User
from shared.organizations.models import Invite, Membership, Organization

__all__ = [
    "AgentToken",
    "Allocation",
    "Cluster",
    "ClusterAgent",
    "ClusterEvent",
    "Deployment",
    "DeploymentDependency",
    "DeploymentEvent",
    "DeploymentLog",
    "Invite",
    "Membership",
    "Organization",
    "OrganizationEvent",
    "User",
]
