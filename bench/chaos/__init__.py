"""Chaos: every mirror converges, whatever breaks (issues 10 and 11).

``python -m bench.chaos`` runs *storms*. One run starts

- a private ``redis-server`` (own port, own folder, append-only file on, so
  that a ``kill -9`` loses nothing unless the storm wipes the folder), or
  with ``--cluster`` a private Redis Cluster of 3 primaries and 3 replicas
  (``bench.redis_cluster``), whose primaries can be killed (the replica is
  promoted) and whose slots can be moved between primaries,
- ``--sims`` simulation processes (``--role sim``, default 1), writing one
  world: each about 270 objects of its own (its own seed, synk's random ids)
  over the same 20 subscription keys, created, changed, moved and deleted at
  20 Hz through synk's public API; on a ``WriteError`` it calls ``await
  world.reload()`` and goes on, as the README says to,
- ``--gateways`` gateway processes (``synk serve``), each reaching Redis
  through its own small TCP proxy run by the orchestrator (``proxy.py``),
  so that the network between a gateway and Redis can be cut or stalled (a
  cluster's nodes announce their own addresses, so on ``--cluster`` the
  gateways connect directly, and the proxy's faults are refused),
- ``--clients`` Node clients (``clients.mjs``: the project's JS client on the
  ``ws`` package, several clients per Node process), each changing its
  subscription to random subsets of the 20 keys while the storm lasts, and
  reporting its mirror on demand (JSON lines on stdin and stdout).

Each storm lets the simulation run for ``--duration`` seconds while random
faults of the ``--faults`` kinds strike (see ``faults.py`` for the list) and
heal. Then the faults are healed for good, clients stop churning, the
simulation stops mutating and confirms its last flush, and the orchestrator
polls (up to ``--converge-timeout`` seconds) until every client's mirror
equals what Redis stores in the keys that client follows: same ids, and for
each the same key, version, incarnation and state (the store read on every primary of a cluster). A
storm whose mirrors do not converge in time *diverges*: its row says how
many objects were missing from mirrors, extra in them, or mirrored with a
wrong version (or key, incarnation or state), and details go to stderr and
the JSON line.

Each storm also checks the store itself, once the simulations are quiet:
the store invariant (``tests/store_invariant.py``, settled: every object
live in one key, every id claim held by a live object, no write left
half-way), every object a simulation owns stored as it believes (key,
version, incarnation, state), and no acknowledged write lost or applied
twice (``sim.py`` checks each ``reload()`` against the versions flushes
acknowledged). A storm that breaks one of these is *broken*.

And it measures the interruption: the longest stretch of failed flushes of
a simulation (from the first failing flush to the next that landed), the
slowest flush that landed, the longest time no client received any update
while the simulations wrote (``clients.mjs`` reports each process's gaps,
the orchestrator intersects them), and the clients' reconnections.

Output: one table row per storm, then one JSON line; the exit code is 0 when
every storm converged and none broke, 1 otherwise, 2 when the harness itself
failed. Every process it started is stopped on the way out, also on Ctrl-C.
"""
