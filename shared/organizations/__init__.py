"""Organizations, memberships (which carry the roles) and invite codes."""
