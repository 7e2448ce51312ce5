"""One typed settings object, read from defaults < TOML file < ``TIDINGS_*``
environment variables < command-line flags.

Every field's docstring comment is the configuration reference in
docs/operations.md; ``tests/test_settings.py`` checks that the page lists every
field. Names are flat (``send_rate_per_s``) so that each maps one-to-one to an
environment variable (``TIDINGS_SEND_RATE_PER_S``) and a TOML key.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

ENV_PREFIX = "TIDINGS_"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
"""URL schemes the bus and presence backends open as Redis."""

SQLITE_SYNCHRONOUS_MODES = ("off", "normal", "full", "extra")
"""SQLite's ``PRAGMA synchronous`` values (``sqlite_synchronous``)."""

_CHOICES: dict[str, tuple[str, ...]] = {
    "sqlite_synchronous": SQLITE_SYNCHRONOUS_MODES,
    "log_level": ("debug", "info", "warning", "error"),
    "log_format": ("json", "text"),
}
_URL_SCHEMES: dict[str, tuple[str, ...]] = {
    "store": ("sqlite:///", "postgresql://", "postgres://"),
    "bus": ("memory://", *REDIS_SCHEMES),
    "presence": ("memory://", *REDIS_SCHEMES),
}
_MAX_PORT = 65_535


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    """Interface to listen on."""
    port: int = 8080
    """TCP port for HTTP and WebSocket."""
    reuse_port: bool = False
    """Listen with ``SO_REUSEPORT``: several nodes on one machine share ``port`` and the
    kernel spreads new connections over them (no balancer process in front)."""
    data_dir: str = "./data"
    """Directory for the embedded SQLite database (created if missing)."""
    store: str = ""
    """Store URL: ``sqlite:///abs/path.db`` or ``postgresql://user@host/db``; empty means
    ``sqlite:///<data_dir>/tidings.db``."""
    bus: str = "memory://"
    """Bus URL: ``memory://`` (single process) or ``redis://host:port/db`` (a cluster)."""
    bus_prefix: str = "tidings:"
    """Prefix of the bus's Redis channels: deployments sharing one Redis use different ones."""
    presence: str = ""
    """Presence backend URL: ``memory://`` (one process) or ``redis://host:port/db``
    (shared by a cluster's nodes; keys under ``bus_prefix`` + ``presence:``). Empty
    follows the bus: the bus's Redis when ``bus`` is Redis, else ``memory://``, so that
    nodes sharing a bus also share who is online without a second setting."""
    presence_grace_ms: int = 30_000
    """A user stays online this long after their last connection closed (no flapping on
    reconnect); a crashed node's sessions expire after 3 refresh intervals."""
    presence_refresh_ms: int = 10_000
    """How often a node refreshes its sessions in the presence backend."""
    presence_poll_ms: int = 1000
    """How often a node looks for presence changes of the users its clients watch."""
    typing_ttl_ms: int = 5000
    """A ``typing start`` is shown this long unless refreshed (clients refresh every 3 s)."""
    typing_max_group_members: int = 100
    """Typing indicators are not relayed in groups larger than this."""
    sqlite_synchronous: str = "full"
    """SQLite ``PRAGMA synchronous`` (``full``: an ack survives power loss; ``normal``:
    survives a process crash, not an OS crash)."""
    sqlite_busy_timeout_ms: int = 5000
    """How long a SQLite write waits for the lock while another process holds it (a backup,
    an operator's ``sqlite3`` shell) before failing as ``unavailable``."""
    max_content_bytes: int = 64 * 1024
    """Largest message content (its JSON encoding) accepted; larger gets ``too_large``."""
    max_frame_bytes: int = 1024 * 1024
    """Largest WebSocket frame; larger closes the connection with code 1009."""
    max_group_members: int = 1000
    """Largest group size."""
    edit_window_s: int = 48 * 3600
    """How long after sending a message its author may edit it."""
    moderators: str = ""
    """Comma-separated usernames of the server's moderators: they may delete any
    message in the conversations they are members of."""
    retention_days: int = 0
    """Server-wide retention: entries older than this many days are purged (0: kept for
    ever); a conversation's own ``retention_days`` overrides it."""
    retention_sweep_s: int = 600
    """How often the retention purge looks for expired entries."""
    features: str = ""
    """Feature packages to plug in besides the built-in ones: comma-separated
    ``package.module:NAME`` (a ``Feature``, or a function returning one)."""
    announcement_poll_ms: int = 500
    """With the in-process bus: how often the node looks in the store for what admin
    commands (``tidings user disable``, ``tidings conversation create``) announced."""
    receipt_detail_max_members: int = 32
    """Groups up to this size get per-member ``receipt`` frames; larger ones coalesced
    ``receipt_summary`` counts."""
    receipt_summary_interval_ms: int = 1000
    """At most one ``receipt_summary`` per conversation per interval."""
    heartbeat_ms: int = 25_000
    """Clients must send something this often; silent for twice as long is closed."""
    redelivery_ms: int = 10_000
    """A live ``msg`` not covered by ``delivered`` within this is sent again (a few times)."""
    hello_timeout_ms: int = 10_000
    """A connection that has not sent ``hello`` within this is closed with 4004."""
    send_rate_per_s: float = 50.0
    """Sustained ``send`` rate per user (token bucket refill)."""
    send_burst: int = 500
    """Burst of ``send`` per user (token bucket size): an outbox flush of a few hundred fits."""
    frame_rate_per_s: float = 500.0
    """Sustained rate of all frames per connection."""
    frame_burst: int = 2000
    """Burst of frames per connection."""
    frames_in_flight: int = 32
    """Sends and cursor moves of one connection answered at once; more wait unread (the
    socket is not read meanwhile)."""
    handshake_rate_per_s: float = 1000.0
    """Admission control: WebSocket handshakes accepted per second per node (token bucket);
    more get 503 with Retry-After."""
    handshake_burst: int = 2000
    """Admission control: handshakes accepted at once before the rate applies."""
    handshake_concurrency: int = 64
    """Admission control: handshakes in progress at once per node (each ``hello``
    not yet answered, and upgrades waiting for their ``hello``); more get 503
    with Retry-After (bounds handshake latency in a herd)."""
    handshake_await_hello_ms: int = 1000
    """Admission control: how long an upgraded session still waiting for its
    ``hello`` holds one of the ``handshake_concurrency`` slots (a silent or slow
    client must not keep others out until ``hello_timeout_ms``)."""
    max_connections: int = 0
    """WebSocket sessions one node holds at most; more get 503 with Retry-After (clients
    retry, behind a balancer or ``reuse_port`` on another node). 0: the process's open-file
    limit less 1,000 descriptors (or a quarter of it, if less) kept for the store, the bus
    and logs."""
    drain_window_ms: int = 10_000
    """On SIGTERM clients are told to reconnect after a random delay within this window."""
    drain_timeout_ms: int = 15_000
    """On SIGTERM, wait at most this long for sends in flight to be acknowledged."""
    restore_notice_s: int = 3 * 24 * 3600
    """For this long after ``tidings restore`` every session gets a ``notice``
    (code ``restored``) right after ``welcome``, naming the window of messages
    that may have been lost; 0 turns it off."""
    send_buffer_bytes: int = 1024 * 1024
    """Bytes queued to one connection beyond which it is cut as a slow consumer (FM3)."""
    sync_page_limit: int = 500
    """Most messages in one ``sync`` answer; the rest follow with ``more``."""
    history_page_limit: int = 200
    """Most messages one history call returns."""
    password_hash_memory_kib: int = 65_536
    """argon2id memory cost per password hash (KiB); lower only for tests and benchmarks."""
    password_hash_time_cost: int = 3
    """argon2id iterations per password hash."""
    member_cache_size: int = 10_000
    """Conversations whose member lists a node keeps in memory for fan-out."""
    changelog_batch_size: int = 100
    """Most changes (stored messages) handed to a change-log worker at once."""
    changelog_catchup_batch_size: int = 1000
    """Most changes handed at once to a change-log worker that is behind (its previous
    batch was full): fewer, larger reads while it catches up under heavy traffic."""
    changelog_poll_ms: int = 250
    """How long a change-log worker that has caught up waits before reading again (how
    late an idle worker sees a new message, at most; search promises a message is
    found within a second of its ack)."""
    changelog_lease_ms: int = 15_000
    """How long a node stays a change-log worker's one active consumer without renewing:
    after a node dies, another takes its workers over within this. Keep it above the time
    a worker needs for one batch, or two nodes may handle the same batch."""
    changelog_retry_max_ms: int = 30_000
    """Longest wait before a failed change-log batch is retried (the wait doubles from
    ``changelog_poll_ms`` up to this)."""
    log_level: str = "info"
    """Log level: debug, info, warning, error."""
    log_format: str = "json"
    """``json`` (one object per line) or ``text``."""

    @property
    def store_url(self) -> str:
        if self.store:
            return self.store
        return f"sqlite:///{Path(self.data_dir).resolve() / 'tidings.db'}"

    @property
    def presence_url(self) -> str:
        """The presence backend actually opened: unset follows the bus, so that a
        cluster started with only a store and a bus URL shares presence too."""
        if self.presence:
            return self.presence
        return self.bus if self.bus.startswith(REDIS_SCHEMES) else "memory://"

    @property
    def presence_local_only(self) -> bool:
        """Presence kept in this process while the bus joins it to other nodes:
        their users look offline here (an explicit ``memory://`` on a cluster)."""
        return self.presence_url.startswith("memory://") and self.bus.startswith(REDIS_SCHEMES)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


