"""docs/gateway.md's FastAPI app, run as written under uvicorn: tokens, per-key authorization, CORS."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import re
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

import synk
from tests.gateway_env import http_request, until
from tests.models import Agent
from tests.wsclient import WsClient

DOCS = Path(__file__).resolve().parents[1] / "docs" / "gateway.md"
SECRET = "a-secret-of-at-least-thirty-two-bytes"


def the_app(tmp_path: Path) -> Path:
    """The docs' app.py, written out as it stands in the docs."""
    [code] = re.findall(r"```python\n(# app\.py.*?)```", DOCS.read_text(), re.DOTALL)
    path = tmp_path / "docs_app.py"
    path.write_text(code)
    return path


@contextlib.asynccontextmanager
async def serving(path: Path) -> AsyncIterator[int]:
    spec = importlib.util.spec_from_file_location(f"docs_app_{uuid.uuid4().hex}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    server = uvicorn.Server(
        uvicorn.Config(module.app, host="127.0.0.1", port=0, lifespan="on", ws="websockets-sansio", log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started or task.done(), "uvicorn to start")
        assert server.started
        yield int(server.servers[0].sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sys.modules.pop(spec.name, None)


async def test_the_fastapi_app_of_the_docs(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNK_SECRET", SECRET)
    monkeypatch.setenv("REDIS_URL", redis_url)
    async with synk.connect(redis_url, types=[Agent]) as world:
        note = world.create(Agent(id=f"n{uuid.uuid4().hex[:6]}", x=0))
        await world.flush()
        async with serving(the_app(tmp_path)) as port:
            page = "Origin: http://localhost:8000\r\n"
            status, headers, body = await http_request(port, "GET", "/token?user=ann", page)
            assert status == 200 and headers["access-control-allow-origin"] == "http://localhost:8000"
            token: str = orjson.loads(body)["token"]

            client = await WsClient.open(f"ws://127.0.0.1:{port}/sync?token={token}", origin="http://localhost:8000")
            await client.subscribe(["world:0|0"])  # "world:*" is in ann's keys
            assert note.id in client.mirror
            await client.subscribe(["room:bob"], wait=False)  # not ann's room
            await client.wait(lambda: bool(client.of("error")))
            assert client.of("error")[0]["code"] == "forbidden"
            await client.close()

            # No token, or a page from elsewhere: refused.
            refused: list[Any] = []
            for url, origin in (
                (f"ws://127.0.0.1:{port}/sync", "http://localhost:8000"),
                (f"ws://127.0.0.1:{port}/sync?token={token}", "http://evil.example"),
            ):
                async with connect(url, origin=origin) as ws:  # type: ignore[arg-type]
                    with pytest.raises(ConnectionClosedError) as info:
                        await asyncio.wait_for(ws.recv(), 10)
                assert info.value.rcvd is not None
                refused.append(info.value.rcvd.code)
            assert refused == [4401, 4403]
            status, _, _ = await http_request(port, "GET", "/sync/synk-client/index.js", page)
            assert status == 200
