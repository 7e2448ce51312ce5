"""The ``text`` content kind: what clients send today, ``{"text": "..."}``.

Registered as a feature like any other kind; its schema is the content head
itself, so validating a text costs the one parse every content gets.
"""

from __future__ import annotations

from tidings.core.content_kinds import ContentHead, ContentKind
from tidings.features import Feature


def _text(content: ContentHead) -> str:
    return content.text or ""


TEXT_KIND = ContentKind("text", ContentHead, _text, needs_text=True)
TEXT = Feature("text", content_kinds=(TEXT_KIND,))
