"""wireup: ``@injectable`` async generator factories in an async container.

As its docs show: factories decorated with ``wireup.injectable`` (singletons,
the default lifetime), ``wireup.create_async_container(injectables=[...])``
(which validates the graph) and ``await container.close()``, which runs the
generators' cleanup in reverse creation order. wireup creates a singleton when
it is first requested, one at a time, so "start" requests every resource once.
W3: ``wireup.integration.fastapi.setup`` with ``Injected[...]`` parameters.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import wireup
import wireup.integration.fastapi
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
from wireup import Injected

from peers.typed import typed_factory


def build(graph: Graph, backend: str) -> Enter:
    types = graph.types
    factories = [
        wireup.injectable(typed_factory(graph, index, types))
        for index in range(len(types))
    ]
    wireup.create_async_container(injectables=factories)  # validates the graph

    @asynccontextmanager
    async def run(container: wireup.AsyncContainer) -> AsyncIterator[None]:
        try:
            for produced in types:
                await container.get(produced)
            yield
        finally:
            await container.close()

    # A closed container keeps its singletons: each run needs a new one.
    return lambda: run(wireup.create_async_container(injectables=factories))


@wireup.injectable
async def create_settings() -> AsyncIterator[AppSettings]:
    yield AppSettings()


@wireup.injectable
async def create_database(settings: AppSettings) -> AsyncIterator[Database]:
    yield Database(settings)


@wireup.injectable
async def create_cache(settings: AppSettings) -> AsyncIterator[Cache]:
    yield Cache(settings)


async def item(database: Injected[Database], cache: Injected[Cache]) -> dict[str, str]:
    return item_body(database, cache)


def fastapi_app(backend: str) -> FastAPI:
    app = FastAPI()
    app.get(W3_PATH)(item)
    container = wireup.create_async_container(
        injectables=[create_settings, create_database, create_cache]
    )
    wireup.integration.fastapi.setup(container, app)
    return app


ADAPTERS = [
    Adapter(
        label="wireup",
        distribution="wireup",
        backends=("asyncio",),
        build=build,
        fastapi_app=fastapi_app,
        notes=(
            "creates singletons when first requested, one at a time: start = "
            "container.get() of every resource, stop = container.close(). A "
            "closed container keeps its singletons, so each run makes a new "
            "container before the clock starts. asyncio only (asyncio.Lock "
            "inside).",
        ),
    )
]
