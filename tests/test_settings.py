"""Settings precedence, validation, and the configuration reference staying complete."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tidings.app import open_presence
from tidings.presence.memory import MemoryPresence
from tidings.presence.redis import RedisPresence
from tidings.settings import Settings, load_settings

OPERATIONS = Path(__file__).resolve().parent.parent / "docs" / "operations.md"


def test_precedence_defaults_toml_env_flags(tmp_path: Path) -> None:
    config = tmp_path / "t.toml"
    config.write_text("[tidings]\nport = 9001\nheartbeat_ms = 1000\nsend_burst = 7\n")
    env = {"TIDINGS_HEARTBEAT_MS": "2000", "TIDINGS_SEND_BURST": "8", "UNRELATED": "x"}
    settings = load_settings(str(config), env=env, overrides={"send_burst": 9, "host": None})
    assert settings.port == 9001  # TOML over default
    assert settings.heartbeat_ms == 2000  # env over TOML
    assert settings.send_burst == 9  # flags over env
    assert settings.host == Settings().host  # a flag not given changes nothing


def test_top_level_toml_keys_and_types(tmp_path: Path) -> None:
    config = tmp_path / "t.toml"
    config.write_text('send_rate_per_s = 2.5\nbus = "memory://"\n')
    settings = load_settings(str(config), env={})
    assert settings.send_rate_per_s == 2.5


def test_bad_values_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="TIDINGS_PORT"):
        load_settings(env={"TIDINGS_PORT": "eighty"})
    config = tmp_path / "t.toml"
    config.write_text("nope = 1\n")
    with pytest.raises(ValueError, match="nope"):
        load_settings(str(config), env={})


def test_store_url_defaults_to_sqlite_in_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path))
    assert settings.store_url == f"sqlite:///{tmp_path.resolve() / 'tidings.db'}"
    assert Settings(store="sqlite:////x/y.db").store_url == "sqlite:////x/y.db"


def test_operations_doc_lists_every_setting() -> None:
    text = OPERATIONS.read_text()
    missing = [
        f.name
        for f in dataclasses.fields(Settings)
        if f"`{f.name}`" not in text or f"TIDINGS_{f.name.upper()}" not in text
    ]
    assert missing == []


def test_presence_follows_a_redis_bus_unless_set() -> None:
    bus = "redis://redis.internal:6379/2"
    assert Settings().presence_url == "memory://"
    assert Settings(bus=bus).presence_url == bus  # same Redis, not memory
    assert Settings(bus=bus, presence="redis://other:6379/0").presence_url == "redis://other:6379/0"
    assert Settings(bus=bus, presence="memory://").presence_url == "memory://"
    # Only the two URLs a cluster is started with, as in the README.
    env = {"TIDINGS_STORE": "postgresql://db/tidings", "TIDINGS_BUS": bus}
    assert load_settings(env=env).presence_url == bus


def test_presence_local_only_means_memory_presence_on_a_redis_bus() -> None:
    bus = "redis://127.0.0.1:6379/0"
    assert Settings(bus=bus, presence="memory://").presence_local_only
    assert not Settings(bus=bus).presence_local_only
    assert not Settings().presence_local_only  # one process: memory is everything
    assert not Settings(presence="memory://").presence_local_only


def test_open_presence_uses_the_bus_redis_under_the_bus_prefix() -> None:
    settings = Settings(bus="redis://127.0.0.1:6379/3", bus_prefix="deploy-a:")
    presence = open_presence(settings)
    # Constructing the client connects nothing: no Redis is needed here.
    assert isinstance(presence, RedisPresence)
    assert presence.prefix == "deploy-a:presence:"
    assert isinstance(open_presence(Settings()), MemoryPresence)
