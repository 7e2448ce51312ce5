"""The public surface of tidings_client is exactly ``__all__``."""

from __future__ import annotations

import tidings_client


def test_all_names_exist_and_are_sorted() -> None:
    for name in tidings_client.__all__:
        assert hasattr(tidings_client, name), name
    assert list(tidings_client.__all__) == sorted(tidings_client.__all__)


def test_every_public_class_is_exported() -> None:
    public = {
        name
        for name, value in vars(tidings_client).items()
        if not name.startswith("_") and isinstance(value, type)
    }
    assert public <= set(tidings_client.__all__)
