"""Fixtures of the fault suite: the shared PostgreSQL test cluster (skips when there is none)."""

from __future__ import annotations

from tests.institution.conftest import pg_cluster

__all__ = ["pg_cluster"]
