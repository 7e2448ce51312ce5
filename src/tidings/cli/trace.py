"""``tidings trace MESSAGE_ID|CLIENT_MSG_ID``: a message's lifecycle across
nodes, from the trace feature's table in the store (docs/protocol.md,
"Operations"; docs/operations.md, "Tracing a message"). It reads only, so it
works while servers run."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import msgspec

from tidings.cli.errors import OperatorError
from tidings.cli.store_access import using_store
from tidings.features.trace import trace_store
from tidings.features.trace.lifecycle import Stage, TraceReader
from tidings.settings import Settings


def _when(ts_us: int) -> str:
    moment = datetime.fromtimestamp(ts_us / 1_000_000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _line(stage: Stage) -> str:
    who = []
    if stage.user_id is not None:
        who.append(f"user {stage.user_id}")
    if stage.device_id is not None:
        who.append(f"device {stage.device_id}")
    if stage.network is not None:
        who.append(f"on {stage.network}")
    if stage.via is not None:
        who.append(f"by {stage.via}")
    if stage.attempt is not None:
        who.append(f"attempt {stage.attempt}")
    return f"  {_when(stage.ts_us)}  {stage.stage:<12}  {stage.node:<24}  {', '.join(who)}".rstrip()


async def trace(args: argparse.Namespace, settings: Settings) -> int:
    async with using_store(settings) as store:
        reader = TraceReader(trace_store(store.engine_access()))
        try:
            found = await reader.trace(args.id)
        except Exception as exc:
            if "trace_events" not in str(exc):
                raise
            raise OperatorError(
                "this store has no trace table yet: start `tidings serve` (or run"
                " `tidings migrate`) with this version once"
            ) from exc
    if not found:
        raise OperatorError(
            f"no traced message has id {args.id!r}: not sampled (trace cluster_sample_rate),"
            " older than the trace retention_s, or tracing was off"
        )
    for stages in found:
        if args.json:
            for stage in stages:
                print(msgspec.json.encode(stage).decode())
            continue
        first = stages[0]
        print(
            f"message {first.message_id or '(id not traced)'}  conversation"
            f" {first.conversation_id}  seq {first.seq}"
        )
        for stage in stages:
            print(_line(stage))
    return 0
