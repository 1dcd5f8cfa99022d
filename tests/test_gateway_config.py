"""The gateway's settings: documented in one table, checked at construction."""

from __future__ import annotations

import pydoc
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

import synk
from synk.gateway import Gateway, GatewayConfig, GatewaySettings
from synk.gateway.config import _KINDS

DOCS = Path(__file__).resolve().parents[1] / "docs" / "gateway.md"


def test_a_misspelled_setting_names_itself_and_the_valid_ones() -> None:
    with pytest.raises(synk.ConfigError) as err:
        Gateway("memory://", authentification=lambda h: h)  # type: ignore[call-arg]
    text = str(err.value)
    assert "'authentification' is not a gateway setting (did you mean 'authenticate'?)" in text
    assert "GatewayConfig" not in text
    for name in ("authenticate", "authorize", "origins", "max_keys", "static_dir"):
        assert name in text


@pytest.mark.parametrize(
    ("setting", "value", "kind"),
    [
        ("authenticate", 1, "None or a function (handshake) -> identity"),
        ("authorize", "yes", "None or a function (identity, key) -> bool"),
        ("max_keys", "10", "a positive integer"),
        ("max_keys", 0, "a positive integer"),
        ("rate", True, "a positive number"),
        ("ping_interval", -1, "None or a positive number"),
        ("write_interval", -1, "a number of seconds from 0 to 10"),
        ("write_interval", None, "a number of seconds from 0 to 10"),
        ("origins", ["https://a.example", 3], 'None, "*", or a list of origins'),
        ("forward_to_world", "no", "True or False"),
        ("deflate", 1, "True or False"),
        ("static_dir", 42, "None or a folder's path"),
    ],
)
def test_a_setting_of_the_wrong_kind_is_refused_at_once(setting: str, value: Any, kind: str) -> None:
    with pytest.raises(synk.ConfigError, match=re.escape(f"gateway setting {setting} is {value!r}; it must be {kind}")):
        Gateway("memory://", **{setting: value})


def test_every_setting_is_typed_checked_and_documented() -> None:
    names = [f.name for f in fields(GatewayConfig)]
    assert list(GatewaySettings.__annotations__) == names
    assert list(_KINDS) == names
    table = DOCS.read_text().split("## Settings", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", table, re.MULTILINE))
    assert documented == set(names), documented ^ set(names)
    for name in names:
        assert f"``{name}``" in (GatewayConfig.__doc__ or ""), name


def test_help_on_the_gateway_shows_its_settings() -> None:
    text = pydoc.plain(pydoc.render_doc(Gateway))
    assert "**settings" in text
    for name in ("origins", "authenticate", "authorize", "forward_to_world", "static_dir", "docs/gateway.md"):
        assert name in text
