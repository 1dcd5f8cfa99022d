"""The ``synk`` command: ``synk serve`` runs a gateway, ``synk demo`` a live world,
``synk inspect`` lists what is stored under a prefix and ``synk purge`` deletes it;
``synk types`` writes TypeScript declarations (or JSON Schema) of synced classes."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from synk import __version__

if TYPE_CHECKING:
    from synk.store.admin import Inventory

__all__ = ["main"]


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, in the running loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _token_hooks(env: str | None) -> dict[str, Any]:
    """``authenticate`` and ``authorize`` checking tokens signed with the secret in ``$env``."""
    if env is None:
        return {}
    from synk.errors import ConfigError
    from synk.gateway.tokens import TokenAuth

    secret = os.environ.get(env)
    if not secret:
        raise ConfigError(f"--jwt-secret-env {env}: the environment variable {env} is not set (or empty)")
    auth = TokenAuth(secret)
    return {"authenticate": auth.authenticate, "authorize": auth.authorize, "admin": auth.admin}


async def _serve(args: argparse.Namespace) -> None:
    from synk.gateway import Gateway

    if args.reuse_port:  # a worker of synk serve --workers
        from synk.workers import die_with_supervisor

        die_with_supervisor()

    settings: dict[str, Any] = {
        "origins": args.origin or None,
        "max_keys": args.max_keys,
        "ping_interval": args.ping_interval,
        "ping_timeout": args.ping_interval,
        "write_interval": args.write_interval,
        "gc_freeze": args.gc_freeze,
        "deflate": args.deflate,
        "inspect": args.inspect,
        **_token_hooks(args.jwt_secret_env),
    }
    if args.inspect and args.jwt_secret_env is None:
        from synk.gateway.admission import loopback

        if not loopback(args.host):
            logging.getLogger("synk.gateway").warning(
                "synk inspector: open to anyone who reaches %s:%s (no --jwt-secret-env): it shows every client and key",
                args.host,
                args.port,
            )
    gateway = Gateway(args.redis, prefix=args.prefix, **settings)
    async with gateway.serve(args.host, args.port, reuse_port=args.reuse_port) as server:
        print(f"synk gateway on ws://{args.host}:{server.port}/ serving {args.redis}", flush=True)
        if args.inspect:
            print(f"synk inspector on http://{args.host}:{server.port}/inspect", flush=True)
        await _stop_on_signals().wait()
    print("synk gateway stopped", flush=True)


async def _serve_workers(args: argparse.Namespace, argv: list[str]) -> None:
    """``synk serve --workers N``: N ``synk serve`` processes sharing the port (``synk.workers``)."""
    from synk.workers import Supervisor, reserve_port

    stop = _stop_on_signals()
    holder = reserve_port(args.host, args.port)
    try:
        port = holder.getsockname()[1]
        supervisor = Supervisor([*argv, "--workers", "1", "--reuse-port", "--port", str(port)], args.workers)
        await supervisor.start(stop)
        pids = ", ".join(map(str, supervisor.pids))
        print(f"synk gateway on ws://{args.host}:{port}/ serving {args.redis} in {args.workers} workers (pids {pids})", flush=True)
        if args.inspect:
            print(f"synk inspector on http://{args.host}:{port}/inspect (of whichever worker answers)", flush=True)
        await supervisor.run(stop)
    finally:
        holder.close()
    print("synk gateway stopped", flush=True)


def _positive(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1")
    return value


#: Claimed ids listed by ``synk inspect`` without ``--ids``.
_IDS_SHOWN = 20


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows as aligned columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        out.append("  " + "  ".join(cells))
    return out


def _n(count: int, word: str) -> str:
    """``1 key``, ``2 keys``."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _ids(ids: list[str], every: bool) -> str:
    shown = ids if every else ids[:_IDS_SHOWN]
    more = f" ... and {len(ids) - len(shown)} more (--ids lists them all)" if len(shown) < len(ids) else ""
    return ", ".join(shown) + more


