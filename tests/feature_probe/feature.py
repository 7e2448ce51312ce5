"""The probe feature (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

import msgspec
from aiohttp import web

from tidings.core.content_kinds import ContentKind
from tidings.core.models import ChangeBatch
from tidings.features import Feature, FeatureContext, Plugin, ReadinessCheck
from tidings.http.respond import json_response
from tidings.http.routes import Call, NoParams, Route

PROBE_MAX_BYTES = 256


class ProbeContent(msgspec.Struct, frozen=True):
    """``{"kind": "probe", "note": "..."}``: a short note."""

    kind: Literal["probe"]
    note: Annotated[str, msgspec.Meta(min_length=1, max_length=40)]


def _note(content: ProbeContent) -> str:
    return content.note


def _no_shouting(content: ProbeContent) -> str | None:
    return "probe notes are not shouted" if content.note.isupper() else None


PROBE_KIND = ContentKind(
    "probe", ProbeContent, _note, max_bytes=PROBE_MAX_BYTES, check=_no_shouting
)


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    greeting: str = "hello"
    """What GET /v1/probe answers."""


class ProbeOut(msgspec.Struct, frozen=True):
    greeting: str
    started: bool


@dataclass
class ProbeState:
    """What the tests look at: lifecycle, probes and batches seen."""

    lifecycle: list[str] = field(default_factory=list)
    probes: int = 0
    batches: list[ChangeBatch] = field(default_factory=list)


@dataclass
class ProbeWorker:
    """A change-log worker (``tidings.core.workers.ChangeWorker``)."""

    state: ProbeState
    name: str = "probe-notes"

    async def handle(self, batch: ChangeBatch) -> None:
        self.state.batches.append(batch)


def probe_feature(state: ProbeState) -> Feature:
    """The feature, reporting into ``state``."""

    def plug(context: FeatureContext) -> Plugin:
        own: ProbeSettings = context.own

        async def greet(_: Call[NoParams, None]) -> web.Response:
            return json_response(ProbeOut(own.greeting, state.lifecycle == ["started"]))

        async def probe() -> None:
            state.probes += 1

        async def start() -> None:
            state.lifecycle.append("started")

        async def stop() -> None:
            state.lifecycle.append("stopped")

        route = Route(
            "GET",
            "/v1/probe",
            "The probe feature's greeting",
            greet,
            NoParams,
            None,
            {200: ProbeOut},
            auth=False,
        )
        return Plugin(
            routes=[route],
            workers=[ProbeWorker(state)],
            checks=[ReadinessCheck("probe", probe)],
            start=start,
            stop=stop,
        )

    return Feature(
        "probe",
        content_kinds=[PROBE_KIND],
        settings=ProbeSettings,
        migrations="tests.feature_probe",
        plug=plug,
    )


def served_probe() -> Feature:
    """The probe as ``tidings serve`` loads it from the ``features`` setting
    (``tests.feature_probe.feature:served_probe``), with a state of its own."""
    return probe_feature(ProbeState())
