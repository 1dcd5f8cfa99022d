"""permessage-deflate (RFC 7692) on the standalone transport, with the ``deflate`` setting.

The gateway writes its own data frames (``ws.py``), so with deflate it must
compress them itself, in the order they leave, with the context the client
negotiated: a real websockets client (which offers permessage-deflate by
default) must read every message whole, and fewer bytes must cross the wire.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.gateway_env import running, store_view
from tests.models import Agent
from tests.wsclient import WsClient

KEYS = ["world:0|0", "world:1|0"]


def wire_bytes(client: WsClient) -> list[int]:
    """A running count of the bytes the client's connection reads off its socket."""
    counted = [0]
    protocol: Any = client.conn.protocol
    receive = protocol.receive_data

    def counting(data: bytes) -> None:
        counted[0] += len(data)
        receive(data)

    protocol.receive_data = counting
    return counted


def extensions(client: WsClient) -> str:
    response = client.conn.response
    assert response is not None
    return str(response.headers.get("Sec-WebSocket-Extensions", ""))


@pytest.mark.parametrize("batch", [True, False])
async def test_a_client_that_takes_deflate_reads_every_message_in_fewer_bytes(batch: bool) -> None:
    async with running(None, deflate=True) as env:
        world = env.world
        agents = [world.create(Agent(id=f"d{i}", x=16 * (i % 2), name=f"agent {i}")) for i in range(40)]
        await world.flush()
        packed = await WsClient.open(env.url, batch=batch)  # offers permessage-deflate, as browsers do
        plain = await WsClient.open(env.url, batch=batch, compression=None)
        assert "permessage-deflate" in extensions(packed)
        assert extensions(plain) == ""
        counts = {"packed": wire_bytes(packed), "plain": wire_bytes(plain)}
        for client in (packed, plain):
            await client.subscribe(KEYS)
        for step in range(30):
            for a in agents[step % 4 :: 4]:
                a.name = f"agent {a.id} at step {step}"
                a.y = step
            if step % 10 == 9:
                agents[step].x = 16 * ((agents[step].x // 16 + 1) % 2)  # a move between the keys
            await world.flush()
        expected = await store_view(world, KEYS)
        for client in (packed, plain):
            await client.wait(lambda c=client: c.mirror == expected, timeout=20)  # type: ignore[misc]
            client.assert_consecutive_versions()
        assert [m["method"] for m in packed.messages] == [m["method"] for m in plain.messages]
        # The same messages in far fewer bytes (the repeated field names and ids compress).
        assert counts["packed"][0] < 0.6 * counts["plain"][0], counts
        await packed.close()
        await plain.close()


async def test_without_the_setting_deflate_is_not_negotiated() -> None:
    async with running(None) as env:
        client = await WsClient.open(env.url)
        assert extensions(client) == ""
        await client.close()
