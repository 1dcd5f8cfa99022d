"""Synced classes for ``synk types``: every supported annotation, with docs."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import synk

Color = Literal["red", "green", "blue"]


class Every(synk.Object):
    """Every annotation synk supports.

    The second paragraph of the docs, with ``code`` and a */ to escape.
    """

    type_key = "every"
    #: The interest area, as a plain field.
    sub_key: str = "k"
    n: int = 0  #: A count.
    f: float = 0.0
    s: str = ""
    b: bool = False
    #: An int, or nothing yet;
    #: two comment lines make one doc.
    maybe: int | None = None
    color: Color = "red"
    mixed: Literal["a", 1, True, None] = None
    tags: list[str] = []
    many: list[int | None] = []
    path: tuple[float, ...] = ()
    pos: tuple[float, str] = (0.0, "")
    scores: dict[str, int] = {}
    nested: dict[str, list[dict[str, bool]]] = {}
    either: int | list[str] = 0
    anything: Any = None
    documented: Annotated[float, "Documented with Annotated."] = 0.0
    speed: ClassVar[float] = 1.0
    _cache: dict[str, int]


class Plain(synk.Object):
    type_key = "plain-2"
    x: int = 0

    @property
    def sub_key(self) -> str:
        return "plain"
