"""The public surface of tidings.client is exactly ``__all__``."""

from __future__ import annotations

import tidings.client


def test_all_names_exist_and_are_sorted() -> None:
    for name in tidings.client.__all__:
        assert hasattr(tidings.client, name), name
    assert list(tidings.client.__all__) == sorted(tidings.client.__all__)


def test_every_public_class_is_exported() -> None:
    public = {
        name
        for name, value in vars(tidings.client).items()
        if not name.startswith("_") and isinstance(value, type)
    }
    assert public <= set(tidings.client.__all__)
