"""Fixtures of the project-level tests."""

import pytest

from gateway_project import env


@pytest.fixture
def env_errors():
    """gateway_project.env.ERRORS, emptied for the test and restored afterwards (it is shared with settings)."""
    saved = list(env.ERRORS)
    env.ERRORS.clear()
    yield env.ERRORS
    env.ERRORS[:] = saved
