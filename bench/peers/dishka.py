"""dishka: a Provider with APP-scoped async generator factories.

As dishka's docs show: ``Provider(scope=Scope.APP)``, ``provide()`` for each
factory, ``make_async_container`` (which validates the graph) and
``container.close()``, which finalizes in reverse creation order. dishka
creates an object when it is first requested, one at a time, so "start"
requests every resource once. W3: ``setup_dishka`` with ``@inject`` and
``FromDishka[...]``.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
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
from dishka import (
    AsyncContainer,
    FromDishka,
    Provider,
    Scope,
    make_async_container,
    provide,
)
from dishka.integrations.fastapi import inject, setup_dishka
from fastapi import FastAPI

from peers.typed import typed_factory


def _container(backend: str, *providers: Provider) -> AsyncContainer:
    if backend == "trio":
        # dishka's default lock is asyncio.Lock; lock_factory takes any async lock.
        return make_async_container(*providers, lock_factory=anyio.Lock)
    return make_async_container(*providers)


def build(graph: Graph, backend: str) -> Enter:
    types = graph.types
    provider = Provider(scope=Scope.APP)
    for index, produced in enumerate(types):
        provider.provide(typed_factory(graph, index, types), provides=produced)
    container = _container(backend, provider)

    @asynccontextmanager
    async def run() -> AsyncIterator[None]:
        try:
            for produced in types:
                await container.get(produced)
            yield
        finally:
            await container.close()

    return run


class AppProvider(Provider):
    scope = Scope.APP

    @provide
    async def settings(self) -> AsyncIterator[AppSettings]:
        yield AppSettings()

    @provide
    async def database(self, settings: AppSettings) -> AsyncIterator[Database]:
        yield Database(settings)

    @provide
    async def cache(self, settings: AppSettings) -> AsyncIterator[Cache]:
        yield Cache(settings)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await app.state.dishka_container.close()


@inject
async def item(
    database: FromDishka[Database], cache: FromDishka[Cache]
) -> dict[str, str]:
    return item_body(database, cache)


def fastapi_app(backend: str) -> FastAPI:
    app = FastAPI(lifespan=lifespan)
    app.get(W3_PATH)(item)
    setup_dishka(_container(backend, AppProvider()), app)
    return app


ADAPTERS = [
    Adapter(
        label="dishka",
        distribution="dishka",
        backends=("asyncio", "trio"),
        build=build,
        fastapi_app=fastapi_app,
        notes=(
            "creates APP-scoped objects when first requested, one at a time: start "
            "= container.get() of every resource, stop = container.close() "
            "(reverse creation order).",
            "on trio: its default lock is asyncio.Lock, so the adapter passes "
            "make_async_container(..., lock_factory=anyio.Lock).",
        ),
    )
]
