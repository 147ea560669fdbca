"""Agents: the programs that run the deployments of agent clusters; their tokens, lease and sync."""
