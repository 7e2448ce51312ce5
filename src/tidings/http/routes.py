"""One declaration per HTTP route, read by both the server and the OpenAPI document.

A :class:`Route` names its method, path, handler, the msgspec Struct of its
path and query parameters, its body type, its success replies and the error
codes it can answer. :class:`Binder` turns it into the aiohttp route that
authenticates, decodes and validates with exactly those types, and
``tidings.http.openapi`` documents it from the same fields, so what the
document promises and what the server enforces cannot drift apart.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

import msgspec
from aiohttp import web

from tidings.core.auth import AuthService
from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.frames import decode_body
from tidings.core.models import Device
from tidings.http.respond import guarded
from tidings.observability.metrics import Metrics

P = TypeVar("P", bound=msgspec.Struct)
B = TypeVar("B", bound=msgspec.Struct | None)


class NoParams(msgspec.Struct, frozen=True):
    """The parameters of a route that takes none (extra query keys are ignored)."""


@dataclass(frozen=True)
class Media:
    """A reply that is not a msgspec Struct: its media type and JSON schema."""

    content_type: str
    schema: dict[str, Any]


# A success reply: a JSON body of this Struct (or of one of these, told apart
# by the request), another media type, or no body.
Reply = type[msgspec.Struct] | tuple[type[msgspec.Struct], ...] | Media | None


@dataclass(frozen=True)
class Call(Generic[P, B]):
    """One request, authenticated and decoded as its route declares."""

    request: web.Request
    params: P
    body: B
    device: Device | None

    @property
    def caller(self) -> Device:
        """The authenticated device (every route that uses it declares ``auth``)."""
        if self.device is None:
            raise TidingsError(ErrorCode.UNAUTHORIZED, "missing bearer token")
        return self.device


@dataclass(frozen=True)
class Route(Generic[P, B]):
    """An HTTP route: what it accepts, what it answers, and who handles it.

    ``params`` holds the path parameters (the fields named ``{like_this}`` in
    ``path``) and the query parameters (every other field). ``errors`` are
    the codes the handler itself can raise; :attr:`error_codes` adds those
    the declaration implies (authentication, decoding, internal errors).
    """

    method: str
    path: str
    summary: str
    handler: Callable[[Call[P, B]], Awaitable[web.StreamResponse]]
    params: type[P]
    body: type[B] | None
    replies: Mapping[int, Reply]
    errors: frozenset[ErrorCode] = frozenset()
    auth: bool = True
    path_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        names = tuple(re.findall(r"\{(\w+)\}", self.path))
        fields = {f.name for f in msgspec.structs.fields(self.params)}
        if not set(names) <= fields:
            raise ValueError(f"{self.path}: {self.params.__name__} lacks a path parameter")
        object.__setattr__(self, "path_names", names)

    @property
    def error_codes(self) -> frozenset[ErrorCode]:
        implied = {ErrorCode.INTERNAL}
        if self.auth:
            implied.add(ErrorCode.UNAUTHORIZED)
        if self.body is not None or msgspec.structs.fields(self.params):
            implied.add(ErrorCode.BAD_REQUEST)
        if self.body is not None:
            implied.add(ErrorCode.TOO_LARGE)
        if self.path_names:  # a path segment that names no such thing
            implied.add(ErrorCode.NOT_FOUND)
        return self.errors | implied


AnyRoute = Route[Any, Any]


# Longer digit strings exceed every declared bound; refusing them early keeps
# int() cheap.
_MAX_DIGITS = 20


@functools.cache
def _integer_fields(kind: type[msgspec.Struct]) -> frozenset[str]:
    """The fields of a parameters Struct that hold integers."""
    info = msgspec.inspect.type_info(kind)
    assert isinstance(info, msgspec.inspect.StructType)

    def is_int(t: msgspec.inspect.Type) -> bool:
        if isinstance(t, msgspec.inspect.Metadata):
            return is_int(t.type)
        if isinstance(t, msgspec.inspect.UnionType):
            return any(is_int(member) for member in t.types)
        return isinstance(t, msgspec.inspect.IntType)

    return frozenset(f.name for f in info.fields if is_int(f.type))


def decode_params(request: web.Request, kind: type[P]) -> P:
    """The path and query parameters of ``request`` as ``kind``; ``bad_request`` if invalid.

    An empty query value counts as absent. Integers must be ASCII digits
    (msgspec's lax str-to-int also takes ``1e3`` and ``1.0``, and ``int``
    takes '²'); the Struct's declared bounds then apply, as documented.
    """
    raw: dict[str, object] = {k: v for k, v in request.query.items() if v != ""}
    raw.update(request.match_info)
    for name in _integer_fields(kind) & raw.keys():
        text = str(raw[name])
        if not (0 < len(text) <= _MAX_DIGITS and text.isascii() and text.isdecimal()):
            raise TidingsError(ErrorCode.BAD_REQUEST, f"{name} must be a non-negative integer")
        raw[name] = int(text)
    try:
        return msgspec.convert(raw, kind)
    except msgspec.ValidationError as exc:
        raise TidingsError(ErrorCode.BAD_REQUEST, f"invalid parameters: {exc}") from None


@dataclass(frozen=True)
class Binder:
    """Turns declared routes into guarded aiohttp routes."""

    metrics: Metrics
    auth: AuthService
    max_body_bytes: int

    def route_def(self, route: Route[P, B]) -> web.RouteDef:
        async def handle(request: web.Request) -> web.StreamResponse:
            # Authentication first: an anonymous caller learns nothing of the rest.
            device = await self._device(request) if route.auth else None
            params = decode_params(request, route.params)
            body = None
            if route.body is not None:
                raw = await self._read(request)
                body = decode_body(raw, cast(type[msgspec.Struct], route.body))
            # ``body`` is None exactly when the route declares none, and then B is None.
            return await route.handler(Call(request, params, cast(B, body), device))

        return web.route(route.method, route.path, guarded(self.metrics, handle))

    async def _read(self, request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            raise TidingsError(ErrorCode.TOO_LARGE, "request body too large")
        return await request.read()

    async def _device(self, request: web.Request) -> Device:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            raise TidingsError(ErrorCode.UNAUTHORIZED, "missing bearer token")
        return await self.auth.authenticate(token.strip())