def _inventory_text(url: str, inv: Inventory, every_id: bool = False) -> str:
    """What ``synk inspect`` prints of an ``Inventory``."""
    where = f"{url} ({inv.nodes} primaries)" if inv.nodes > 1 else url
    lines = [f"prefix {inv.prefix!r} on {where}"]
    if inv.empty:
        lines.append("nothing stored")
    else:
        lines.append(f"{_n(len(inv.keys), 'key')}, {_n(inv.objects, 'live object')}")
        if inv.keys:
            rows: list[tuple[str, ...]] = [("key", "objects", "pending", "moved-out", "deleted")]
            rows += [(k.key, str(k.objects), str(k.pending), str(k.moved), str(k.deleted)) for k in inv.keys]
            lines += _table(rows)
        lines.append(f"claimed ids: {len(inv.claims)}" + (f": {_ids(inv.claims, every_id)}" if inv.claims else ""))
        if inv.unplaced:
            lines.append(f"claimed but stored live in no key: {len(inv.unplaced)}: {_ids(inv.unplaced, every_id)}")
        reader = "a simulation reads it" if inv.stream_reader else "no simulation reads it"
        lines.append(
            f"client message stream: {_n(inv.stream_length, 'entry').replace('entrys', 'entries')}, {inv.stream_bytes} bytes; {reader}"
        )
    if inv.other:
        lines.append(f"other names under the prefix (not synk's layout; purge leaves them): {inv.other}")
    return "\n".join(lines)


def _inspect(args: argparse.Namespace) -> int:
    from synk.store.admin import inventory

    inv = asyncio.run(inventory(args.redis, args.prefix))
    print(_inventory_text(args.redis, inv, args.ids))
    return 0


def _purge(args: argparse.Namespace) -> int:
    from synk.errors import ConfigError
    from synk.store.admin import inventory, purge

    if not args.prefix:
        raise ConfigError("the prefix is empty: it would select every name in the database; give the prefix synk writes under")
    inv = asyncio.run(inventory(args.redis, args.prefix))
    keys: list[str] | None = args.key
    if keys is not None:
        stored = {k.key: k for k in inv.keys}
        missing = [k for k in keys if k not in stored]
        if missing:
            print(f"not stored under {args.prefix!r}: {', '.join(missing)}")
        keys = [k for k in keys if k in stored]
        if not keys:
            print("nothing to purge")
            return 0
        n = sum(stored[k].objects + stored[k].marks for k in keys)
        what = f"{_n(len(keys), 'key')} ({', '.join(keys)}) and {_n(n, 'stored object')} (marks included), releasing their ids"
    else:
        if inv.empty:
            print(f"nothing stored under {args.prefix!r} on {args.redis}")
            return 0
        what = f"everything stored under {args.prefix!r}: {_n(len(inv.keys), 'key')}, {_n(inv.objects, 'live object')}"
        what += f", {_n(len(inv.claims), 'claimed id')}"
        what += ", the client message stream" if inv.stream_length or inv.stream_bytes or inv.stream_reader else ""
    print(_inventory_text(args.redis, inv))
    print(f"this deletes {what}, on {args.redis}")
    if not args.yes:
        try:
            answer = input(f"type the prefix ({args.prefix}) to confirm: ")
        except EOFError:
            answer = None
        if answer != args.prefix:
            said = "nothing" if answer is None else repr(answer)
            print(f"synk: purge cancelled: the answer was {said}, not the prefix {args.prefix!r}; nothing deleted", file=sys.stderr)
            return 1
    done = asyncio.run(purge(args.redis, args.prefix, keys))
    stream = ", the client message stream" if done.stream else ""
    print(f"purged {_n(len(done.keys), 'key')} ({_n(done.objects, 'stored object')}), released {_n(done.claims, 'claimed id')}{stream}")
    return 0


