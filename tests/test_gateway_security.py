"""Who may connect and subscribe, what reaches Redis, and which files are served."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError
from websockets.typing import Origin

import synk
from synk.gateway import Gateway, Handshake, static
from synk.store.redis import RedisStore
from tests.gateway_env import KEY, Env, first_world_message, http_get, http_request, running, store_url
from tests.models import Agent, Note
from tests.wsclient import WsClient


async def refused_status(url: str, **kwargs: Any) -> int:
    """The close code a refused connection gets at once (nothing served before it)."""
    async with connect(url, **kwargs) as ws:
        with pytest.raises(ConnectionClosedError) as info:
            await asyncio.wait_for(ws.recv(), 10)
    assert info.value.rcvd is not None
    assert info.value.rcvd.reason == {4401: "unauthorized", 4403: "origin not allowed"}[info.value.rcvd.code]
    return info.value.rcvd.code


# -- Origin ---------------------------------------------------------------------------------


async def test_default_origin_is_the_gateways_own_host() -> None:
    async with running(None) as env:
        same = await WsClient.open(env.url, origin=Origin(f"http://127.0.0.1:{env.port}"))
        none = await WsClient.open(env.url)  # not a browser: no Origin header
        for origin in ("http://evil.example", f"http://127.0.0.1:{env.port + 1}", f"http://localhost:{env.port}", "null"):
            assert await refused_status(env.url, origin=Origin(origin)) == 4403, origin
        assert len(env.gateway.sessions) == 2
        await same.subscribe([KEY])
        await none.subscribe([KEY])
        await same.close()
        await none.close()


async def test_configured_origins_allow_those_and_the_gateways_own_pages() -> None:
    async with running(None, origins=["http://ok.example"]) as env:
        ok = await WsClient.open(env.url, origin=Origin("http://ok.example"))
        own = await WsClient.open(env.url, origin=Origin(f"http://127.0.0.1:{env.port}"))  # a page the gateway serves
        await own.close()
        for origin in (
            f"http://localhost:{env.port}",
            "http://evil.example",
            "https://ok.example",
            "http://ok.example:8080",
            "http://ok.example.evil.example",
            "http://sub.ok.example",
        ):
            assert await refused_status(env.url, origin=Origin(origin)) == 4403, origin
        await ok.close()


async def test_only_the_configured_origins_when_own_pages_are_not_allowed() -> None:
    async with running(None, origins=["http://ok.example"], allow_own_origin=False) as env:
        ok = await WsClient.open(env.url, origin=Origin("http://ok.example"))
        assert await refused_status(env.url, origin=Origin(f"http://127.0.0.1:{env.port}")) == 4403
        await ok.close()


async def test_the_client_files_carry_cors_headers_for_allowed_pages_only() -> None:
    async with running(None, origins=["http://ok.example"]) as env:

        async def get(path: str, origin: str | None) -> tuple[int, dict[str, str]]:
            extra = f"Origin: {origin}\r\n" if origin else ""
            status, headers, _ = await http_request(env.port, "GET", path, extra)
            return status, headers

        status, headers = await get("/synk-client/index.js", "http://ok.example")
        assert status == 200
        assert headers["access-control-allow-origin"] == "http://ok.example"
        assert headers["vary"] == "Origin"
        _, headers = await get("/synk-client/index.js", f"http://127.0.0.1:{env.port}")
        assert headers["access-control-allow-origin"] == f"http://127.0.0.1:{env.port}"
        _, headers = await get("/synk-client/index.js", "http://evil.example")
        assert "access-control-allow-origin" not in headers
        _, headers = await get("/synk-client/index.js", None)
        assert "access-control-allow-origin" not in headers
        _, headers = await get("/metrics", "http://ok.example")  # for scrapers, not pages
        assert "access-control-allow-origin" not in headers
    async with running(None, origins="*") as env:
        _, headers, _ = await http_request(env.port, "GET", "/synk-client.js", "Origin: http://any.example\r\n")
        assert headers["access-control-allow-origin"] == "*"


async def test_one_origin_as_a_string_is_that_origin_not_its_substrings() -> None:
    async with running(None, origins="http://ok.example") as env:
        ok = await WsClient.open(env.url, origin=Origin("http://ok.example"))
        for origin in ("http://ok.exampl", "http://ok", "ok.example"):
            assert await refused_status(env.url, origin=Origin(origin)) == 4403, origin
        await ok.close()


async def test_a_star_among_origins_allows_any() -> None:
    async with running(None, origins=["http://ok.example", "*"]) as env:
        client = await WsClient.open(env.url, origin=Origin("http://elsewhere.example"))
        await client.close()


async def test_any_origin() -> None:
    async with running(None, origins="*") as env:
        client = await WsClient.open(env.url, origin=Origin("http://evil.example"))
        await client.close()


# -- authenticate / authorize ---------------------------------------------------------------


async def test_authenticate_none_is_4401() -> None:
    seen: list[Handshake] = []

    def authenticate(handshake: Handshake) -> str | None:
        seen.append(handshake)
        return handshake.query.get("token")

    async with running(None, authenticate=authenticate) as env:
        assert await refused_status(env.url) == 4401
        assert await refused_status(env.url + "?token=") == 4401
        assert not env.gateway.sessions
        client = await WsClient.open(env.url + "?token=alice&x=1", resnap=False, additional_headers={"X-Test": "yes"})
        assert seen[-1].path == "/?token=alice&x=1"
        assert seen[-1].query == {"token": "alice", "x": "1"}
        assert seen[-1].headers["x-test"] == "yes"
        assert seen[-1].client_addr == "127.0.0.1"
        [session] = env.gateway.sessions.values()
        assert session.identity == "alice"
        await client.close()


async def test_authenticate_that_raises_or_awaits() -> None:
    async def authenticate(handshake: Handshake) -> str:
        await asyncio.sleep(0)
        if "boom" in handshake.path:
            raise RuntimeError("hook failed")
        return "async-user"

    async with running(None, authenticate=authenticate) as env:
        assert await refused_status(env.url + "?boom") == 4401
        client = await WsClient.open(env.url)
        [session] = env.gateway.sessions.values()
        assert session.identity == "async-user"
        await client.close()


async def test_authorize_per_key(backend: str, request: pytest.FixtureRequest) -> None:
    calls: list[tuple[Any, str]] = []

    async def authorize(identity: Any, key: str) -> bool:
        calls.append((identity, key))
        if key == "raises":
            raise RuntimeError("hook failed")
        return key.startswith(f"user:{identity}") or key == KEY

    async with running(store_url(backend, request), authenticate=lambda h: h.query.get("token"), authorize=authorize) as env:
        env.world.create(Agent(id="pub"))
        env.world.create(Note(id="secret", sub_key="user:bob", text="bob's"))
        env.world.create(Note(id="mine", sub_key="user:alice", text="alice's"))
        await env.world.flush()
        client = await WsClient.open(env.url + "?token=alice")
        client.keys.update([KEY, "user:alice"])
        await client.send({"method": "updateSubscription", "add": [KEY, "user:bob", "user:alice", "raises"]})
        await client.wait(lambda: len(client.of("snap")) == 2 and len(client.of("error")) == 2)
        assert calls == [("alice", KEY), ("alice", "user:bob"), ("alice", "user:alice"), ("alice", "raises")]
        assert [e["code"] for e in client.of("error")] == ["forbidden", "forbidden"]
        assert sorted(m["sKey"] for m in client.of("snap")) == sorted([KEY, "user:alice"])
        assert sorted(m["id"] for m in client.of("add")) == ["mine", "pub"]
        assert sorted(env.gateway.router.keys()) == sorted([KEY, "user:alice"])
        # Nothing of a forbidden key arrives later either.
        await env.world.publish("user:bob", {"method": "marker", "n": 0})
        await env.world.publish(KEY, {"method": "marker", "n": 1})
        await client.wait(lambda: bool(client.of("marker")))
        assert [m["n"] for m in client.of("marker")] == [1]
        if backend == "redis":
            store = env.gateway.store
            assert isinstance(store, RedisStore)
            r = aioredis.Redis.from_url(str(request.getfixturevalue("redis_url")))
            try:
                for key, n in ((KEY, 1), ("user:alice", 1), ("user:bob", 0), ("raises", 0)):
                    reply: Any = await r.execute_command("PUBSUB", "SHARDNUMSUB", store.channel(key))  # type: ignore[no-untyped-call]
                    assert int(reply[1]) == n, key
            finally:
                await r.aclose()
        # A resync of a forbidden key is refused too: it was never subscribed.
        await client.send({"method": "resync", "keys": ["user:bob"]})
        await client.wait(lambda: len(client.of("error")) == 3)
        assert client.of("error")[2]["code"] == "not_subscribed"
        assert env.gateway.metrics.errors["forbidden"] == 2
        await client.close()


# -- keys never reach Redis as anything but arguments ------------------------------------------


async def test_refused_keys_never_touch_redis(redis_url: str) -> None:
    async with running(redis_url) as env:
        store = env.gateway.store
        assert isinstance(store, RedisStore)
        r = aioredis.Redis.from_url(redis_url)
        try:

            async def state() -> tuple[list[bytes], list[bytes]]:
                keys: Any = await r.keys("*")
                channels: Any = await r.execute_command("PUBSUB", "SHARDCHANNELS")  # type: ignore[no-untyped-call]
                return sorted(keys), sorted(channels)

            client = await WsClient.open(env.url)
            before = await state()
            bad = ["x} *", "{a}", "a\r\nFLUSHALL\r\n", "*", "k" * 201, "a b", "a\x00b", "}{", "a'; DEL x"]
            for key in bad:
                for msg in ({"method": "updateSubscription", "add": [key]}, {"method": "resync", "keys": [key]}):
                    start = len(client.of("error"))
                    await client.send(msg)
                    await client.wait(lambda: len(client.of("error")) > start)  # noqa: B023
                    assert client.of("error")[start]["code"] == "bad_key", key
            assert await state() == before
            assert not env.gateway.router.keys()

            # A key with every allowed punctuation character is only ever a part of a key name.
            odd = "a:b|c/d@e#f+g=h,i~j-k.l_M9"
            env.world.create(Note(id="n1", sub_key=odd, text="t"))
            await env.world.flush()
            await client.subscribe([odd])
            assert client.of("snap")[-1]["ids"] == ["n1"]
            keys, channels = await state()
            new = sorted(set(keys) - set(before[0]))
            assert new == sorted(k.encode() for k in (store.objects_key(odd), store.id_key("n1")))
            assert store.channel(odd).encode() in channels
            await client.close()
        finally:
            await r.aclose()


# -- client files ------------------------------------------------------------------------------


async def test_client_files_are_served() -> None:
    root = static.client_dir()
    assert root is not None, "the JS client's files are not found"
    async with running(None) as env:
        status, headers, body = await http_get(env.port, "/synk-client/index.js")
        assert status == 200
        assert headers["content-type"].startswith("text/javascript")
        assert headers["cache-control"] == "no-cache"  # a redeployed client is picked up
        assert body == (root / "index.js").read_bytes()
        # One URL for the whole client: it re-exports the folder's entry, so
        # the modules' relative imports resolve under /synk-client/.
        status, headers, body = await http_get(env.port, "/synk-client.js")
        assert (status, body) == (200, b'export * from "./synk-client/index.js"\n')
        assert headers["content-type"].startswith("text/javascript")
        status, _, _ = await http_get(env.port, "/synk-client/package-lock.json")
        assert status == 404, "only the files the npm package publishes are served"
        status, _, _ = await http_get(env.port, "/synk-client/e2e/harness.py")
        assert status == 404
        status, _, _ = await http_get(env.port, "/synk-client/index.js?v=3")
        assert status == 200
        status, _, _ = await http_get(env.port, "/synk-client/missing.js")
        assert status == 404


TRAVERSALS = [
    "/synk-client/../pyproject.toml",
    "/synk-client/../../pyproject.toml",
    "/synk-client/../../../../../../etc/passwd",
    "/synk-client/%2e%2e/pyproject.toml",
    "/synk-client/%2E%2E/pyproject.toml",
    "/synk-client/..%2fpyproject.toml",
    "/synk-client/%2e%2e%2fpyproject.toml",
    "/synk-client/..%5cpyproject.toml",
    "/synk-client/..\\pyproject.toml",
    "/synk-client/.%2e/pyproject.toml",
    "/synk-client/....//pyproject.toml",
    "/synk-client//etc/passwd",
    "/synk-client/../src/synk/cli.py",
    "/synk-client/%00../pyproject.toml",
    "/synk-client/node_modules/.package-lock.json",
    "/synk-client/package.json/../../pyproject.toml",
    "/../pyproject.toml",
    "/pyproject.toml",
    "/etc/passwd",
]


async def test_path_traversal_is_refused() -> None:
    async with running(None) as env:
        for path in TRAVERSALS:
            status, _, body = await http_get(env.port, path)
            assert status == 404, path
            assert b"[project]" not in body and b"root:" not in body, path


async def test_static_dir(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>demo</h1>")
    (site / "app.js").write_text("console.log(1)")
    (tmp_path / "secret.txt").write_text("secret")
    async with running(None, static_dir=site) as env:
        status, headers, body = await http_get(env.port, "/")
        assert (status, body) == (200, b"<h1>demo</h1>")
        assert headers["content-type"].startswith("text/html")
        status, headers, _ = await http_get(env.port, "/app.js")
        assert status == 200 and headers["content-type"].startswith("text/javascript")
        for path in (
            "/../secret.txt",
            "/%2e%2e/secret.txt",
            "/..%2fsecret.txt",
            "//" + str(tmp_path / "secret.txt"),
            "/sub/../../secret.txt",
        ):
            status, _, body = await http_get(env.port, path)
            assert status == 404 and b"secret" not in body, path


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async with running(None) as e:
        yield e


async def test_a_refused_handshake_leaves_no_session(env: Env) -> None:
    """A refused Origin never reaches attach(): no session, no hello."""
    assert await refused_status(env.url, origin=Origin("http://evil.example")) == 4403
    assert not env.gateway.sessions
    assert env.gateway.metrics.clients == 0


class _User:
    """An identity JSON cannot hold as it is."""

    def __str__(self) -> str:
        return "user:carol"


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        ({"user": "alice", "roles": ["admin"]}, {"user": "alice", "roles": ["admin"]}),
        ("bob", "bob"),
        (_User(), "user:carol"),
        ({1: _User()}, {"1": "user:carol"}),
    ],
)
async def test_the_simulation_learns_who_sent_each_message(
    backend: str, request: pytest.FixtureRequest, identity: Any, expected: Any
) -> None:
    async with running(store_url(backend, request), authenticate=lambda _handshake: identity) as env:
        client = await WsClient.open(env.url)
        message = await first_world_message(env.world, client, {"method": "spawn", "x": 1})
        assert (message.method, message.data, message.identity) == ("spawn", {"x": 1}, expected)
        assert message.client == client.of("hello")[0]["client"]
        await client.close()


async def test_the_standalone_server_answers_each_method_as_itself() -> None:
    async with running(None) as env:
        status, headers, _ = await http_request(env.port, "POST", "/synk-client/index.js", "Content-Length: 0\r\n")
        assert (status, headers["allow"]) == (405, "GET, HEAD, OPTIONS")
        status, headers, _ = await http_request(env.port, "DELETE", "/metrics", "Content-Length: 0\r\n")
        assert status == 405
        status, headers, body = await http_request(env.port, "HEAD", "/synk-client/index.js")
        assert status == 200 and body == b"" and int(headers["content-length"]) == 0
        own = f"Origin: http://127.0.0.1:{env.port}\r\n"
        status, headers, _ = await http_request(env.port, "OPTIONS", "/synk-client/index.js", own)
        assert status == 204 and headers["access-control-allow-origin"] == f"http://127.0.0.1:{env.port}"


async def test_a_dns_rebinding_page_is_refused_by_a_loopback_gateway() -> None:
    # The attacker's name resolves to 127.0.0.1: its requests carry that name in Host (and Origin).
    async with running(None, inspect=True) as env:
        rebind = f"rebind.attacker.example:{env.port}"
        for path in ("/metrics", "/inspect/state"):
            status, _, _ = await http_get(env.port, path)
            assert status == 200, path  # under its own name (127.0.0.1:PORT, as http_get sends): served
        reader, writer = await asyncio.open_connection("127.0.0.1", env.port)
        writer.write(f"GET /metrics HTTP/1.1\r\nHost: {rebind}\r\nConnection: close\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.read(200), 5)
        writer.close()
        assert head.startswith(b"HTTP/1.1 403"), head
        assert await refused_status(env.url, origin=Origin(f"http://{rebind}"), additional_headers={"Host": rebind}) == 4403
        for name in ("localhost", "127.0.0.1"):
            client = await WsClient.open(
                env.url, origin=Origin(f"http://{name}:{env.port}"), additional_headers={"Host": f"{name}:{env.port}"}
            )
            await client.close()


async def test_the_inspector_behind_authenticate_needs_an_admin() -> None:
    from synk.gateway.tokens import TokenAuth, mint

    secret = "x" * 32
    auth = TokenAuth(secret)
    with pytest.raises(synk.ConfigError, match="inspect is on with an authenticate hook but no admin hook"):
        Gateway("memory://", inspect=True, authenticate=auth.authenticate)
    async with running(None, inspect=True, authenticate=auth.authenticate, authorize=auth.authorize, admin=auth.admin) as env:
        user = mint(secret, "mallory", ["room:mallory"])
        boss = mint(secret, "ops", ["*"], admin=True)
        status, _, _ = await http_get(env.port, "/inspect/state")
        assert status == 401
        status, _, _ = await http_get(env.port, f"/inspect/state?token={user}")
        assert status == 403  # a valid connection token is not an admin's
        status, _, body = await http_get(env.port, f"/inspect/state?token={boss}")
        assert status == 200 and b'"clients"' in body
