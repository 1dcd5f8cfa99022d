"""The ``synk`` command: ``synk serve`` runs a gateway, ``synk demo`` a live world."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, in the running loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _serve(args: argparse.Namespace) -> None:
    from synk.gateway import Gateway

    gateway = Gateway(args.redis, prefix=args.prefix, origins=args.origin or None, max_keys=args.max_keys)
    async with gateway.serve(args.host, args.port) as server:
        print(f"synk gateway on ws://{args.host}:{server.port}/ serving {args.redis}", flush=True)
        await _stop_on_signals().wait()
    print("synk gateway stopped", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``synk`` command."""
    parser = argparse.ArgumentParser(prog="synk", description="synk: Python objects, live in browsers.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run a websocket gateway over a store")
    serve.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="store URL (redis://HOST:PORT/DB)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--prefix", default="synk:", help="Redis key prefix")
    serve.add_argument("--origin", action="append", help="allowed Origin (repeatable; '*' for any); default: the gateway's own host")
    serve.add_argument("--max-keys", type=int, default=1000, help="subscription keys per client")

    demo = commands.add_parser("demo", help="run a simulation, a gateway and a page in one process")
    demo.add_argument("--redis", default=None, help="run on Redis instead of the embedded memory:// store")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8765)
    demo.add_argument("--agents", type=int, default=3000, help="agents on the map (default 3000)")
    demo.add_argument("--no-sim", action="store_true", help="serve only (another process simulates); needs --redis")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # One line per HTTP request or connection is noise at this level.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    try:
        if args.command == "serve":
            asyncio.run(_serve(args))
        else:
            from synk.demo import run

            async def run_demo() -> None:
                await run(args, _stop_on_signals())

            asyncio.run(run_demo())
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # the CLI's last word: a clear line, not a traceback
        from synk.errors import SynkError

        if not isinstance(exc, SynkError):
            raise
        print(f"synk: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
