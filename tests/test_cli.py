"""The ``synk`` command as a user runs it: a subprocess, its exit code and its output."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

import synk
from synk.cli import main
from synk.gateway import tokens
from tests.models import Agent
from tests.wsclient import WsClient

ROOT = Path(__file__).resolve().parents[1]
SECRET = "s3cret-of-at-least-thirty-two-bytes!"


def synk_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30, answer: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``synk ARGS``; ``answer`` is typed on its standard input (None: none, an end of file)."""
    return subprocess.run(
        [sys.executable, "-m", "synk.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        input=answer if answer is not None else "",
    )


def test_version_is_the_packages() -> None:
    done = synk_cli("--version")
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert (done.returncode, done.stdout.strip()) == (0, f"synk {version}")
    assert synk.__version__ == version


def test_every_option_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("serve", "demo", "inspect", "purge", "types"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        options = [line.split()[0] for line in text.splitlines() if line.startswith("  --")]
        assert options, text
        for line in text.split("options:")[1].split("\n  -")[1:]:
            name, _, help_text = line.partition("  ")
            assert help_text.strip(), f"synk {command} -{name.strip()} has no help"


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_a_busy_port_is_one_clear_line(busy_port: int, redis_url: str) -> None:
    done = synk_cli("serve", "--redis", redis_url, "--port", str(busy_port))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == f"synk: port {busy_port} is in use on 127.0.0.1: stop what listens there, or pick another with --port"
    assert "Traceback" not in done.stderr


def test_an_unreachable_redis_is_one_clear_line() -> None:
    # synk.ConnectionError is an OSError too: it was taken for a failed bind and re-raised.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = int(s.getsockname()[1])  # nothing listens once it is closed
    done = synk_cli("serve", "--redis", f"redis://127.0.0.1:{closed}/0", "--port", "0")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"synk: redis at redis://127.0.0.1:{closed}/0 is unreachable"), done.stderr


def test_a_missing_secret_variable_is_one_clear_line(redis_url: str) -> None:
    done = synk_cli("serve", "--redis", redis_url, "--port", "0", "--jwt-secret-env", "SYNK_TEST_NO_SUCH_VAR")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "synk: --jwt-secret-env SYNK_TEST_NO_SUCH_VAR: the environment variable SYNK_TEST_NO_SUCH_VAR is not set (or empty)"
    )


