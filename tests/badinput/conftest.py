"""Fixtures shared by the bad-input suites: one client session and a world of
users and conversations on the default test server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.badinput.support import World, make_world
from tests.conftest import RunningServer


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def world(tidings_server: RunningServer, session: aiohttp.ClientSession) -> World:
    return await make_world(tidings_server, session)
