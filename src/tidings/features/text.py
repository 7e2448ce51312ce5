"""The ``text`` content kind: ``{"text": "...", "reply_to"?, "mentions"?,
"mention_all"?, "forwarded"?}``.

Registered as a feature like any other kind; its schema is the content head
itself, so validating a plain text costs the one parse every content gets,
and its rule (``features/messaging/kinds.py``) runs only for replies and
mentions.
"""

from __future__ import annotations

from tidings.core.content_kinds import ContentHead, ContentKind
from tidings.features import Feature
from tidings.features.messaging.kinds import text_needs_rule, text_rule


def _text(content: ContentHead) -> str:
    return content.text or ""


TEXT_KIND = ContentKind(
    "text", ContentHead, _text, needs_text=True, rule=text_rule, rule_applies=text_needs_rule
)
TEXT = Feature("text", content_kinds=(TEXT_KIND,))
