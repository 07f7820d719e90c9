"""Serve the notes service with uvicorn on 127.0.0.1: ``python -m examples.service``.

Port 8000 by default (the next free port when it is taken); ``--port 0``
picks any free port. Ctrl+C stops it: the resources stop in reverse order.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from examples.service.app import Resources, create_app
from lifespan_kit.starlette import InnerLifespan

HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def bind(port: int) -> socket.socket:
    """Listen on `port`, or on any free port when the default one is taken."""
    sock = socket.socket()
    try:
        sock.bind((HOST, port))
    except OSError as exc:
        if port != DEFAULT_PORT or exc.errno != errno.EADDRINUSE:
            sock.close()
            raise
        sock.bind((HOST, 0))
    return sock


def announcer(url: str) -> InnerLifespan[FastAPI, Resources]:
    """Say where to open the service, once its resources have started."""

    @asynccontextmanager
    async def announce(app: FastAPI, res: Resources) -> AsyncIterator[None]:
        database = type(res.db).__name__
        cache = type(res.cache).__name__
        print(f"\nNotes service ready ({database}, {cache}).", flush=True)
        print(f"  open {url}/docs to try the API", flush=True)
        print(f"  readiness: {url}/readyz   liveness: {url}/livez", flush=True)
        print("  press Ctrl+C to stop\n", flush=True)
        yield

    return announce


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.service")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args()
    logging.basicConfig(format="%(levelname)s: %(name)s: %(message)s")
    logging.getLogger("lifespan_kit").setLevel(logging.DEBUG)
    sock = bind(args.port)
    url = f"http://{HOST}:{sock.getsockname()[1]}"
    app = create_app(inner=announcer(url))
    server = uvicorn.Server(uvicorn.Config(app, log_level="info"))
    with sock, contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])


if __name__ == "__main__":
    main()
