"""Fixtures of the SDK tests: the scripted WebSocket server of the connection tests."""

from tests.client.test_connection import serve  # noqa: F401 (a fixture)
