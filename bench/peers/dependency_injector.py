"""Dependency Injector: a container of ``providers.Resource`` async generators.

As its docs show: ``providers.Resource(init, dependency=other_provider)`` on a
container (a ``DynamicContainer`` here, since the graph is made in a loop; a
``DeclarativeContainer`` in W3), ``await container.init_resources()`` and
``await container.shutdown_resources()``. Initialization gathers every
resource at once, each awaiting its dependencies; shutdown goes in waves of
resources that no initialized resource depends on. W3: ``container.wire()``
with ``@inject`` and ``Depends(Provide[Container.provider])``.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from common import (
    W3_PATH,
    Adapter,
    AppSettings,
    Cache,
    Database,
    Enter,
    Graph,
    item_body,
    keyword_resource,
)
from dependency_injector import containers, providers
from dependency_injector.wiring import Provide, inject
from fastapi import Depends, FastAPI


def build(graph: Graph, backend: str) -> Enter:
    container = containers.DynamicContainer()
    resources: list[providers.Resource[object]] = []
    for index, name in enumerate(graph.names):
        dependencies = {
            f"d{k}": resources[d] for k, d in enumerate(graph.dependencies[index])
        }
        resource = providers.Resource(keyword_resource(graph, index), **dependencies)
        resources.append(resource)
        setattr(container, name, resource)

    @asynccontextmanager
    async def run() -> AsyncIterator[None]:
        try:
            await container.init_resources()  # type: ignore[misc]  # awaitable: async resources
            yield
        finally:
            await container.shutdown_resources()  # type: ignore[misc]  # as above

    return run


async def create_settings() -> AsyncIterator[AppSettings]:
    yield AppSettings()


async def create_database(settings: AppSettings) -> AsyncIterator[Database]:
    yield Database(settings)


async def create_cache(settings: AppSettings) -> AsyncIterator[Cache]:
    yield Cache(settings)


class Container(containers.DeclarativeContainer):
    settings = providers.Resource(create_settings)
    database = providers.Resource(create_database, settings=settings)
    cache = providers.Resource(create_cache, settings=settings)


@inject
async def item(
    database: Database = Depends(Provide[Container.database]),  # noqa: B008
    cache: Cache = Depends(Provide[Container.cache]),  # noqa: B008
) -> dict[str, str]:
    return item_body(database, cache)


def fastapi_app(backend: str) -> FastAPI:
    container = Container()
    container.wire(modules=[__name__])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await container.init_resources()  # type: ignore[misc]  # awaitable: async resources
        yield
        await container.shutdown_resources()  # type: ignore[misc]  # as above

    app = FastAPI(lifespan=lifespan)
    app.get(W3_PATH)(item)
    return app


ADAPTERS = [
    Adapter(
        label="dependency-injector",
        distribution="dependency-injector",
        backends=("asyncio",),
        build=build,
        fastapi_app=fastapi_app,
        notes=(
            "init_resources() starts every resource at once (each awaits its "
            "dependencies); shutdown_resources() stops in waves of resources no "
            "started resource depends on, and finding each wave compares every "
            "pair of resources: quadratic in N (about 4 s for N=1000 here), so "
            "W2 gives it fewer rounds and skips N=10000. asyncio only (asyncio "
            "futures and gather).",
        ),
    )
]
