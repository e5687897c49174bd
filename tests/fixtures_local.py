"""Fixtures for fixtures_local (registered from conftest)."""
