"""The app the server tests serve: its resources print when they start and stop.

It needs nothing but Starlette and lifespan_kit, so it runs on asyncio and on
trio (hypercorn's trio worker). Environment variables shape it:

- ``LIFESPAN_KIT_TEST_FAIL``: a resource's name, which then fails to start.
- ``LIFESPAN_KIT_TEST_ON_FAILURE``: the failure policy, "stop" (the default)
  or "degrade".

``GET /crash`` makes the background task fail; ``GET /slow`` answers after
half a second, for the tests of a request in flight during a shutdown.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from typing import cast

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from lifespan_kit import Bundle, Registry
from lifespan_kit.starlette import FailurePolicy, health_routes, lifespan, resources

FAIL_VARIABLE = "LIFESPAN_KIT_TEST_FAIL"
POLICY_VARIABLE = "LIFESPAN_KIT_TEST_ON_FAILURE"
SLOW_REQUEST = 0.5


def recorded(name: str) -> Callable[..., AsyncIterator[str]]:
    """Return a factory that prints "start <name>" and "stop <name>"."""

    async def factory(**_: object) -> AsyncIterator[str]:
        # The test reads the server's output to check the order.
        print(f"start {name}", flush=True)
        if os.environ.get(FAIL_VARIABLE) == name:
            raise ConnectionRefusedError(f"{name} is unreachable")
        yield name
        print(f"stop {name}", flush=True)

    return factory


class Crash:
    """Set by GET /crash; the background task fails once it is set."""

    event: anyio.Event | None = None


registry = Registry()
registry.add("settings", recorded("settings"))
registry.add("db", recorded("db"), depends={"settings": "settings"})
registry.add("cache", recorded("cache"), depends={"settings": "settings"})


@registry.background
async def consumer(db: str) -> None:
    """Runs for as long as the app, until GET /crash."""
    Crash.event = anyio.Event()
    await Crash.event.wait()
    print("consumer fails", flush=True)
    raise ConnectionResetError("the queue went away")


class Resources(Bundle):
    """What the handlers use."""

    db: str
    cache: str
    consumer: None


async def home(request: Request) -> JSONResponse:
    """Answer with the names of the resources the handler received."""
    res = resources(request, Resources)
    return JSONResponse({"db": res.db, "cache": res.cache})


async def slow(request: Request) -> PlainTextResponse:
    """Answer after a while, using the resources before and after the wait."""
    db = resources(request, Resources).db
    print("slow request begins", flush=True)
    await anyio.sleep(SLOW_REQUEST)
    print("slow request ends", flush=True)
    return PlainTextResponse(f"slow {db} {resources(request, Resources).cache}")


async def crash(request: Request) -> PlainTextResponse:
    """Make the background task fail."""
    assert Crash.event is not None
    Crash.event.set()
    return PlainTextResponse("crashing")


policy = cast("FailurePolicy", os.environ.get(POLICY_VARIABLE, "stop"))
app = Starlette(
    routes=[
        Route("/", home),
        Route("/slow", slow),
        Route("/crash", crash),
        *health_routes(),
    ],
    lifespan=lifespan(registry, Resources, concurrency=1, on_failure=policy),
)
