"""Files the gateway serves over plain HTTP: the JS client, and an optional folder."""

from __future__ import annotations

import json
import mimetypes
import os
from pathlib import Path

__all__ = ["CLIENT_PREFIX", "client_dir", "resolve"]

CLIENT_PREFIX = "/synk-client/"

_TYPES = {".js": "text/javascript; charset=utf-8", ".ts": "text/plain; charset=utf-8", ".html": "text/html; charset=utf-8"}


def client_dir() -> Path | None:
    """Where the JS client's files are: SYNK_CLIENT_DIR, the package, or the source tree."""
    env = os.environ.get("SYNK_CLIENT_DIR")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve().parent
    candidates += [here / "static" / "synk-client", here.parents[2] / "client"]
    for path in candidates:
        if (path / "index.js").is_file():
            return path
    return None


def _published(root: Path, rel: str) -> bool:
    """Whether ``rel`` is one of the files the npm package publishes ("files" in package.json)."""
    try:
        files = json.loads((root / "package.json").read_text("utf-8")).get("files")
    except (OSError, ValueError):
        files = None
    if not isinstance(files, list):
        return rel in ("index.js", "index.d.ts")
    return any(isinstance(entry, str) and (rel == entry.rstrip("/") or (entry.endswith("/") and rel.startswith(entry))) for entry in files)


def _inside(root: Path, rel: str) -> Path | None:
    if "\\" in rel or "\x00" in rel:
        return None
    target = (root / rel.lstrip("/")).resolve()
    root = root.resolve()
    if target != root and root not in target.parents:
        return None
    return target if target.is_file() else None


def resolve(path: str, static_dir: str | os.PathLike[str] | None) -> tuple[str, bytes] | None:
    """(content type, body) for an HTTP GET of ``path``, or None for 404."""
    path = path.split("?", 1)[0]
    target: Path | None = None
    if path == "/synk-client.js":
        # One URL for the whole client; its modules import each other relatively.
        return _TYPES[".js"], b'export * from "./synk-client/index.js"\n'
    if path.startswith(CLIENT_PREFIX):
        root = client_dir()
        rel = path[len(CLIENT_PREFIX) :]
        if root is not None and _published(root, rel):
            target = _inside(root, rel)
    elif static_dir is not None:
        target = _inside(Path(static_dir), path + "index.html" if path.endswith("/") else path)
    if target is None:
        return None
    ctype = _TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    return ctype, target.read_bytes()
