"""Fan-out: the synk gateway against python-socketio with its Redis manager (and a pure-Python floor).

Workload (defaults): 1,000 websocket clients, each following 10 of 100
subscription keys (every key has 100 clients); 100 objects per key; a
simulation changes 500 objects a second (ticks at 50 Hz, 10 changes per
tick, round-robin over the objects so every key gets its share), stamping
``time.time()`` in a field of each changed object. Every change reaches
100 clients: 50,000 deliveries a second, one message per client per tick.

Why 500 changes/s and not 2,000: on a 2-core machine, 2,000/s (200,000
deliveries/s) saturates both cores with synk alone, the load generator
taking about one core and the gateway most of the other, so latency
measures the queues of an overloaded machine. At 500/s synk's side uses
about half the machine. python-socketio cannot keep up at any of these
rates (it tops out near 15,000 deliveries/s on one core here): its row
then shows its throughput at saturation, and CPU per delivered message is
still comparable. Pass ``--rate`` to change it.

synk
    ``synk serve`` (``python -m synk.cli serve``) in its own process; the
    simulation is a ``synk.World`` that sets ``ts`` and flushes each tick
    (Redis scripts, sharded pub/sub); clients send ``updateSubscription``
    and receive the keys' snapshots, then the ``mod`` messages. Clients
    subscribe a few at a time (``--subscribing``): the gateway snapshots
    each key of each subscribing client over redis-py's pool of 100
    connections, and a thousand clients at once exhaust it.
socketio
    python-socketio's ``AsyncServer`` with an ``AsyncRedisManager``, served
    by aiohttp (or uvicorn) in its own process; keys are rooms, clients join
    10 rooms with an acknowledged ``join`` event; the simulation emits a
    message of the same shape as synk's ``mod`` through a write-only
    ``AsyncRedisManager`` (``emit("mod", msg, room=key)``). Clients speak
    Engine.IO v4 / Socket.IO v5 over a raw websocket (``40`` connect,
    ``42[...]`` events, ``2``/``3`` pings), not the heavy ``AsyncClient``.

synk-asgi
    The same gateway as ``gateway.asgi_app()`` under uvicorn in its own
    process (as docs/gateway.md runs it on its own: ``uvicorn module:app``),
    on asyncio's loop and with ``gc_freeze`` like ``synk serve``, so that it
    differs from the synk row by the transport alone; the same simulation
    and clients.
floor
    The least a pure-Python server does for this fan-out: a ``websockets``
    asyncio server with no Redis, running the tick loop itself (the same
    rate, ticks and objects), building each change's ``mod`` (synk's shape)
    once and writing each client's messages of a tick with one
    ``transport.write`` (see ``bench/fanout/floor.py`` for what it leaves
    out). Its server CPU includes making the changes; there is no Redis hop
    in its latency.
colyseus
    Colyseus 0.16 with ``StateView`` on the same workload, in Node
    (``bench/fanout/anchor.py``, which runs ``bench.colyseus``'s row): the
    game developer's alternative, judged against in the same run (issue
    14's target 7). Its simulation runs in its server, and its patches go
    out at 20 Hz.

``--only`` picks the systems, comma-separated, in order (default
``synk,socketio``; ``--only synk,synk-asgi,floor,socketio,colyseus`` runs them all).

Variants of synk's rows: ``--batch`` makes the clients declare
``synk_batch=1`` (each gateway write comes as one frame, a JSON array of
messages; every message in it counts as a delivery, timed at the frame's
arrival) and ``--write-interval S`` is ``synk serve --write-interval S``;
the rows' names say so (``synk batch wi=0.02``). Figures on a shared
machine move by a fifth between runs, so compare variants side by side in
one run: ``--synk-variants plain,batch,batch+wi20`` runs a synk row (and a
synk-asgi row) per variant, each ``plain`` or ``+``-joined ``batch`` and
``wiMS`` (write interval in milliseconds); the floor gets a row per batch
setting (it writes once a tick: a write interval changes nothing). The JSON
line's ``cpu_per_delivery_vs_synk`` gives each row's server CPU per
delivery against the plain synk row's.

Every row reports the bytes one client received a second (on the wire,
headers included, for the raw client) and messages per frame.

``--sweep`` measures each row's capacity instead of one rate: with every
client connected once, the rate starts at ``--sweep-from`` changes a second
and doubles while p99 stays within 100 ms and nearly every expected delivery
arrives, then ``--sweep-refine`` bisection steps close in on the limits of
100 ms and 50 ms; each step is a short window (``--sweep-seconds`` after
``--sweep-warmup``), printed as it ends. It reports each row's highest
deliveries/s with p99 at most 50 ms and at most 100 ms, the server's CPU-s
per million deliveries at every step, and writes a PNG of p99 against
deliveries/s, one line per row (``--plot PATH``; its path is printed and in
the JSON line). The load generator and Redis share the cores with the
server: near 200,000 deliveries/s the clients alone take about a core (see
above), so every row's ceiling on a 2-core machine is partly theirs.

The clients (the load generator) run in ``--client-procs`` processes. By
default each connection is a bare asyncio protocol that parses frames in
``data_received`` (``--client-lib raw``); the ``websockets`` and
``aiohttp`` clients wake a task per message and cost more CPU than the
gateway they load (``--client-lib aiohttp|websockets`` to compare).

Each system gets a fresh server, simulation and client processes. Once
every client has subscribed, the simulation starts; after a warm-up, a
window of ``--seconds`` is measured: the ``mod`` messages clients receive
inside it (delivered per second), the server process's CPU time over it
(from /proc/PID/stat), and the latency from stamp to receipt of each of
those messages (p50/p99, 0.1 ms bins). Expected deliveries are the changes
stamped inside the window times their keys' clients: delivered well under
expected means the server fell behind. The targets: synk's server CPU per
delivered message at most a third of socketio's, and synk's p99 under 50 ms.

``--cluster`` runs synk alone on one Redis and on a private 3-primary Redis
Cluster, each with 1 and 2 gateways (the client processes split between
them), and reports each primary's share of the commands, bytes and CPU.

Every process (server, Redis, simulation, clients) shares the machine's
cores; the report shows each one's CPU share during the window, and the
share taken by processes outside the benchmark: when that is high, every
figure is skewed (latency most). The benchmark starts a private
``redis-server`` on a free loopback port. It exits 0 whether or not the
targets are met. Run ``python -m bench.fanout --help`` for the options.
"""
