"""The push feature's settings: ``[tidings.push]`` and ``TIDINGS_PUSH_*``
(docs/operations.md lists them)."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class PushSettings:
    delay_ms: int = 5000
    """How long a device has to acknowledge a message before it is notified;
    also the window in which a conversation's messages collapse into one."""
    webhook_allow: str = ""
    """Host names, ``*.`` suffixes and CIDR networks push requests may go to
    (webhooks: only these when set; with none, public addresses only)."""
    vapid_subject: str = "mailto:postmaster@localhost"
    """The contact push services see in VAPID signatures (mailto: or https:)."""
    vapid_key_file: str = ""
    """A PEM P-256 private key to sign Web Push with; empty: one made once and
    kept in the store."""
    timeout_s: float = 10.0
    """A push request's whole time, connect to answer."""
    concurrency: int = 64
    """Push requests in flight per node: a slow endpoint holds one of them."""
    max_attempts: int = 6
    """Sends of one notification before it is given up (retryable failures)."""
    retry_base_ms: int = 1000
    retry_max_ms: int = 300_000
    ttl_s: int = 86_400
    """How long a push service keeps a notification for an offline browser."""
    preview_chars: int = 120
    max_age_s: int = 3600
    """Messages older than this when the notifier reads them notify nobody
    (after an outage, or when the feature is first turned on)."""
    poll_ms: int = 250
    subscriptions_per_device: int = 10

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
                if field.name in ("delay_ms", "max_age_s") and value == 0:
                    continue
                raise ValueError(f"push setting {field.name} must be positive, not {value}")
        if not self.vapid_subject.startswith(("mailto:", "https:")):
            raise ValueError("push setting vapid_subject must be a mailto: or https: URL")
