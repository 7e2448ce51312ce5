"""The chat service: conversations, sending, syncing and cursors.

This is the one place where the rules of the product live (who may post
where, how a sync is paged, when a receipt is due). Transports call it and
turn its results and :class:`TidingsError` rejections into frames or HTTP
answers; backends are reached only through the store and bus
ports, so the same code runs on SQLite and one process or on PostgreSQL
and Redis across nodes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Literal, NamedTuple, Protocol

import msgspec

from tidings.core.append_order import AppendOrder
from tidings.core.content_kinds import ClientKind, ContentHead, ContentKinds, MembershipEvent
from tidings.core.conversations import new_conversation
from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.events import (
    JoinedEvent,
    MessageEvent,
    ReceiptEvent,
    RevokedEvent,
    conversation_topic,
    user_topic,
)
from tidings.core.frames import Ack, Msg, check_content, encode, parse_count
from tidings.core.ids import new_id, now_ms
from tidings.core.models import (
    AppendResult,
    Conversation,
    ConversationKind,
    ConversationState,
    CursorState,
    Device,
    Member,
    Message,
    NewMessage,
    ReceiptCounts,
    ReconcileGap,
    ReconcileReport,
    Restore,
    Role,
)
from tidings.core.ports.store.accounts import AccountStore
from tidings.core.ports.store.conversations import ConversationStore
from tidings.core.ports.store.cursors import CursorStore
from tidings.core.ports.store.hidden import HiddenStore
from tidings.core.ports.store.messages import MessageLog
from tidings.core.ports.store.restores import RestoreStore
from tidings.core.publisher import Publisher
from tidings.core.ratelimit import KeyedRateLimiter
from tidings.core.send_rules import SendContext
from tidings.core.trace import SendStamps
from tidings.core.view import ViewEntry, fold
from tidings.settings import Settings

log = logging.getLogger("tidings.messages")

VIEW_READS = 8
"""Most history reads one ``view=current`` page makes to fill up past entries
the caller hid (it then returns what it has; the client pages on)."""


class ChatStore(
    AccountStore, ConversationStore, MessageLog, CursorStore, RestoreStore, HiddenStore, Protocol
):
    """What the chat service uses of the store: every aggregate a client touches
    (accounts only to revoke a device at logout), not the change-log consumers
    nor the lifecycle, which belong to the node."""


class _Page(NamedTuple):
    after_seq: int
    limit: int
    newest_first: bool


class SyncAnswer(msgspec.Struct, frozen=True):
    messages: list[Message]
    conversations: list[ConversationState]
    token: str
    more: bool


def msg_frame(message: Message) -> bytes:
    """Encode a stored message as the ``msg`` frame every recipient gets."""
    return encode(
        Msg(
            conversation_id=message.conversation_id,
            seq=message.seq,
            message_id=message.message_id,
            sender_id=message.sender_id,
            client_msg_id=message.client_msg_id,
            ts=message.ts,
            content=msgspec.Raw(message.content),
        )
    )


def ack(result: AppendResult, ref: str | None = None) -> Ack:
    """The ``ack`` of a send, the one way both transports answer one (HTTP
    sends its fields without the frame's ``type`` and ``id``). A plain
    function that allocates only the frame, as the gateway did inline: it runs
    once per message on the send path."""
    message = result.message
    return Ack(
        client_msg_id=message.client_msg_id,
        conversation_id=message.conversation_id,
        seq=message.seq,
        message_id=message.message_id,
        ts=message.ts,
        duplicate=result.duplicate,
        id=ref,
    )


def _uncounted() -> None:
    """The persisted-message count of a process that keeps none (an admin command)."""


class ChatService:
    def __init__(
        self,
        store: ChatStore,
        publisher: Publisher,
        settings: Settings,
        kinds: ContentKinds,
        count_persisted: Callable[[], None] = _uncounted,
    ) -> None:
        """``kinds`` are the content kinds this node's clients may send (features
        add theirs); ``count_persisted`` is called once for every message a send
        stores (not for a duplicate): the node's ``messages_persisted`` metric."""
        self._store = store
        self.content_kinds = kinds
        self._publisher = publisher
        self._count_persisted = count_persisted
        self._settings = settings
        self._send_limiter = KeyedRateLimiter(
            settings.send_rate_per_s, settings.send_burst, "messages"
        )
        self._moderators = frozenset(
            name.strip().lower() for name in settings.moderators.split(",") if name.strip()
        )

    @property
    def epoch(self) -> str:
        return self._store.epoch

    async def _publish_message(
        self,
        message: Message,
        *,
        origin_session: str = "",
        membership_changed: bool = False,
        extra_recipients: Sequence[str] = (),
        added: Sequence[str] = (),
    ) -> bool:
        """Publish a stored message, with its ``msg`` frame encoded once for all
        nodes; True if it went out now (False: held until the bus is back)."""
        return await self._publisher.publish(
            conversation_topic(message.conversation_id),
            MessageEvent(
                conversation_id=message.conversation_id,
                seq=message.seq,
                sender_id=message.sender_id,
                origin_session=origin_session,
                frame=msg_frame(message),
                membership_changed=membership_changed,
                extra_recipients=list(extra_recipients),
                added=list(added),
            ),
        )

    async def logout(self, device: Device) -> None:
        """Revoke the device's token and end its open sessions on every node."""
        await self._store.revoke_device(device.device_id)
        await self._publisher.publish(
            user_topic(device.user_id), RevokedEvent(device.user_id, device.device_id)
        )

    # -- conversations -----------------------------------------------------------

    async def create_conversation(
        self, creator: Device, kind: ConversationKind, members: Sequence[str], title: str | None
    ) -> tuple[Conversation, bool]:
        others = sorted(new_conversation(kind, creator.user_id, members).others)
        if len(others) + 1 > self._settings.max_group_members:
            raise TidingsError(
                ErrorCode.BAD_REQUEST,
                f"a group has at most {self._settings.max_group_members} members",
            )
        conversation, created = await self._store.create_conversation(
            kind, creator.user_id, others, title, now_ms()
        )
        if created:
            for user_id in [creator.user_id, *others]:
                await self._publisher.publish(
                    user_topic(user_id), JoinedEvent(conversation.conversation_id, user_id)
                )
        return conversation, created

    async def _require_member(self, user_id: str, conversation_id: str) -> list[Member]:
        members = await self._store.get_members(conversation_id)
        if not any(m.user_id == user_id for m in members):
            raise TidingsError(ErrorCode.NOT_MEMBER, "you are not a member of this conversation")
        return members

    async def get_members(self, user_id: str, conversation_id: str) -> list[Member]:
        return await self._require_member(user_id, conversation_id)

    async def get_conversation(
        self, user_id: str, conversation_id: str
    ) -> tuple[Conversation, list[Member]]:
        """A conversation and its members, for its members only (an unknown
        conversation has none, so it is ``not_member`` too: ids are not probed)."""
        members = await self._require_member(user_id, conversation_id)
        conversation = await self._store.get_conversation(conversation_id)
        if conversation is None:
            raise TidingsError(ErrorCode.NOT_FOUND, "no such conversation")
        return conversation, members

    async def list_conversations(self, device: Device) -> list[ConversationState]:
        states, _ = await self._store.list_conversations(device.user_id, device.device_id)
        return states

    async def change_members(
        self, actor: Device, conversation_id: str, add: Sequence[str], remove: Sequence[str]
    ) -> Message | None:
        """Add or remove group members; the change joins the seq stream as a message."""
        conversation = await self._store.get_conversation(conversation_id)
        if conversation is None:
            raise TidingsError(ErrorCode.NOT_FOUND, "no such conversation")
        members = await self._require_member(actor.user_id, conversation_id)
        if conversation.kind is not ConversationKind.GROUP:
            raise TidingsError(ErrorCode.BAD_REQUEST, "members of a direct conversation are fixed")
        is_admin = any(m.user_id == actor.user_id and m.role is Role.ADMIN for m in members)
        leaving_only = not add and list(remove) == [actor.user_id]
        if not is_admin and not leaving_only:
            raise TidingsError(ErrorCode.FORBIDDEN, "only a group admin can change its members")
        current = {m.user_id for m in members}
        added = sorted(set(add) - current)
        removed = sorted(set(remove) & current)
        if len(current) + len(added) - len(removed) > self._settings.max_group_members:
            raise TidingsError(
                ErrorCode.BAD_REQUEST,
                f"a group has at most {self._settings.max_group_members} members",
            )
        kind: Literal["member_added", "member_removed"] = (
            "member_added" if added else "member_removed"
        )
        content = encode(MembershipEvent(kind, added or removed, actor.user_id))
        event = NewMessage(
            conversation_id=conversation_id,
            sender_id=actor.user_id,
            device_id=actor.device_id,
            client_msg_id=new_id("sys"),
            content=content,
            ts=now_ms(),
            kind=kind,
        )
        result = await self._store.change_members(conversation_id, added, removed, event)
        if result is None:
            return None
        message = result.message
        for user_id in added:
            await self._publisher.publish(
                user_topic(user_id), JoinedEvent(conversation_id, user_id, message.seq - 1)
            )
        await self._publish_message(
            message, membership_changed=True, extra_recipients=removed, added=added
        )
        self._log_message(message, duplicate=False)
        return message

    async def history(
        self,
        user_id: str,
        conversation_id: str,
        after_seq: int,
        before_seq: int | None,
        limit: int,
    ) -> list[Message]:
        page = await self._page(user_id, conversation_id, after_seq, before_seq, limit)
        return await self._store.history(
            conversation_id, page.after_seq, before_seq, page.limit, newest_first=page.newest_first
        )

    async def _page(
        self,
        user_id: str,
        conversation_id: str,
        after_seq: int,
        before_seq: int | None,
        limit: int,
    ) -> _Page:
        """A history page's bounds for ``user_id`` (members only): from where they
        may read, at most ``history_page_limit``; with only ``before_seq``, the
        newest entries below it (scrolling back)."""
        start = await self.history_start(user_id, conversation_id)
        return _Page(
            max(after_seq, start - 1),
            max(1, min(limit, self._settings.history_page_limit)),
            after_seq == 0 and before_seq is not None,
        )

    async def current_view(
        self,
        user_id: str,
        conversation_id: str,
        after_seq: int,
        before_seq: int | None,
        limit: int,
    ) -> list[ViewEntry]:
        """History as a person sees it now (``?view=current``): side entries
        folded into their targets, the entries ``user_id`` hid left out. Pages
        like :meth:`history`, by the seqs of what it returns; a page fills up
        past hidden entries (a bounded number of reads)."""
        bounds = await self._page(user_id, conversation_id, after_seq, before_seq, limit)
        limit, newest_first = bounds.limit, bounds.newest_first
        hidden = set(await self._store.hidden_seqs(user_id, conversation_id))
        low, high = bounds.after_seq, before_seq
        shown: list[Message] = []
        for _ in range(VIEW_READS):
            page = await self._store.history(
                conversation_id, low, high, limit, newest_first=newest_first, primary_only=True
            )
            kept = [m for m in page if m.seq not in hidden]
            shown = kept[-(limit - len(shown)) :] + shown if newest_first else shown + kept
            if len(page) < limit or len(shown) >= limit:
                break
            if newest_first:
                high = page[0].seq
            else:
                low = page[-1].seq
        shown = shown[-limit:] if newest_first else shown[:limit]
        if not shown:
            return []
        side = await self._store.related(conversation_id, shown[0].seq, shown[-1].seq)
        return fold(shown, side, user_id)

    async def history_start(self, user_id: str, conversation_id: str) -> int:
        """The first seq ``user_id`` may read (``NOT_MEMBER`` if not a member):
        above the retention purge and, for a later joiner of a group that
        shows history from the join, their ``member_added``."""
        members = await self._require_member(user_id, conversation_id)
        conversation = await self._store.get_conversation(conversation_id)
        purged = 0 if conversation is None else conversation.purged_seq
        member = next(m for m in members if m.user_id == user_id)
        return max(purged, member.visible_after) + 1

    # -- messages ---------------------------------------------------------------

    async def send(
        self,
        device: Device,
        conversation_id: str,
        client_msg_id: str,
        content: bytes,
        origin_session: str = "",
        order: AppendOrder | None = None,
        stamps: SendStamps | None = None,
    ) -> AppendResult:
        """Persist a message (at most once per client_msg_id) and fan it out.

        A kind with a rule (who may edit, delete, ...) is judged before the
        append; the store checks its target again inside the append. ``order``
        (one per connection) keeps the connection's appends in the order its
        sends arrived although a rule awaits reads first. ``stamps``, when the
        send is traced, gets the times it was stored and published."""
        head, kind = check_content(content, self._settings.max_content_bytes, self.content_kinds)
        self._send_limiter.check(device.user_id)
        now = now_ms()
        ruled = kind.rule is not None and (kind.rule_applies is None or kind.rule_applies(head))
        if ruled or (order is not None and order.waiting()):
            refused = await self._before_append(
                device, conversation_id, client_msg_id, head, kind, now, ruled, order
            )
            if refused is not None:
                return refused
        mentions: tuple[str, ...] = ()
        if head.mentions or head.mention_all:
            mentions = (*(("*",) if head.mention_all else ()), *(head.mentions or ()))
        # Positional: this runs for every message (the fields are NewMessage's, in order).
        result = await self._store.append(
            NewMessage(
                conversation_id,
                device.user_id,
                device.device_id,
                client_msg_id,
                content,
                now,
                kind.stored_kind,
                head.target if kind.targets else None,
                kind.redacts,
                mentions,
            )
        )
        message = result.message
        if not result.duplicate:
            self._count_persisted()
            persisted = time.time() if stamps is not None else 0.0
            published = await self._publish_message(message, origin_session=origin_session)
            if stamps is not None:
                stamps.persisted = persisted
                if published:
                    stamps.published = time.time()
        self._log_message(message, duplicate=result.duplicate)
        return result

    async def _before_append(
        self,
        device: Device,
        conversation_id: str,
        client_msg_id: str,
        head: ContentHead,
        kind: ClientKind,
        now: int,
        ruled: bool,
        order: AppendOrder | None,
    ) -> AppendResult | None:
        """What a send awaits before its append (the slow path): its kind's rule,
        and its turn behind the connection's earlier sends. Its own turn ends
        on return, with no await between that and the caller's append."""
        previous, turn = order.take_turn() if order is not None else (None, None)
        try:
            if ruled:
                refused = await self._judge(device, conversation_id, client_msg_id, head, kind, now)
                if refused is not None:
                    return refused
            if previous is not None:
                await previous
        finally:
            if turn is not None:
                turn.set_result(None)
        return None

    async def _judge(
        self,
        device: Device,
        conversation_id: str,
        client_msg_id: str,
        head: ContentHead,
        kind: ClientKind,
        now: int,
    ) -> AppendResult | None:
        """Run the kind's rule. A refused send may be the retry of one stored
        before its target changed (a delete, retried after it deleted its
        target): then it is answered as the duplicate it is, as every retry."""
        assert kind.rule is not None
        context = SendContext(
            self._store, device, conversation_id, now, self._settings, self._moderators
        )
        try:
            await kind.rule(head, context)
        except TidingsError:
            stored = await self._store.find_sent(device.user_id, client_msg_id)
            if stored is None:
                raise
            self._log_message(stored, duplicate=True)
            return AppendResult(stored, duplicate=True)
        return None

    def _log_message(self, message: Message, duplicate: bool) -> None:
        if log.isEnabledFor(logging.INFO):
            log.info(
                "message stored" if not duplicate else "duplicate send",
                extra={
                    "conversation_id": message.conversation_id,
                    "seq": message.seq,
                    "message_id": message.message_id,
                    "client_msg_id": message.client_msg_id,
                    "sender_id": message.sender_id,
                    "duplicate": duplicate,
                },
            )

    # -- sync and cursors ---------------------------------------------------------

    def _parse_since(self, since: str | None) -> int:
        if since is None:
            return 0
        epoch, _, version_text = since.rpartition(".")
        version = parse_count(version_text)
        if not epoch or version is None:
            raise TidingsError(ErrorCode.BAD_FRAME, "malformed sync token")
        # A token from another epoch predates a restore: list everything.
        return version if epoch == self._store.epoch else 0

    async def sync(
        self,
        device: Device,
        since: str | None,
        cursors: Mapping[str, int] | None,
        limit: int | None,
    ) -> SyncAnswer:
        """What the device misses: changed conversations since the token, from
        its cursors (explicit, else the device's delivered cursor), paged."""
        changed_after = self._parse_since(since)
        budget = min(limit or self._settings.sync_page_limit, self._settings.sync_page_limit)
        states, version = await self._store.list_conversations(
            device.user_id, device.device_id, changed_after
        )
        cursors = cursors or {}
        listed = {s.conversation_id for s in states}
        if any(cid not in listed for cid in cursors):
            everything, _ = await self._store.list_conversations(device.user_id, device.device_id)
            states += [
                s
                for s in everything
                if s.conversation_id in cursors and s.conversation_id not in listed
            ]
        messages: list[Message] = []
        more = False
        for state in states:
            start = max(
                cursors.get(state.conversation_id, state.delivered_seq), state.history_start - 1
            )
            if start >= state.last_seq:
                continue
            if budget <= 0:
                more = True
                break
            page = await self._store.history(state.conversation_id, start, None, budget)
            messages.extend(page)
            budget -= len(page)
            if start + len(page) < state.last_seq:
                more = True
        token = f"{self._store.epoch}.{changed_after if more else version}"
        return SyncAnswer(messages=messages, conversations=states, token=token, more=more)

    async def advance_cursors(
        self,
        device: Device,
        conversation_id: str,
        delivered_seq: int | None,
        read_seq: int | None,
    ) -> CursorState:
        state = await self._store.advance_cursors(
            conversation_id, device.user_id, device.device_id, delivered_seq, read_seq
        )
        if state.moved:
            await self._publisher.publish(
                conversation_topic(conversation_id),
                ReceiptEvent(
                    conversation_id=conversation_id,
                    user_id=device.user_id,
                    delivered_seq=state.delivered_seq,
                    read_seq=state.read_seq,
                ),
            )
        return state

    # -- restores and the node's own upkeep ----------------------------------------

    async def latest_restore(self) -> Restore | None:
        """The last restore of the store, for the ``restored`` notice."""
        return await self._store.latest_restore()

    async def reconcile(self, device: Device, epoch: str, gaps: Sequence[ReconcileGap]) -> None:
        """Keep a device's report of what it holds beyond a restore, for ops
        review (``tidings restore report``); only a report for the current epoch."""
        if epoch != self.epoch:
            raise TidingsError(
                ErrorCode.BAD_FRAME,
                f"reconcile is for epoch {epoch!r}; the server's is {self.epoch!r}",
            )
        report = ReconcileReport(epoch, device.device_id, device.user_id, now_ms(), list(gaps))
        await self._store.save_reconcile_report(report)

    async def resend(
        self, conversation_id: str, after_seq: int, before_seq: int | None, limit: int
    ) -> list[Message]:
        """Messages to give a connection again (redelivery, repair after a bus
        gap). No membership check, unlike :meth:`history`: the node asks only
        for ranges it already sent the connection live, or for conversations
        the device's own listing names."""
        return await self._store.history(conversation_id, after_seq, before_seq, limit)

    async def receipt_counts(self, conversation_id: str, seq: int) -> ReceiptCounts:
        """How many members have delivered / read ``seq`` (a large group's
        coalesced receipt summary, sent only to the message's sender)."""
        return await self._store.receipt_counts(conversation_id, seq)
