"""The pure core imports no I/O machinery: no asyncio, redis, websockets or socket."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PURE = [
    "synk.core.model",
    "synk.core.fieldtypes",
    "synk.core.typegen",
    "synk.core.batch",
    "synk.core.messages",
    "synk.core.names",
    "synk.core.values",
    "synk.errors",
]
IO = ["asyncio", "redis", "websockets", "socket"]


def imported_after(statements: str) -> list[str]:
    """Run ``statements`` in a fresh interpreter; the I/O modules it then has loaded."""
    code = f"import json, sys\n{statements}\nprint(json.dumps(sorted(m for m in {IO!r} if m in sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


def test_the_interpreter_alone_loads_none_of_them() -> None:
    # The check below means something only if a bare interpreter is clean.
    assert imported_after("") == []


def test_core_imports_no_io() -> None:
    assert imported_after("\n".join(f"import {m}" for m in PURE)) == []


@pytest.mark.parametrize("module", PURE)
def test_each_core_module_alone(module: str) -> None:
    assert imported_after(f"import {module}") == []


def test_top_level_package_and_its_pure_names() -> None:
    statements = "import synk\nfrom synk import Object, SynkError, ValidationError, WriteError, Failure"
    assert imported_after(statements) == []


def test_core_still_works_without_io() -> None:
    statements = """
import synk
from synk.core.batch import plan, record
class Thing(synk.Object):
    type_key = "thing"
    n: int = 0
    sub_key: str = "k"
t = Thing(id="t1")
t.n = 1
[(key, op)] = list(plan([t], [], []).writes())
assert record(key, op).startswith(b'{"method":"add"')
"""
    assert imported_after(statements) == []


def test_the_io_layer_does_load_them() -> None:
    # The lazy attributes of ``synk`` do pull in the world; this shows the
    # check above can fail.
    assert "asyncio" in imported_after("import synk\nsynk.World")
