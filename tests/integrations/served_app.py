"""The app the uvicorn tests serve: its resources print when they start and stop.

Set ``LIFESPAN_KIT_TEST_FAIL`` to a resource's name to make it fail to start.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lifespan_kit import Bundle, Registry
from lifespan_kit.starlette import health_routes, lifespan, resources

FAIL_VARIABLE = "LIFESPAN_KIT_TEST_FAIL"


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


registry = Registry()
registry.add("settings", recorded("settings"))
registry.add("db", recorded("db"), depends={"settings": "settings"})
registry.add("cache", recorded("cache"), depends={"settings": "settings"})


class Resources(Bundle):
    """What the handlers use."""

    db: str
    cache: str


async def home(request: Request) -> JSONResponse:
    """Answer with the names of the resources the handler received."""
    res = resources(request, Resources)
    return JSONResponse({"db": res.db, "cache": res.cache})


app = Starlette(
    routes=[Route("/", home), *health_routes()],
    lifespan=lifespan(registry, Resources, concurrency=1),
)
