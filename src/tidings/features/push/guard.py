"""Where push requests may go: the operator's allow-list, checked on the URL,
again on every address the name resolves to, and again on every redirect.

A subscription names a URL chosen by a user; without a guard, a webhook
pointed at ``http://127.0.0.1:6379`` or a cloud metadata address would make
the server send requests into its own network. The rule
(``TIDINGS_PUSH_WEBHOOK_ALLOW``, comma-separated host names, ``*.`` suffixes
and CIDR networks):

- a **webhook** must match the list when one is set; with no list, any host
  whose addresses are all public (not loopback, private, link-local,
  multicast, reserved or unspecified);
- a **Web Push endpoint** (a browser's push service) must be public or match
  the list.

The addresses are checked where the connection is made (the resolver below
hands aiohttp only addresses that pass, so a name that resolves to a private
address between the check and the connect, DNS rebinding, still fails).
"""

from __future__ import annotations

import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from tidings.core.errors import ErrorCode, TidingsError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def refused(url: str, why: str) -> TidingsError:
    return TidingsError(ErrorCode.BAD_REQUEST, f"push target {url} refused: {why}")


class AllowList:
    """The parsed ``webhook_allow`` setting."""

    def __init__(self, spec: str) -> None:
        self.names: set[str] = set()
        self.suffixes: list[str] = []
        self.networks: list[Network] = []
        for item in (part.strip().lower() for part in spec.split(",")):
            if not item:
                continue
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
                continue
            except ValueError:
                pass
            if item.startswith("*."):
                self.suffixes.append(item[1:])
            elif item.replace("-", "").replace(".", "").isalnum():
                self.names.add(item)
            else:
                raise ValueError(f"push webhook_allow: {item!r} is neither a host name nor a CIDR")

    @property
    def empty(self) -> bool:
        return not (self.names or self.suffixes or self.networks)

    def names_host(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return host in self.names or any(host.endswith(s) for s in self.suffixes)

    def holds(self, address: Address) -> bool:
        return any(address in network for network in self.networks)


def public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return public(address.ipv4_mapped)
    return address.is_global and not address.is_multicast


class Policy:
    """One kind of target's rule (see the module docstring)."""

    def __init__(self, allow: AllowList, strict: bool) -> None:
        self._allow = allow
        self._strict = strict  # webhooks with a list: only what the list names

    def check_url(self, url: str) -> URL:
        """The URL parsed, or ``bad_request`` saying why it may not be a target."""
        try:
            parsed = URL(url)
        except (ValueError, TypeError):
            raise refused(url, "not a URL") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise refused(url, "only http and https URLs with a host")
        if parsed.user or parsed.password:
            raise refused(url, "credentials in the URL")
        try:
            address = ipaddress.ip_address(parsed.host)
        except ValueError:
            if not self.host_allowed(parsed.host):
                raise refused(url, f"{parsed.host} is not in the allow-list") from None
            return parsed
        if not self.address_allowed(parsed.host, address):
            raise refused(url, f"{address} is not an allowed address")
        return parsed

    def host_allowed(self, host: str) -> bool:
        """Whether a host name may be tried at all (its addresses are checked apart)."""
        return not self._strict or self._allow.empty or self._allow.names_host(host)

    def address_allowed(self, host: str, address: Address) -> bool:
        if self._allow.names_host(host) or self._allow.holds(address):
            return True
        if self._strict and not self._allow.empty:
            return False
        return public(address)


class RefusedAddress(OSError):
    """Every address of the name is refused: not worth a retry."""


class GuardedResolver(AbstractResolver):
    """Resolves as aiohttp would, then keeps only the addresses the policy allows."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        kept = [
            entry
            for entry in found
            if self._policy.address_allowed(host, ipaddress.ip_address(entry["host"]))
        ]
        if not kept:
            raise RefusedAddress(f"push target {host} resolves to no allowed address")
        return kept

    async def close(self) -> None:
        await self._inner.close()