@asynccontextmanager
async def serving(redis_url: str, prefix: str) -> AsyncIterator[str]:
    """``synk serve --jwt-secret-env`` as a subprocess; yields its websocket URL."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "synk.cli",
        "serve",
        "--redis",
        redis_url,
        "--prefix",
        prefix,
        "--port",
        "0",
        "--jwt-secret-env",
        "SYNK_TEST_SECRET",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "SYNK_TEST_SECRET": SECRET},
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        while "synk gateway on" not in line:
            assert line, "synk serve exited"
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        yield line.split(" on ", 1)[1].split(" ", 1)[0]
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0


async def refused_code(url: str, **kwargs: object) -> int:
    async with connect(url, **kwargs) as ws:  # type: ignore[arg-type]
        with pytest.raises(ConnectionClosedError) as info:
            await asyncio.wait_for(ws.recv(), 10)
    assert info.value.rcvd is not None
    return info.value.rcvd.code


async def test_synk_serve_checks_signed_tokens_and_their_keys(redis_url: str) -> None:
    prefix = f"clitest:{time.monotonic_ns()}:"
    async with synk.connect(redis_url, types=[Agent], prefix=prefix) as world:
        world.create(Agent(id="here", x=1))
        world.create(Agent(id="there", x=40))
        await world.flush()
        async with serving(redis_url, prefix) as url:
            token = tokens.mint(SECRET, "alice", ["world:0|*"], ttl=60)
            client = await WsClient.open(f"{url}?token={token}")
            await client.subscribe(["world:0|0"])
            assert list(client.mirror) == ["here"]
            await client.subscribe(["world:2|0"], wait=False)  # not in the token's keys
            await client.wait(lambda: any(m["method"] == "error" for m in client.messages))
            assert client.of("error")[0]["code"] == "forbidden"
            await client.close()

            bearer = await WsClient.open(url, additional_headers={"Authorization": f"Bearer {token}"})
            await bearer.subscribe(["world:0|0"])
            await bearer.close()

            expired = jwt.encode({"sub": "bob", "keys": ["*"], "exp": int(time.time()) - 10}, SECRET, algorithm="HS256")
            forged = tokens.mint("another-secret-of-at-least-32-bytes!", "mallory", ["*"])
            unsigned = jwt.encode({"sub": "eve", "keys": ["*"], "exp": int(time.time()) + 60}, None, algorithm="none")
            no_expiry = jwt.encode({"sub": "carl", "keys": ["*"]}, SECRET, algorithm="HS256")
            for bad in (expired, forged, unsigned, no_expiry):
                assert await refused_code(f"{url}?token={bad}") == 4401
            assert await refused_code(url) == 4401  # no token at all


def test_token_keys_are_exact_or_prefixes() -> None:
    patterns = ["room:1", "world:*"]
    assert tokens.key_allowed(patterns, "room:1")
    assert not tokens.key_allowed(patterns, "room:10")
    assert tokens.key_allowed(patterns, "world:3|4")
    assert not tokens.key_allowed(patterns, "worlds")
    assert tokens.key_allowed(["*"], "anything")


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(synk.ConfigError, match="the token secret is 5 bytes long; HS256 needs at least 32"):
        tokens.TokenAuth("short")


async def test_a_gateway_open_beyond_loopback_without_origins_warns(caplog: pytest.LogCaptureFixture) -> None:
    from synk.gateway import Gateway

    for host, warned in (("127.0.0.1", False), ("0.0.0.0", True)):
        caplog.clear()
        gateway = Gateway("memory://")
        async with gateway.serve(host, 0):
            pass
        assert any("DNS-rebinding" in r.getMessage() for r in caplog.records) is warned, host


async def test_synk_serve_inspect_serves_the_inspector(redis_url: str) -> None:
    from tests.gateway_env import http_get

    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "synk.cli", "serve", "--redis", redis_url, "--port", "0", "--inspect"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        line = ""
        while "synk inspector on" not in line:
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            assert line, "synk serve exited"
        url = line.split(" on ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/inspect")
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        status, _, body = await http_get(port, "/inspect/state")
        assert status == 200
        assert b'"counts"' in body
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0


async def stored_agents(url: str, prefix: str, count: int, spread: int = 10) -> None:
    """``count`` agents a0, a1, ... stored under ``prefix``, ``spread`` apart on x (16 is one key each)."""
    async with synk.connect(url, types=[Agent], prefix=prefix) as world:
        for n in range(count):
            world.create(Agent(id=f"a{n}", x=n * spread, y=1))
        await world.flush()


async def test_synk_inspect_lists_keys_objects_and_claims(redis_url: str) -> None:
    prefix = f"clitest:{time.monotonic_ns()}:"
    await stored_agents(redis_url, prefix, 5)
    done = await asyncio.to_thread(synk_cli, "inspect", "--redis", redis_url, "--prefix", prefix)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"prefix {prefix!r} on {redis_url}",
        "3 keys, 5 live objects",
        "  key        objects  pending  moved-out  deleted",
        "  world:0|0        2        0          0        0",
        "  world:1|0        2        0          0        0",
        "  world:2|0        1        0          0        0",
        "claimed ids: 5: a0, a1, a2, a3, a4",
        "client message stream: 0 entries, 0 bytes; no simulation reads it",
    ]
    empty = await asyncio.to_thread(synk_cli, "inspect", "--redis", redis_url, "--prefix", prefix + "nothing:")
    assert empty.stdout.splitlines()[1:] == ["nothing stored"]


async def test_synk_purge_asks_for_the_prefix(redis_url: str) -> None:
    prefix = f"clitest:{time.monotonic_ns()}:"
    await stored_agents(redis_url, prefix, 5)
    args = ("purge", "--redis", redis_url, "--prefix", prefix)
    for answer, said in (("synk:\n", "'synk:'"), ("", "nothing")):
        refused = await asyncio.to_thread(synk_cli, *args, answer=answer)
        assert refused.returncode == 1
        assert f"this deletes everything stored under {prefix!r}: 3 keys, 5 live objects, 5 claimed ids" in refused.stdout
        assert refused.stderr.strip().splitlines()[-1] == (
            f"synk: purge cancelled: the answer was {said}, not the prefix {prefix!r}; nothing deleted"
        )
    kept = await asyncio.to_thread(synk_cli, "inspect", "--redis", redis_url, "--prefix", prefix)
    assert "3 keys, 5 live objects" in kept.stdout

    one_key = await asyncio.to_thread(synk_cli, *args, "--key", "world:0|0", "--key", "world:7|7", answer=prefix + "\n")
    assert one_key.returncode == 0, one_key.stderr
    assert f"not stored under {prefix!r}: world:7|7" in one_key.stdout
    # (after the prompt, on its line: the answer's newline came from a pipe, not echoed)
    assert one_key.stdout.splitlines()[-1].endswith(": purged 1 key (2 stored objects), released 2 claimed ids")

    done = await asyncio.to_thread(synk_cli, *args, answer=prefix + "\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].endswith(": purged 2 keys (3 stored objects), released 3 claimed ids")
    again = await asyncio.to_thread(synk_cli, *args)
    assert (again.returncode, again.stdout.strip()) == (0, f"nothing stored under {prefix!r} on {redis_url}")


def test_synk_purge_refuses_an_empty_prefix(redis_url: str) -> None:
    for command in ("purge", "inspect"):
        done = synk_cli(command, "--redis", redis_url, "--prefix", "", "--yes" if command == "purge" else "--ids")
        assert done.returncode == 1
        assert done.stderr.strip().splitlines()[-1] == (
            "synk: the prefix is empty: it would select every name in the database; give the prefix synk writes under"
        )


async def test_synk_inspect_and_purge_on_a_cluster(redis_cluster_url: str) -> None:
    prefix = f"clitest:{time.monotonic_ns()}:"
    await stored_agents(redis_cluster_url, prefix, 12, spread=16)
    done = await asyncio.to_thread(synk_cli, "inspect", "--redis", redis_cluster_url, "--prefix", prefix, "--ids")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == [f"prefix {prefix!r} on {redis_cluster_url} (3 primaries)", "12 keys, 12 live objects"]
    assert f"claimed ids: 12: {', '.join(sorted(f'a{n}' for n in range(12)))}" in lines
    purged = await asyncio.to_thread(synk_cli, "purge", "--redis", redis_cluster_url, "--prefix", prefix, "--yes")
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.splitlines()[-1] == "purged 12 keys (12 stored objects), released 12 claimed ids"
    after = await asyncio.to_thread(synk_cli, "inspect", "--redis", redis_cluster_url, "--prefix", prefix)
    assert after.stdout.splitlines()[1:] == ["nothing stored"]
