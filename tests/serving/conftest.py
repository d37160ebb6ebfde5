"""Fixtures of the serving-core tests: the serving fixtures shared with tests/api."""

from tests.serving_fixtures import *  # noqa: F401,F403
