"""The registries' rules, without a server: kinds and feature settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.feature_probe.feature import PROBE_KIND, ProbeSettings
from tidings.app import BUILT_IN
from tidings.core.content_kinds import ContentKinds
from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.frames import check_content
from tidings.features.host import content_kinds_of
from tidings.settings import load_section, load_settings


def test_a_kind_registered_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="'probe' is registered twice"):
        ContentKinds([PROBE_KIND, PROBE_KIND])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b'{"kind":"member_added","user_ids":[],"by":"u"}',
            "content kind 'member_added' cannot be sent by clients",
        ),
        (b'{"kind":"probe","note":"hi"}', "content kind 'probe' cannot be sent by clients"),
        (b'{"kind":"text"}', "text content needs a string field 'text'"),
        (b'{"text":5}', "invalid content: Expected `str | null`, got `int` - at `$.text`"),
        (b"[]", "invalid content: Expected `object`, got `array`"),
        (b"{", "content is not valid JSON"),
    ],
)
def test_built_in_kinds_answer_as_before(content: bytes, message: str) -> None:
    kinds = content_kinds_of(BUILT_IN)
    check_content(b'{"text":"hi","extra":1}', 100, kinds)
    with pytest.raises(TidingsError) as caught:
        check_content(content, 100, kinds)
    assert (caught.value.code, caught.value.message) == (ErrorCode.BAD_FRAME, message)


def test_indexable_text_comes_from_the_kind() -> None:
    kinds = content_kinds_of(BUILT_IN)
    kinds.register(PROBE_KIND)
    assert kinds.indexable_text(b'{"text":"hello"}') == "hello"
    assert kinds.indexable_text(b'{"kind":"probe","note":"a note"}') == "a note"
    assert kinds.indexable_text(b'{"kind":"member_removed","user_ids":["u"],"by":"u"}') == ""
    assert kinds.indexable_text(b'{"kind":"unknown"}') == ""


def test_feature_settings_come_from_its_toml_table_then_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "tidings.toml"
    config.write_text('[tidings]\nport = 9000\n\n[tidings.probe]\ngreeting = "from toml"\n')
    assert load_settings(str(config), env={}).port == 9000
    assert load_section(ProbeSettings, "probe", str(config), env={}).greeting == "from toml"
    env = {"TIDINGS_PROBE_GREETING": "from env"}
    assert load_section(ProbeSettings, "probe", str(config), env).greeting == "from env"
    assert load_section(ProbeSettings, "probe", None, env={}) == ProbeSettings()
    config.write_text('[tidings.probe]\ngreting = "typo"\n')
    with pytest.raises(ValueError, match="unknown setting 'greting'"):
        load_section(ProbeSettings, "probe", str(config), env={})
