"""ConversationView folds edits, deletes and reactions into the messages a
person sees, the way the server's ``view=current`` does, whatever order the
entries arrive in. Pure: messages are built here, no server."""

from __future__ import annotations

import itertools
import random

import pytest

from tidings_client import (
    Content,
    ConversationView,
    Message,
    ReactionCount,
    ViewEntry,
    delete_content,
    edit_content,
    reaction_content,
    text_content,
)

ME = "u-me"
BOB = "u-bob"
CAROL = "u-carol"
CID = "c1"


def entry(seq: int, content: Content, sender: str = BOB, cid: str = CID) -> Message:
    return Message(cid, seq, f"m{seq}", sender, f"cm{seq}", 1000 + seq, content)


def fold(messages: list[Message], me: str = ME) -> list[ViewEntry]:
    view = ConversationView(me)
    view.apply_all(messages)
    return view.entries()


def test_text_messages_are_entries_with_no_changes() -> None:
    first = entry(1, text_content("hi", reply_to=None))
    assert fold([first]) == [ViewEntry(1, "m1", BOB, "cm1", 1001, {"text": "hi"})]


def test_side_entries_are_folded_in_not_listed() -> None:
    stream = [
        entry(1, text_content("hi")),
        entry(2, edit_content(1, "hello"), sender=BOB),
        entry(3, reaction_content(1, "👍"), sender=ME),
        entry(4, text_content("yo")),
    ]
    assert [e.seq for e in fold(stream)] == [1, 4]


def test_latest_edit_gives_text_and_edited_ts_and_keeps_other_fields() -> None:
    stream = [
        entry(1, text_content("hi", reply_to=None, mentions=[ME])),
        entry(2, text_content("re", reply_to=1)),
        entry(3, edit_content(2, "first edit")),
        entry(4, edit_content(2, "second edit")),
    ]
    replied = fold(stream)[1]
    assert replied.content == {"text": "second edit", "reply_to": 1}
    assert (replied.edited, replied.edited_ts) == (True, 1004)
    assert fold(stream)[0].content == {"text": "hi", "mentions": [ME]}


def test_edit_arriving_before_its_target_applies_once_the_target_is_held() -> None:
    view = ConversationView(ME)
    view.apply(entry(5, edit_content(2, "later text")))
    assert view.entries() == []
    view.apply(entry(2, text_content("early text")))
    [shown] = view.entries()
    assert shown.content == {"text": "later text"}
    assert shown.edited


def test_delete_replaces_content_drops_reactions_and_edits() -> None:
    stream = [
        entry(1, text_content("oops")),
        entry(2, edit_content(1, "oops!")),
        entry(3, reaction_content(1, "😂"), sender=CAROL),
        entry(4, delete_content(1)),
    ]
    [shown] = fold(stream)
    assert shown == ViewEntry(1, "m1", BOB, "cm1", 1001, {"kind": "deleted"}, deleted=True)


def test_an_edit_after_the_delete_does_not_bring_the_text_back() -> None:
    stream = [
        entry(1, text_content("oops")),
        entry(2, delete_content(1)),
        entry(3, edit_content(1, "resurrected")),
    ]
    [shown] = fold(stream)
    assert shown.deleted
    assert shown.content == {"kind": "deleted"}
    assert not shown.edited


def test_a_device_that_syncs_later_sees_tombstones_and_folds_them_the_same() -> None:
    live = [
        entry(1, text_content("secret")),
        entry(2, edit_content(1, "still secret")),
        entry(3, delete_content(1)),
    ]
    # What the server stores once the delete is done: the target and its
    # edits are tombstones.
    later = [
        entry(1, {"kind": "deleted"}),
        entry(2, {"kind": "edit", "target": 1, "deleted": True}),
        entry(3, delete_content(1)),
    ]
    assert fold(live) == fold(later)
    # A tombstoned edit alone (the delete entry not fetched yet) already shows it deleted.
    assert fold([live[0], later[1]])[0].deleted


def test_reaction_counts_sort_by_count_then_emoji_and_mark_mine() -> None:
    stream = [
        entry(1, text_content("party")),
        entry(2, reaction_content(1, "🎉"), sender=BOB),
        entry(3, reaction_content(1, "👍"), sender=CAROL),
        entry(4, reaction_content(1, "👍"), sender=ME),
        entry(5, reaction_content(1, "❤"), sender=CAROL),
        entry(6, reaction_content(1, "😢", on=False), sender=BOB),
    ]
    [shown] = fold(stream)
    assert shown.reactions == (
        ReactionCount("👍", 2, me=True),
        ReactionCount("❤", 1),
        ReactionCount("🎉", 1),
    )


