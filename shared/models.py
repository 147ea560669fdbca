"""Every table of the system, imported in one place so Alembic and the tests see the whole schema."""