_TYPES: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool}
T = TypeVar("T")


def _coerce(field: dataclasses.Field[Any], raw: Any, source: str) -> Any:
    declared = field.type
    kind = _TYPES[declared if isinstance(declared, str) else getattr(declared, "__name__", "")]
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            return str(raw).strip().lower() in {"1", "true", "yes", "on"}
        return kind(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: {field.name} must be {kind.__name__}, got {raw!r}") from exc


def load_settings(
    config_file: str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build settings from a TOML file, the environment and explicit overrides.

    Tables inside ``[tidings]`` (``[tidings.search]``) belong to features and
    are read by :func:`load_section`.
    """
    table = _table(config_file, lambda data: data.get("tidings", data))
    return _load(Settings, table, ENV_PREFIX, config_file, env, overrides)


def load_section(
    kind: type[T], name: str, config_file: str | None = None, env: Mapping[str, str] | None = None
) -> T:
    """A feature's own settings: ``kind`` (a frozen dataclass of int, float, str and
    bool fields) from its defaults < the TOML table ``[tidings.<name>]`` <
    ``TIDINGS_<NAME>_<FIELD>`` variables, coerced and checked as :class:`Settings` is."""
    table = _table(config_file, lambda data: data.get("tidings", {}).get(name, {}))
    return _load(kind, table, f"{ENV_PREFIX}{name.upper()}_", config_file, env, None)


def _table(config_file: str | None, pick: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    """The settings in ``config_file`` that ``pick`` selects, less features' tables."""
    if not config_file:
        return {}
    with open(config_file, "rb") as fh:
        table = pick(tomllib.load(fh))
    return {key: raw for key, raw in table.items() if not isinstance(raw, dict)}


def _load(
    kind: type[T],
    table: Mapping[str, Any],
    prefix: str,
    config_file: str | None,
    env: Mapping[str, str] | None,
    overrides: Mapping[str, Any] | None,
) -> T:
    env = os.environ if env is None else env
    fields = {f.name: f for f in dataclasses.fields(kind)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, raw in table.items():
        if key not in fields:
            raise ValueError(f"{config_file}: unknown setting {key!r}")
        values[key] = _coerce(fields[key], raw, config_file or "")
    sources = dict.fromkeys(values, config_file or "")
    for name, field in fields.items():
        raw_env = env.get(prefix + name.upper())
        if raw_env is not None:
            values[name] = _coerce(field, raw_env, prefix + name.upper())
            sources[name] = prefix + name.upper()
    for key, raw in (overrides or {}).items():
        if raw is not None:
            values[key] = _coerce(fields[key], raw, "--" + key.replace("_", "-"))
            sources[key] = "--" + key.replace("_", "-")
    settings = kind(**values)
    for name, source in sources.items():
        _check(name, getattr(settings, name), source)
    return settings


def _check(name: str, value: Any, source: str) -> None:
    """Refuse a value no part of the server could use, naming where it came
    from, at start instead of as a traceback from deep inside a backend."""
    if name == "port" and not 1 <= value <= _MAX_PORT:
        raise ValueError(f"{source}: port must be 1-{_MAX_PORT}, got {value}")
    if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
        raise ValueError(f"{source}: {name} must not be negative, got {value}")
    choices = _CHOICES.get(name)
    if choices is not None and str(value).lower() not in choices:
        raise ValueError(f"{source}: {name} must be one of {', '.join(choices)}; got {value!r}")
    schemes = _URL_SCHEMES.get(name)
    if schemes is not None and value and not str(value).startswith(schemes):
        raise ValueError(
            f"{source}: unsupported {name} URL {value!r}; use one of {', '.join(schemes)}"
        )
