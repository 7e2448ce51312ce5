"""The one migration runner of both engines.

What a migration run does is the same on SQLite and PostgreSQL: create the
``schema_version`` table, apply every shipped file above the recorded
version and record it, then the same for each feature's component in
``component_schema``, and make sure the store has an epoch. Only how a
statement reaches the database differs (SQLite is called from a thread and
splits scripts into statements; asyncpg is awaited and runs a file as one
script), so the run is written once as :func:`plan`, a generator of
:class:`Step` objects that each engine executes with its own driver, and the
engine keeps only its :class:`Dialect` (placeholders, column types) and its
transaction (``BEGIN IMMEDIATE`` on SQLite, an advisory lock on PostgreSQL),
which it opens around :func:`run` or :func:`run_async`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from tidings.core.ids import new_id, now_ms
from tidings.core.schema import SchemaComponent
from tidings.store.shipped import COMPONENT_TABLE, shipped

log = logging.getLogger(__name__)

Rows = list[tuple[Any, ...]]


class Step(NamedTuple):
    """One thing for the engine to run: a statement with its arguments (its
    rows are sent back into the plan), or a whole migration file (``script``)."""

    sql: str
    args: tuple[object, ...] = ()
    script: bool = False


@dataclass(frozen=True, slots=True)
class Dialect:
    """The statements of a run in one engine's SQL; the tables they write are
    the same on both (``restore`` reads ``schema_version``)."""

    engine: str
    """The migration files' prefix (``sqlite``, ``postgres``)."""
    version_table: str
    insert_version: str
    component_versions: str
    insert_component: str
    ensure_epoch: str
    """Gives a new store its epoch and leaves an existing one's alone."""


Plan = Generator[Step, Rows, str]


def plan(dialect: Dialect, components: Sequence[SchemaComponent] = ()) -> Plan:
    """The steps that bring the schema, then each feature's ``components``, up
    to date and make sure the store has an epoch; returns the epoch. The engine
    runs them in one transaction, so a failing migration changes nothing."""
    yield Step(dialect.version_table)
    ((current,),) = yield Step("SELECT coalesce(max(version), 0) FROM schema_version")
    for version, name, script in shipped("tidings.store", dialect.engine):
        if version <= current:
            continue
        log.info("applying %s migration %s", dialect.engine, name)
        yield Step(script, script=True)
        yield Step(dialect.insert_version, (version, name, now_ms()))
    for component in components:
        yield Step(COMPONENT_TABLE)
        rows = yield Step(dialect.component_versions, (component.name,))
        applied = {int(version) for (version,) in rows}
        for version, name, script in shipped(component.package, dialect.engine):
            if version in applied:
                continue
            log.info("applying %s migration %s of %s", dialect.engine, name, component.name)
            yield Step(script, script=True)
            yield Step(dialect.insert_component, (component.name, version, name, now_ms()))
    yield Step(dialect.ensure_epoch, (new_id("e"),))
    ((epoch,),) = yield Step("SELECT epoch FROM meta")
    return str(epoch)


def run(steps: Plan, execute: Callable[[Step], Rows]) -> str:
    """Run a plan on a blocking connection (SQLite); return the epoch."""
    step = next(steps)  # a plan has steps: it always creates schema_version
    while True:
        rows = execute(step)
        try:
            step = steps.send(rows)
        except StopIteration as done:
            return str(done.value)


async def run_async(steps: Plan, execute: Callable[[Step], Awaitable[Rows]]) -> str:
    """Run a plan on an asynchronous connection (PostgreSQL); return the epoch."""
    step = next(steps)  # a plan has steps: it always creates schema_version
    while True:
        rows = await execute(step)
        try:
            step = steps.send(rows)
        except StopIteration as done:
            return str(done.value)
