"""Fixtures of the HTTP tests: the serving fixtures shared with tests/serving."""

from tests.serving_fixtures import *  # noqa: F401,F403
