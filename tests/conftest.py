"""Fixtures are registered once, here; the tiers' conftest.py files only describe their tier."""

pytest_plugins = ["tests.support.fixtures"]
