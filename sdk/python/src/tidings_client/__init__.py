"""The Tidings client SDK (asyncio).

Three layers, each usable on its own:

- :class:`ClientProtocol`: the sans-I/O protocol core (frames in, events out),
  for custom transports and for tests;
- :class:`TidingsClient`: a WebSocket session over aiohttp
  (``await TidingsClient.connect(ws_url, token)``);
- :class:`TidingsHTTP`: the REST API (accounts, conversations, history).

Message kinds (replies, mentions, edits, deletes, reactions) are built by
:func:`text_content` and friends and read with :func:`parse_content`;
:class:`ConversationView` folds a conversation's entries into what a person
sees, as the server's ``view=current`` does.

Only the names in ``__all__`` are public; modules are implementation detail.
Errors form one tree rooted at :class:`TidingsClientError` (see
:mod:`tidings_client.errors`).

Example::

    async with TidingsHTTP("http://localhost:8080") as http:
        login = await http.login("alice", "correct horse")
    async with await TidingsClient.connect("ws://localhost:8080/v1/ws", login.token) as client:
        ack = await client.send(conversation_id, "hello")
        async for event in client.events():
            if isinstance(event, Message):
                await client.delivered(event.conversation_id, event.seq)
"""

from tidings_client.backoff import Backoff, Jitter, cumulative_bounds, interval_bounds
from tidings_client.connection import ClientEvent, TidingsClient
from tidings_client.cursors import Cursors
from tidings_client.errors import (
    ConnectionClosedError,
    InvalidStateError,
    RequestTimeoutError,
    TidingsClientError,
)
from tidings_client.frames import (
    Ack,
    Content,
    ConversationState,
    ConversationSyncState,
    Hidden,
    Limits,
    Message,
    Notice,
    Presence,
    Receipt,
    ReceiptSummary,
    ReconcileConversation,
    Reconciled,
    ReconcileRequest,
    Reconnect,
    ServerError,
    Typing,
    Welcome,
)
from tidings_client.http import (
    Conversation,
    ConversationSummary,
    HiddenSet,
    LoginResult,
    Member,
    SearchPage,
    SearchResult,
    TidingsHTTP,
    User,
)
from tidings_client.kinds import (
    DeleteContent,
    DeletedContent,
    EditContent,
    KnownContent,
    MemberAdded,
    MemberRemoved,
    MembershipContent,
    ReactionContent,
    TextContent,
    delete_content,
    edit_content,
    parse_content,
    reaction_content,
    text_content,
)
from tidings_client.outbox import Outbox, OutboxEntry, OutboxStatus
from tidings_client.protocol import (
    ClientProtocol,
    Closed,
    Event,
    ProtocolViolation,
    RequestFailed,
    State,
    SyncComplete,
    SyncResult,
    UnknownFrame,
)
from tidings_client.push import (
    Notification,
    PushSubscribed,
    PushSubscription,
    verify_webhook,
)
from tidings_client.resilience import (
    Command,
    Connect,
    ConnectionChanged,
    Disconnect,
    EpochChanged,
    HistoryGap,
    LostRange,
    MessageSent,
    RequestSync,
    ResilienceConfig,
    ResilientCore,
    ResilientEvent,
    SendDelivered,
    SendFailed,
    SendReconcile,
    Transmit,
)
from tidings_client.resilient import AppEvent, ResilientClient
from tidings_client.store import MessageStore
from tidings_client.view import ConversationView, ReactionCount, ViewEntry

__all__ = [
    "Ack",
    "AppEvent",
    "Backoff",
    "ClientEvent",
    "ClientProtocol",
    "Closed",
    "Command",
    "Connect",
    "ConnectionChanged",
    "ConnectionClosedError",
    "Content",
    "Conversation",
    "ConversationState",
    "ConversationSummary",
    "ConversationSyncState",
    "ConversationView",
    "Cursors",
    "DeleteContent",
    "DeletedContent",
    "Disconnect",
    "EditContent",
    "EpochChanged",
    "Event",
    "Hidden",
    "HiddenSet",
    "HistoryGap",
    "InvalidStateError",
    "Jitter",
    "KnownContent",
    "Limits",
    "LoginResult",
    "LostRange",
    "Member",
    "MemberAdded",
    "MemberRemoved",
    "MembershipContent",
    "Message",
    "MessageSent",
    "MessageStore",
    "Notice",
    "Notification",
    "Outbox",
    "OutboxEntry",
    "OutboxStatus",
    "Presence",
    "ProtocolViolation",
    "PushSubscribed",
    "PushSubscription",
    "ReactionContent",
    "ReactionCount",
    "Receipt",
    "ReceiptSummary",
    "ReconcileConversation",
    "ReconcileRequest",
    "Reconciled",
    "Reconnect",
    "RequestFailed",
    "RequestSync",
    "RequestTimeoutError",
    "ResilienceConfig",
    "ResilientClient",
    "ResilientCore",
    "ResilientEvent",
    "SearchPage",
    "SearchResult",
    "SendDelivered",
    "SendFailed",
    "SendReconcile",
    "ServerError",
    "State",
    "SyncComplete",
    "SyncResult",
    "TextContent",
    "TidingsClient",
    "TidingsClientError",
    "TidingsHTTP",
    "Transmit",
    "Typing",
    "UnknownFrame",
    "User",
    "ViewEntry",
    "Welcome",
    "cumulative_bounds",
    "delete_content",
    "edit_content",
    "interval_bounds",
    "parse_content",
    "reaction_content",
    "text_content",
    "verify_webhook",
]
