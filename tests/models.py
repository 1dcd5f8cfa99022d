"""Synced classes shared by the tests."""

from __future__ import annotations

from typing import Any

import synk


class Agent(synk.Object):
    """An agent on a map of 16×16 chunks."""

    type_key = "agent"
    x: int = 0
    y: int = 0
    name: str = ""
    tags: list[str] = []
    info: dict[str, Any] = {}

    @property
    def sub_key(self) -> str:
        return f"world:{self.x // 16}|{self.y // 16}"


class Note(synk.Object):
    """An object with a plain ``sub_key`` field."""

    type_key = "note"
    sub_key: str = "notes"
    text: str = ""
