"""Chaos: every mirror converges, whatever breaks (issue 10).

``python -m bench.chaos`` runs *storms*. One run starts

- a private ``redis-server`` (own port, own folder, append-only file on, so
  that a ``kill -9`` loses nothing unless the storm wipes the folder),
- a simulation process (``--role sim``): about 270 objects over 20
  subscription keys, created, changed, moved and deleted at 20 Hz through
  synk's public API; on a ``WriteError`` it calls ``await world.reload()``
  and goes on, as the README says to,
- ``--gateways`` gateway processes (``synk serve``), each reaching Redis
  through its own small TCP proxy run by the orchestrator (``proxy.py``),
  so that the network between a gateway and Redis can be cut or stalled,
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
each the same key, version, incarnation and state. A storm whose mirrors do
not converge in time *diverges*: its row says how many objects were missing
from mirrors, extra in them, or mirrored with a wrong version (or key,
incarnation or state), and details go to stderr and the JSON line.

Output: one table row per storm, then one JSON line; the exit code is 0 when
every storm converged, 1 when one diverged, 2 when the harness itself failed.
Every process it started is stopped on the way out, also on Ctrl-C.
"""
