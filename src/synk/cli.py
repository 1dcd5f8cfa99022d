"""The ``synk`` command: ``synk serve`` runs a gateway, ``synk demo`` a live world."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from synk import __version__

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
    return {"authenticate": auth.authenticate, "authorize": auth.authorize}


async def _serve(args: argparse.Namespace) -> None:
    from synk.gateway import Gateway

    settings: dict[str, Any] = {
        "origins": args.origin or None,
        "max_keys": args.max_keys,
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
    async with gateway.serve(args.host, args.port) as server:
        print(f"synk gateway on ws://{args.host}:{server.port}/ serving {args.redis}", flush=True)
        if args.inspect:
            print(f"synk inspector on http://{args.host}:{server.port}/inspect", flush=True)
        await _stop_on_signals().wait()
    print("synk gateway stopped", flush=True)


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

    demo = commands.add_parser(
        "demo", help="run a simulation, a gateway and a page in one process", description="Run a live demo world and its page."
    )
    demo.add_argument("--redis", default=None, help="run on Redis (or a Redis Cluster) instead of the embedded memory:// store")
    demo.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    demo.add_argument("--port", type=int, default=8765, help="port to listen on (default %(default)s; 0 for any free port)")
    demo.add_argument("--agents", type=int, default=3000, help="agents on the map (default %(default)s)")
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
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        print(f"synk: port {args.port} is in use on {args.host}: stop what listens there, or pick another with --port", file=sys.stderr)
        return 1
    except Exception as exc:  # the CLI's last word: a clear line, not a traceback
        from synk.errors import SynkError

        if not isinstance(exc, SynkError):
            raise
        print(f"synk: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
