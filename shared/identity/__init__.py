"""Users, passwords and tokens."""