def test_toggles_from_two_devices_of_one_user_converge_in_any_arrival_order() -> None:
    # Phone: on (seq 2), laptop: off (seq 3), phone: on again (seq 5); the
    # highest seq decides, whatever order the device receives them in.
    target = entry(1, text_content("vote"))
    toggles = [
        entry(2, reaction_content(1, "👍", on=True), sender=ME),
        entry(3, reaction_content(1, "👍", on=False), sender=ME),
        entry(5, reaction_content(1, "👍", on=True), sender=ME),
        entry(4, reaction_content(1, "👍", on=True), sender=BOB),
    ]
    expected = (ReactionCount("👍", 2, me=True),)
    for order in itertools.permutations([target, *toggles]):
        [shown] = fold(list(order))
        assert shown.reactions == expected, order
    off_last = [*toggles[:2], entry(6, reaction_content(1, "👍", on=False), sender=ME)]
    [shown] = fold([target, *reversed(off_last)])
    assert shown.reactions == ()


def test_any_arrival_order_gives_the_same_view() -> None:
    stream = [
        entry(1, text_content("a")),
        entry(2, {"kind": "member_added", "user_ids": [CAROL], "by": BOB}),
        entry(3, edit_content(1, "a2"), sender=BOB),
        entry(4, reaction_content(1, "👍"), sender=CAROL),
        entry(5, text_content("b"), sender=CAROL),
        entry(6, delete_content(5), sender=CAROL),
        entry(7, reaction_content(1, "👍", on=False), sender=CAROL),
        entry(8, reaction_content(1, "👀"), sender=ME),
        entry(9, edit_content(1, "a3"), sender=BOB),
    ]
    expected = fold(stream)
    rng = random.Random(7)
    for _ in range(50):
        shuffled = list(stream)
        rng.shuffle(shuffled)
        assert fold(shuffled) == expected
    assert [(e.seq, e.content) for e in expected] == [
        (1, {"text": "a3"}),
        (2, {"kind": "member_added", "user_ids": [CAROL], "by": BOB}),
        (5, {"kind": "deleted"}),
    ]
    assert expected[0].reactions == (ReactionCount("👀", 1, me=True),)


def test_duplicates_by_seq_are_ignored() -> None:
    view = ConversationView(ME)
    assert view.apply(entry(1, text_content("x")))
    assert view.apply(entry(2, reaction_content(1, "👍"), sender=CAROL))
    # The same seq again (redelivery): not counted twice, not replacing.
    assert not view.apply(entry(2, reaction_content(1, "👍"), sender=CAROL))
    assert not view.apply(entry(1, text_content("other")))
    [shown] = view.entries()
    assert shown.content == {"text": "x"}
    assert shown.reactions == (ReactionCount("👍", 1),)


def test_hide_leaves_entries_out_and_unhide_brings_them_back() -> None:
    view = ConversationView(ME)
    view.apply_all([entry(seq, text_content(str(seq))) for seq in (1, 2, 3)])
    view.hide([1, 3])
    assert [e.seq for e in view.entries()] == [2]
    assert view.hidden == frozenset({1, 3})
    view.unhide([3])
    assert [e.seq for e in view.entries()] == [2, 3]
    # Hiding before the message arrives works too.
    view.hide([4])
    view.apply(entry(4, text_content("4")))
    assert [e.seq for e in view.entries()] == [2, 3]


def test_membership_events_and_unknown_kinds_are_entries_with_raw_content() -> None:
    stream = [
        entry(1, {"kind": "member_removed", "user_ids": [CAROL], "by": CAROL}, sender=CAROL),
        entry(2, {"kind": "poll", "question": "lunch?"}),
        entry(3, reaction_content(2, "🍕"), sender=CAROL),
        entry(4, {"kind": "edit", "target": "not a seq"}),
    ]
    shown = fold(stream)
    assert [e.content for e in shown] == [
        {"kind": "member_removed", "user_ids": [CAROL], "by": CAROL},
        {"kind": "poll", "question": "lunch?"},
    ]
    assert shown[1].reactions == (ReactionCount("🍕", 1),)


def test_one_view_per_conversation() -> None:
    view = ConversationView(ME)
    view.apply(entry(1, text_content("x")))
    with pytest.raises(ValueError, match="applied to the view of c1"):
        view.apply(entry(1, text_content("x"), cid="c2"))
