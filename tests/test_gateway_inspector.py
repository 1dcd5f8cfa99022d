"""The inspector: /inspect's page, /inspect/state's JSON, and who may see them."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

from synk.gateway import Gateway, Handshake
from synk.gateway import inspector as inspector_module
from tests.gateway_env import KEY, http_get, http_request, running, until, until_async
from tests.models import Agent
from tests.wsclient import WsClient

if TYPE_CHECKING:
    import pytest

TOKEN = "t0ken"


def authenticate(handshake: Handshake) -> dict[str, Any] | None:
    return {"user": "ada", "roles": ["ops"]} if handshake.query.get("token") == TOKEN else None


async def get_state(port: int, query: str = "") -> dict[str, Any]:
    status, headers, body = await http_get(port, f"/inspect/state{query}")
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    state: dict[str, Any] = orjson.loads(body)
    return state


async def test_off_by_default_and_404() -> None:
    async with running(None) as env:
        for path in ("/inspect", "/inspect/state", "/inspect/app.js"):
            status, _, _ = await http_get(env.port, path)
            assert status == 404, path


async def test_the_page_and_its_files() -> None:
    async with running(None, inspect=True) as env:
        status, headers, body = await http_get(env.port, "/inspect")
        assert status == 200
        assert headers["content-type"].startswith("text/html")
        assert headers["referrer-policy"] == "no-referrer"  # the token in its URL stays there
        assert b'src="inspect/app.js"' in body
        status, headers, body = await http_get(env.port, "/inspect/app.js")
        assert (status, headers["content-type"]) == (200, "text/javascript; charset=utf-8")
        assert b'from "../synk-client/index.js"' in body
        status, headers, _ = await http_get(env.port, "/inspect/style.css")
        assert (status, headers["content-type"]) == (200, "text/css; charset=utf-8")
        status, headers, _ = await http_get(env.port, "/inspect/?token=x")
        assert (status, headers["location"]) == (308, "../inspect?token=x")
        for path in ("/inspect/nothing", "/inspect/../pyproject.toml", "/inspect/static/inspector/app.js"):
            status, _, _ = await http_get(env.port, path)
            assert status == 404, path
        # Methods, over the standalone server's own HTTP.
        status, headers, _ = await http_request(env.port, "POST", "/inspect/state", "Content-Length: 0\r\n")
        assert (status, headers["allow"]) == (405, "GET, HEAD")
        status, headers, body = await http_request(env.port, "HEAD", "/inspect/state")
        assert status == 200 and int(headers["content-length"]) == 0


async def test_state_counts_keys_and_clients() -> None:
    async with running(None, inspect=True) as env:
        state = await get_state(env.port)
        assert state["counts"] == {"clients": 0, "keys": 0, "subscriptions": 0}
        assert (state["keys"], state["clients"]) == ([], [])
        assert set(state["totals"]) >= {"messages_in", "messages_out", "store_messages", "bytes_out", "errors"}

        agent = Agent(id="a1", x=1, y=1)
        env.world.create(agent)
        await env.world.flush()
        one = await WsClient.open(env.url)
        two = await WsClient.open(env.url)
        await one.subscribe([KEY, "world:9|9"])
        await two.subscribe([KEY])
        state = await get_state(env.port)
        assert state["counts"] == {"clients": 2, "keys": 2, "subscriptions": 3}
        assert state["keys"] == [{"key": KEY, "subscribers": 2}, {"key": "world:9|9", "subscribers": 1}]
        clients = {c["id"]: c for c in state["clients"]}
        assert len(clients) == 2
        by_keys = sorted(clients.values(), key=lambda c: c["key_count"])
        assert by_keys[0]["keys"] == [KEY]
        assert sorted(by_keys[1]["keys"]) == sorted([KEY, "world:9|9"])
        for c in clients.values():
            assert c["identity"] is None
            assert (c["backlog_messages"], c["backlog_bytes"], c["lag"], c["lagging"]) == (0, 0, 0.0, False)
        # The totals move with the traffic: the page turns them into rates.
        before = state["totals"]["messages_out"]
        agent.x = 2
        await env.world.flush()
        await one.wait(lambda: one.mirror["a1"]["state"]["x"] == 2)
        await two.wait(lambda: two.mirror["a1"]["state"]["x"] == 2)
        later = await get_state(env.port)
        assert later["totals"]["messages_out"] >= before + 2
        assert later["time"] > state["time"]

        await one.close()
        await until(lambda: len(env.gateway.sessions) == 1, "the first client to leave")
        state = await get_state(env.port)
        assert state["counts"] == {"clients": 1, "keys": 1, "subscriptions": 1}
        await two.close()


async def test_a_clients_backlog_and_lag_are_reported() -> None:
    async with running(None, inspect=True) as env:
        client = await WsClient.open(env.url)
        await client.subscribe([KEY])
        [session] = env.gateway.sessions.values()
        # Messages queued and not yet written: what a slow socket leaves behind.
        session._pending.extend([b"x" * 10, b"y" * 20])
        session._pending_bytes += 30
        session._count += 2
        session._since = time.monotonic() - 2.5  # the backlog's clock (session.py)
        [row] = inspector_module.state(env.gateway)["clients"]
        assert (row["backlog_messages"], row["backlog_bytes"]) == (2, 30)
        assert 2.5 <= row["lag"] < 10
        session._pending.clear()
        session._pending_bytes = session._count = 0
        await client.close()


async def test_identity_is_json_and_lists_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inspector_module, "MAX_ROWS", 2)
    async with running(None, inspect=True, authenticate=authenticate, admin=lambda _identity: True) as env:
        clients = [await WsClient.open(f"{env.url}?token={TOKEN}") for _ in range(3)]
        for n, client in enumerate(clients):
            await client.subscribe([f"room:{n}"])
        state = await get_state(env.port, f"?token={TOKEN}")
        assert state["counts"] == {"clients": 3, "keys": 3, "subscriptions": 3}
        assert (len(state["keys"]), len(state["clients"]), state["max_rows"]) == (2, 2, 2)
        assert state["clients"][0]["identity"] == {"user": "ada", "roles": ["ops"]}
        for client in clients:
            await client.close()


async def test_behind_authenticate() -> None:
    async with running(None, inspect=True, authenticate=authenticate, admin=lambda _identity: True) as env:
        for path in ("/inspect", "/inspect/state", "/inspect/state?token=wrong"):
            status, headers, _ = await http_get(env.port, path)
            assert (status, headers.get("www-authenticate")) == (401, "Bearer"), path
        status, _, _ = await http_get(env.port, f"/inspect?token={TOKEN}")
        assert status == 200
        await get_state(env.port, f"?token={TOKEN}")
        # The page's script and style carry no state: a module script cannot carry a token.
        status, _, _ = await http_get(env.port, "/inspect/app.js")
        assert status == 200


async def test_an_authenticate_hook_that_raises_refuses() -> None:
    def broken(handshake: Handshake) -> Any:
        raise RuntimeError("the user database is down")

    async with running(None, inspect=True, authenticate=broken, admin=lambda _identity: True) as env:
        status, _, _ = await http_get(env.port, "/inspect/state?token=t")
        assert status == 401


async def test_the_gateway_routes_only_with_inspect_on() -> None:
    gateway = Gateway("memory://", inspect=True)
    answer = await gateway.http("GET", "/inspect/state", {})
    assert answer.status == 200
    assert orjson.loads(answer.body)["counts"]["clients"] == 0
    off = await Gateway("memory://").http("GET", "/inspect/state", {})
    assert off.status == 404


async def test_state_over_redis(redis_url: str) -> None:
    async with running(redis_url, inspect=True) as env:
        env.world.create(Agent(id="r1", x=1, y=1))
        await env.world.flush()
        client = await WsClient.open(env.url)
        await client.subscribe([KEY])

        async def listed() -> bool:
            state = await get_state(env.port)
            return bool(state["keys"] == [{"key": KEY, "subscribers": 1}])

        await until_async(listed, "the key to be listed")
        await client.close()
