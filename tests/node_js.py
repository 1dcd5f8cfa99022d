"""Asking the JS client's own modules, from Python tests: where a constant has a Python and a JS copy, a test holds them equal."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
from typing import Any

import pytest

CLIENT = pathlib.Path(__file__).resolve().parent.parent / "client"


def js(module: str, expression: str, data: Any = None) -> Any:
    """``expression`` evaluated by node with ``module`` (a path under client/) imported as ``m`` and
    ``data`` (JSON) as ``data``; its value, as JSON. Skips the test where node is not installed."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    script = (
        f"import * as m from {json.dumps((CLIENT / module).as_uri())};"
        "let d='';process.stdin.on('data',c=>d+=c).on('end',()=>{const data=JSON.parse(d);"
        f"console.log(JSON.stringify({expression}))}})"
    )
    out = subprocess.run(
        [node, "--input-type=module", "-e", script], input=json.dumps(data), capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(out.stdout)
