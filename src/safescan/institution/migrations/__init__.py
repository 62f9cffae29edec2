"""Alembic migrations of the institution schema, shipped inside the package."""
