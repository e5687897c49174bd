"""Fixtures for fixtures_functions (registered from conftest)."""
