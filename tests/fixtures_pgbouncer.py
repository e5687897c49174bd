"""Fixtures for fixtures_pgbouncer (registered from conftest)."""
