"""Schemathesis against a live server: does it keep the promises of /openapi.json?

Every documented operation gets a fixed number of generated requests, valid
and invalid, some with the ids of a real conversation and user, all sent
with a real bearer token. Every answer must be no 5xx, a status the document
declares for the operation, of the declared content type, and match the
declared schema. The run is derandomized so a failure reproduces.
"""

from __future__ import annotations

import asyncio
from typing import Any

import hypothesis
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.badinput.support import World

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_OPERATION = 25
# Revoking the token would turn every later call into a 401: logout goes last,
# with a token of its own.
LOGOUT = "POST /v1/auth/logout"

Operation = schemathesis.APIOperation[Any, Any, Any, Any]


def _fuzz_operation(
    op: Operation, session: requests.Session, token: str, real: dict[str, str]
) -> None:
    """Valid and invalid requests to ``op``, some of them naming the ``real`` ids."""
    headers = {"Authorization": f"Bearer {token}"}
    modes = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    strategies = [op.as_strategy(mode) for mode in modes]
    if real:
        strategies += [op.as_strategy(mode, path_parameters=real) for mode in modes]

    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=st.one_of(strategies))
    def check(case: schemathesis.Case[Operation]) -> None:
        response = case.call(session=session, headers=headers, timeout=10)
        case.validate_response(response, checks=CHECKS, headers=headers)

    check()


def _fuzz(base_url: str, tokens: dict[str, str], ids: dict[str, str]) -> list[str]:
    """Fuzz every documented operation; return the labels of those fuzzed."""
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
    operations: list[Operation] = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):  # the document itself is broken
            raise result.err()
        operations.append(result.ok())
    operations.sort(key=lambda op: op.label == LOGOUT)
    with requests.Session() as session:
        for op in operations:
            token = tokens["logout"] if op.label == LOGOUT else tokens["main"]
            real = {name: value for name, value in ids.items() if "{" + name + "}" in op.path}
            _fuzz_operation(op, session, token, real)
    return [op.label for op in operations]


async def test_server_keeps_the_promises_of_its_openapi_document(world: World) -> None:
    doomed = await world.http.login(world.alice.username, "logged-out-by-the-fuzzer")
    group = await world.http.conversation(world.alice, "group", [world.bob])
    tokens = {"main": world.alice.token, "logout": doomed.token}
    ids = {"cid": group, "user_id": world.bob.user_id}
    labels = await asyncio.wait_for(
        asyncio.to_thread(_fuzz, world.server.http_url, tokens, ids), timeout=50
    )
    assert {LOGOUT, "GET /v1/users", "GET /v1/conversations/{cid}/messages"} <= set(labels)
