"""End-to-end encrypted content is never indexed: search indexes only kinds
that declare indexable text, and an e2e kind declares none (its payload is
ciphertext the server cannot read; issue 18 will add the real kind)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Literal

import aiohttp
import msgspec

from tests.conftest import ServerFactory
from tests.e2e.messaging_wire import sent
from tests.features.search.wire import hits, search, until
from tests.wire import Http, Raw
from tidings.core.content_kinds import ContentKind
from tidings.features import Feature


class SealedContent(msgspec.Struct, frozen=True):
    kind: Literal["e2e"]
    ciphertext: str
    text: str | None = None
    """A careless client might put plain text beside the ciphertext: still not indexed."""


def _no_text(_: SealedContent) -> str:
    return ""


SEALED = Feature("sealed", content_kinds=[ContentKind("e2e", SealedContent, _no_text)])


async def test_e2e_messages_are_never_in_the_index(
    server_factory: ServerFactory, backend: str
) -> None:
    server = await server_factory(features=[SEALED])
    secret = f"sealed{uuid.uuid4().hex}"
    async with aiohttp.ClientSession() as session:
        http = Http(session, server.http_url)
        alice, bob = await http.account(), await http.account()
        cid = await http.conversation(alice, "direct", [bob])
        ws, _ = await Raw.connect(session, server.ws_url, alice.token)
        sealed = {"kind": "e2e", "ciphertext": secret, "text": f"{secret} in plain words"}
        await sent(ws, cid, sealed)
        marker = await sent(ws, cid, {"text": "marker after the sealed one"})
        await ws.close()
        # The indexer has handled everything up to the marker...
        await until(http, bob, "marker", lambda b: hits(b) == [(cid, marker)])
        # ...and the sealed message is nowhere in it.
        assert hits(await search(http, bob, secret)) == []
        assert hits(await search(http, bob, "plain words")) == []
        if backend == "sqlite":
            index = Path(server.node.settings.data_dir) / "search"
            assert list(index.glob("gen-*.db"))
            for path in index.iterdir():
                assert secret.encode() not in path.read_bytes(), path
