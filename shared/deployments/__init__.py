"""Deployments: submission, the status state machine, events and dependencies."""
