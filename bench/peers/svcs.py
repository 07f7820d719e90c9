"""svcs: app-lifetime values registered in the lifespan, closed with the registry.

svcs's factories are per-request (a ``Container`` lives for one request); for
objects that live as long as the app, its docs create them in the lifespan
and ``register_value(..., on_registry_close=...)`` them, and closing the
registry runs those callbacks in reverse registration order. svcs has no
dependency graph: the lifespan creates the resources in an order its author
chooses, one at a time; here, the index order, which is topological. W3:
``svcs.fastapi.lifespan`` and ``svcs.fastapi.DepContainer``.
"""

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import svcs
from common import (
    W3_PATH,
    Adapter,
    AppSettings,
    Cache,
    Database,
    Enter,
    Graph,
    item_body,
)
from fastapi import FastAPI


def _closer(graph: Graph, index: int) -> Callable[[], Awaitable[None]]:
    hooks = graph.hooks

    async def close() -> None:
        if hooks is not None:
            await hooks.stop(index)

    return close


def build(graph: Graph, backend: str) -> Enter:
    types = graph.types
    closers = [_closer(graph, index) for index in range(len(types))]
    hooks = graph.hooks

    @asynccontextmanager
    async def run() -> AsyncIterator[None]:
        async with svcs.Registry() as registry:
            for index, produced in enumerate(types):
                if hooks is not None:
                    await hooks.start(index)
                registry.register_value(
                    produced, produced(), on_registry_close=closers[index]
                )
            yield

    return run


@svcs.fastapi.lifespan
async def lifespan(
    app: FastAPI, registry: svcs.Registry
) -> AsyncGenerator[dict[str, object] | None, None]:
    settings = AppSettings()
    registry.register_value(AppSettings, settings)
    registry.register_value(Database, Database(settings))
    registry.register_value(Cache, Cache(settings))
    yield {}


async def item(services: svcs.fastapi.DepContainer) -> dict[str, str]:
    database, cache = await services.aget(Database, Cache)
    return item_body(database, cache)


def fastapi_app(backend: str) -> FastAPI:
    app = FastAPI(lifespan=lifespan)
    app.get(W3_PATH)(item)
    return app


ADAPTERS = [
    Adapter(
        label="svcs",
        distribution="svcs",
        backends=("asyncio", "trio"),
        build=build,
        fastapi_app=fastapi_app,
        notes=(
            "no dependency graph for app-lifetime objects: the lifespan creates "
            "them one at a time in the order its author writes (here the "
            "topological order), registering each, and closing the registry "
            "runs the on_registry_close callbacks in reverse. Nothing to "
            "validate: registering happens in the (timed) start.",
        ),
    )
]
