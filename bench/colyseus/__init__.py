"""Colyseus anchor: synk's fan-out workload on a Colyseus 0.16 server, with and without StateView.

Workload (defaults, the same figures as ``bench.fanout``): 10,000 objects in
100 keys (100 objects per key), 1,000 clients, each client's StateView
holding the objects of its 10 keys (every key seen by 100 clients); a
simulation changes 500 objects a second, round-robin over all objects,
stamping the wall-clock time in ms in the object's ``ts`` field (a
``float64``). Every change reaches 100 clients: 50,000 client updates a
second. ``--rates 250,500,1000`` steps through several rates in one run
(the server and clients stay up; each rate gets its own warm-up and window).

The server (``server.js``) is one Node process: ``@colyseus/core`` with the
``ws`` transport, one room whose state is a ``MapSchema`` of every object,
keyed ``o{key}_{n}``. The simulation is the room's simulation interval
(``--tick-hz``, 50 Hz by default like synk's; ``--tick-hz 20`` ticks at the
patch rate) in the same process: Colyseus's state lives in the room, so the
server's CPU includes the simulation's (setting a field on a few objects a
tick, small next to encoding and sending). Patches go out every
``--patch-ms`` (Colyseus's default 50 ms, 20 Hz), so a change waits for the
next patch: the state age includes that wait (25 ms on average at 20 Hz).
The simulation keeps its rate in wall-clock time when the event loop runs
late (it catches up, at most a second's worth at once), so an overloaded
server still gets the offered rate: the late ticks are reported.

Rows:

``colyseus StateView``
    ``objects`` is tagged ``@view()`` (``{map: Obj, view: true}``); each
    client gets its own ``StateView`` in ``onJoin`` and ``view.add()``
    puts the 1,000 objects of its 10 keys in it. Each patch is encoded once
    for the shared part and once per view (``Encoder.encodeView``, which
    walks the patch's changed objects for each client whether or not they
    are in its view): much of the server's cost is per client per patch,
    so its CPU per million client updates falls as the rate rises.
``colyseus no view``
    No ``@view()`` tag: one patch, encoded once, sent to every client. Every
    client sees every object, so each gets 10x the updates of the StateView
    row (500,000 client updates a second at the default rate): the two
    rows are different workloads; compare CPU per million client updates,
    not throughput.

The clients run in ``--client-procs`` Node processes (2 by default), ``--joining``
at a time per process joining the one room by id (``clients.js``).
``--client wire`` (the default) speaks Colyseus 0.16's protocol on a bare
``ws`` websocket: the matchmaking request (``POST /matchmake/joinById``),
the websocket with its seat's session id, ``JOIN_ROOM`` acknowledged; each
``ROOM_STATE_PATCH`` is read with ``@colyseus/schema``'s decode primitives
for the ``ts`` values it carries (in steady state a patch is nothing but
``ts`` changes of objects; a patch inside the window that is anything else
is counted in ``unparsed_patches``). It builds no state: a colyseus.js client
keeps a decoded copy of everything it sees, about 0.9 KB an object here, so
the no-view row's 1,000 clients would hold 10 million objects, about 9 GB,
in the load generator (the processes then spend their time in GC and
receive nothing). ``--client changes`` is colyseus.js 0.16 reading each
patch's changes from the decoder's raw change list
(``getRawChangesCallback``); ``--client listen`` is colyseus.js with its
documented state callbacks, a ``listen("ts")`` on every object. Each change
of ``ts`` a client receives is one client update; its state age is the
receipt time minus ``ts`` (p50/p99, 0.1 ms bins). Received bytes are the
websocket frames' payloads plus their headers.

Per row: client updates/s delivered (received inside the window) and
expected (changes stamped inside the window times the clients that see
them); the server process's CPU seconds (utime + stime from /proc/PID/stat,
every thread) per million delivered client updates; bytes per client per
second; state age p50/p99; the server's RSS at the window's end; the CPU
% of the server, of the client processes and of the rest of the machine;
and how busy the whole machine was. Every process shares the machine's
cores: when "other" or the clients take much of them, every figure is
skewed (state age most).

The Node project (``package.json``, ``package-lock.json``) is in this
folder; the orchestrator runs ``npm ci`` there when ``node_modules`` is
missing. It depends on ``@colyseus/core`` and ``@colyseus/ws-transport``
rather than the ``colyseus`` meta-package: that package is only their
re-export, and it lists ``@colyseus/uwebsockets-transport`` as a peer
dependency, which npm installs and which pins ``uWebSockets.js`` to a
GitHub URL (not installable from the registry alone).
"""
