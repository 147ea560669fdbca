"""The organization's audit log: every change to its members, invites and clusters, and who made it."""