def _types(args: argparse.Namespace) -> int:
    import importlib
    import json
    from pathlib import Path

    from synk.core.typegen import find_types, json_schema, typescript
    from synk.errors import ConfigError

    # As `python -m` would: the user's modules are usually in the current directory.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    modules = []
    for name in args.modules:
        try:
            modules.append(importlib.import_module(name))
        except ImportError as exc:
            raise ConfigError(f"cannot import {name}: {exc}") from None
    classes = find_types(modules)
    if not classes:
        raise ConfigError(f"no synk.Object subclass with a type_key in {', '.join(args.modules)}")
    if args.format == "json-schema":
        text = json.dumps(json_schema(classes, args.modules), indent=2, ensure_ascii=False) + "\n"
    else:
        text = typescript(classes, args.modules)
    if args.output is None:
        if args.check:
            raise ConfigError("--check compares with --output FILE; give the file")
        sys.stdout.write(text)
        return 0
    out = Path(args.output)
    if args.check:
        current = out.read_text(encoding="utf-8") if out.exists() else None
        if current != text:
            state = "does not exist" if current is None else "is out of date"
            print(f"synk: {out} {state}; write it with: synk types {' '.join(args.modules)} -o {out}", file=sys.stderr)
            return 1
        print(f"{out} is up to date")
        return 0
    out.write_text(text, encoding="utf-8")
    count = _n(len(classes), "type")
    print(f"wrote {out}: {count} ({', '.join(c.type_key for c in classes)})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``synk`` command."""
    parser = argparse.ArgumentParser(prog="synk", description="synk: Python objects, live in browsers.")
    parser.add_argument("--version", action="version", version=f"synk {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run a websocket gateway over a store", description="Run a websocket gateway over a store.")
    serve.add_argument(
        "--redis",
        default="redis://127.0.0.1:6379/0",
        help="store URL: redis://HOST:PORT/DB, or any node of a Redis Cluster (default %(default)s)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s; 0.0.0.0 for every interface)")
    serve.add_argument("--port", type=int, default=8765, help="port to listen on (default %(default)s; 0 for any free port)")
    serve.add_argument("--prefix", default="synk:", help="Redis key prefix, the simulation's too (default %(default)s)")
    serve.add_argument(
        "--origin", action="append", help="allowed page Origin (repeatable; '*' for any); the gateway's own pages are always allowed"
    )
    serve.add_argument("--max-keys", type=int, default=1000, help="subscription keys per client (default %(default)s)")
    serve.add_argument(
        "--ping-interval",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="seconds between keepalive pings to each client; one that leaves a ping unanswered as long is dropped"
        " (default %(default)s; each ping costs CPU: 10,000 clients at 20 s are 500 pings a second)",
    )
    serve.add_argument(
        "--write-interval",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="least time between two writes to clients (default %(default)s: at once); under load, more messages per write"
        " for less CPU, at up to this much latency (see docs/gateway.md)",
    )
    serve.add_argument(
        "--no-gc-freeze",
        dest="gc_freeze",
        action="store_false",
        help="do not freeze what survives full garbage collections (on by default: shorter collections with many clients;"
        " see docs/gateway.md, gc_freeze)",
    )
    serve.add_argument(
        "--deflate",
        action="store_true",
        help="offer permessage-deflate to clients: 60-74%% fewer bytes on the wire for more CPU and about 45 KB more"
        " memory per client that takes it (see docs/gateway.md, deflate)",
    )
    serve.add_argument(
        "--jwt-secret-env",
        metavar="NAME",
        help="require signed tokens (JWT, HS256) whose secret is in the environment variable NAME (never on the command line);"
        " a token's 'keys' claim lists the keys it may subscribe to (exact, or prefixes ending in '*')",
    )
    serve.add_argument(
        "--inspect",
        action="store_true",
        help="serve the inspector page at /inspect (live clients, keys and objects); behind --jwt-secret-env's tokens"
        " when given (open it with ?token=...), otherwise open to anyone who reaches the port: keep --host on loopback",
    )

    serve.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="run N gateway processes sharing the port (SO_REUSEPORT), one per core; a worker that dies is started again"
        " (default %(default)s)",
    )
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # a worker's socket (synk.workers)

    demo = commands.add_parser(
        "demo", help="run a simulation, a gateway and a page in one process", description="Run a live demo world and its page."
    )
    demo.add_argument("--redis", default=None, help="run on Redis (or a Redis Cluster) instead of the embedded memory:// store")
    demo.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    demo.add_argument("--port", type=int, default=8765, help="port to listen on (default %(default)s; 0 for any free port)")
    demo.add_argument("--agents", type=int, default=3000, help="agents on the map (default %(default)s)")
    demo.add_argument("--no-sim", action="store_true", help="serve only (another process simulates); needs --redis")

    inspect = commands.add_parser(
        "inspect",
        help="list what is stored under a prefix: keys, objects, claimed ids, the message stream",
        description="List what is stored in Redis under a prefix: each key with its objects (and the marks of writes left"
        " half-way), the claimed object ids, and the client message stream. Reads only (SCAN; every primary of a cluster).",
    )
    inspect.add_argument("--redis", required=True, help="store URL: redis://HOST:PORT/DB, or any node of a Redis Cluster")
    inspect.add_argument("--prefix", default="synk:", help="Redis key prefix, the simulation's (default %(default)s)")
    inspect.add_argument("--ids", action="store_true", help=f"list every claimed id (default: the first {_IDS_SHOWN})")

    purge = commands.add_parser(
        "purge",
        help="delete what is stored under a prefix (or only some keys' objects)",
        description="Delete what synk stored in Redis under a prefix: every key's objects, the id claims and the client"
        " message stream; or, with --key, only those keys' objects, releasing their ids. Asks you to type the prefix"
        " to confirm. Stop the simulation first: a running one writes its objects again.",
    )
    purge.add_argument("--redis", required=True, help="store URL: redis://HOST:PORT/DB, or any node of a Redis Cluster")
    purge.add_argument("--prefix", default="synk:", help="Redis key prefix, the simulation's (default %(default)s; never empty)")
    purge.add_argument("--key", action="append", metavar="KEY", help="purge only this subscription key's objects (repeatable)")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation (for scripts)")

    types = commands.add_parser(
        "types",
        help="write TypeScript declarations (or JSON Schema) of the synced classes in Python modules",
        description="Import each MODULE, find every synk.Object subclass with a type_key, and write its state's types:"
        " a TypeScript interface <ClassName>State per type and a SynkTypes map from type_key to state (or, with"
        " --format json-schema, the same as JSON Schema). Docstrings and #: comments on fields become docs.",
    )
    types.add_argument(
        "modules",
        nargs="+",
        metavar="MODULE",
        help="module to import, as in an import statement (myapp.models); the current directory is on the path",
    )
    types.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default: standard output)")
    types.add_argument(
        "--format",
        choices=["typescript", "json-schema"],
        default="typescript",
        help="typescript: a .d.ts (default); json-schema: a JSON Schema (draft 2020-12) document, for other languages",
    )
    types.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if --output FILE differs from what would be written (for CI)"
    )

    given = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(given)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # One line per HTTP request or connection is noise at this level.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    try:
        if args.command == "serve" and args.workers > 1:
            asyncio.run(_serve_workers(args, given))
        elif args.command == "serve":
            asyncio.run(_serve(args))
        elif args.command == "inspect":
            return _inspect(args)
        elif args.command == "purge":
            return _purge(args)
        elif args.command == "types":
            return _types(args)
        else:
            from synk.demo import run

            async def run_demo() -> None:
                await run(args, _stop_on_signals())

            asyncio.run(run_demo())
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # the CLI's last word: a clear line, not a traceback
        from synk.errors import SynkError

        # SynkError first: synk.ConnectionError is an OSError too.
        if isinstance(exc, SynkError):
            print(f"synk: {exc}", file=sys.stderr)
            return 1
        if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
            print(f"synk: port {args.port} is in use on {args.host}: stop what listens there, or pick another with --port", file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
