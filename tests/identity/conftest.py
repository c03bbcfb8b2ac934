from __future__ import annotations

import pytest

from tests.identity.helpers import World


@pytest.fixture
def world() -> World:
    return World()
