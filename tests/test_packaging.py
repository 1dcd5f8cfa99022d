"""What a built wheel and sdist carry: the Lua scripts, the JS client, the demo page, the inspector's page."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "client"
#: Nothing a build needs: the tree is copied without these, so building leaves the checkout clean.
_SKIP = shutil.ignore_patterns(".git", ".venv", "node_modules", "build", "dist", "*.egg-info", "__pycache__", "artifacts", "*_cache")


def client_files() -> set[str]:
    """The client files the npm package publishes, relative to client/."""
    out = {"package.json"}
    for entry in json.loads((CLIENT / "package.json").read_text("utf-8"))["files"]:
        path = CLIENT / entry
        if path.is_dir():
            out.update(str(p.relative_to(CLIENT)) for p in path.rglob("*") if p.is_file())
        else:
            out.add(entry)
    return out


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("tree") / "synk"
    shutil.copytree(ROOT, dest, ignore=_SKIP)
    return dest


def build(tree: Path, what: str, out: Path) -> Path:
    """Build a wheel or sdist of ``tree`` into ``out`` with this environment's setuptools."""
    code = f"from setuptools import build_meta; print(build_meta.build_{what}({str(out)!r}))"
    result = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return out / result.stdout.strip().splitlines()[-1]


def inspector_files() -> set[str]:
    """The inspector page's files, as a wheel names them."""
    folder = ROOT / "src/synk/gateway/static/inspector"
    return {f"synk/gateway/static/inspector/{p.name}" for p in folder.iterdir()}


def test_the_wheel_carries_scripts_client_and_demo_page(tree: Path, tmp_path: Path) -> None:
    wheel = build(tree, "wheel", tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"synk/py.typed", "synk/store/lua/apply.lua", "synk/store/lua/release.lua"} <= names
    assert {f"synk/gateway/static/synk-client/{f}" for f in client_files()} <= names
    assert {f"synk/demo/static/{p.name}" for p in (ROOT / "src/synk/demo/static").iterdir()} <= names
    assert {"synk/gateway/static/inspector/index.html", "synk/gateway/static/inspector/app.js"} <= inspector_files() <= names
    # only what npm publishes: no tests, no node_modules
    assert not [n for n in names if "synk-client/test" in n or "node_modules" in n or "synk-client/e2e" in n]


def test_a_wheel_built_from_the_sdist_carries_the_client(tree: Path, tmp_path: Path) -> None:
    sdist = build(tree, "sdist", tmp_path / "sdist")
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    [unpacked] = (tmp_path / "unpacked").iterdir()
    wheel = build(unpacked, "wheel", tmp_path / "wheel")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"synk/gateway/static/synk-client/{f}" for f in client_files()} <= names
    assert inspector_files() <= names
