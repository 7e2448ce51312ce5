"""Every file or folder the documentation names in backticks exists.

Files move (the SDK and the tools became distributions of their own, the
ports moved into the core); a document that still names the old place sends
its reader nowhere. A backticked token with a ``/`` that ends in ``.py``,
``.md``, ``.sql`` or ``.toml``, or in ``/``, is a path: from the repository's
root, or from ``src/tidings`` (the documents' shorthand, e.g.
``core/frames.py``). ``NNN_name`` stands for any numbered file.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BASES = (ROOT, ROOT / "src" / "tidings")
DOCUMENTS = sorted([*ROOT.glob("docs/*.md"), ROOT / "README.md", ROOT / "sdk/python/README.md"])
_BACKTICKED = re.compile(r"`([^`\s]+)`")
_PATH = re.compile(r"^[\w.\-/]*/[\w.\-/]*(\.py|\.md|\.sql|\.toml|/)$")


def _paths(document: Path) -> list[str]:
    text = document.read_text(encoding="utf-8")
    return [t for t in _BACKTICKED.findall(text) if not t.startswith("/") and _PATH.match(t)]


def _exists(path: str) -> bool:
    pattern = path.replace("NNN_name", "*")
    return any(any(base.glob(pattern)) for base in BASES)


@pytest.mark.parametrize("document", DOCUMENTS, ids=[str(d.relative_to(ROOT)) for d in DOCUMENTS])
def test_every_path_named_in_the_documents_exists(document: Path) -> None:
    assert [path for path in _paths(document) if not _exists(path)] == []
