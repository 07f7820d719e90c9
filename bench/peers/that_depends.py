"""that-depends: a container class of ``providers.Resource`` async generators.

As its docs show: a ``BaseContainer`` subclass whose attributes are
``providers.Resource(factory, dependency_provider, ...)``,
``await Container.init_resources()`` at startup and
``await Container.tear_down()`` at shutdown. ``init_resources`` resolves the
resources one at a time in declaration order; ``tear_down`` goes in reverse
declaration order. W3: ``Depends(Container.provider)`` in the endpoint.
"""

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

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
from fastapi import Depends, FastAPI
from that_depends import BaseContainer, providers

_graphs = itertools.count()


def build(graph: Graph, backend: str) -> Enter:
    attributes: dict[str, object] = {}
    for index, name in enumerate(graph.names):
        dependencies = {
            f"d{k}": attributes[graph.names[d]]
            for k, d in enumerate(graph.dependencies[index])
        }
        attributes[name] = providers.Resource(
            keyword_resource(graph, index), **dependencies
        )
    # that-depends keeps its containers by class name: one name per graph.
    container: type[BaseContainer] = type(
        f"Graph{next(_graphs)}", (BaseContainer,), attributes
    )

    @asynccontextmanager
    async def run() -> AsyncIterator[None]:
        try:
            await container.init_resources()
            yield
        finally:
            await container.tear_down()

    return run


async def create_settings() -> AsyncIterator[AppSettings]:
    yield AppSettings()


async def create_database(settings: AppSettings) -> AsyncIterator[Database]:
    yield Database(settings)


async def create_cache(settings: AppSettings) -> AsyncIterator[Cache]:
    yield Cache(settings)


class Container(BaseContainer):
    settings = providers.Resource(create_settings)
    database = providers.Resource(create_database, settings.cast)
    cache = providers.Resource(create_cache, settings.cast)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await Container.init_resources()
    yield
    await Container.tear_down()


async def item(
    database: Annotated[Database, Depends(Container.database)],
    cache: Annotated[Cache, Depends(Container.cache)],
) -> dict[str, str]:
    return item_body(database, cache)


def fastapi_app(backend: str) -> FastAPI:
    app = FastAPI(lifespan=lifespan)
    app.get(W3_PATH)(item)
    return app


ADAPTERS = [
    Adapter(
        label="that-depends",
        distribution="that-depends",
        backends=("asyncio",),
        build=build,
        fastapi_app=fastapi_app,
        notes=(
            "init_resources() starts the resources one at a time in declaration "
            "order, tear_down() stops them in reverse; asyncio only (asyncio.Lock "
            "inside Resource).",
        ),
    )
]
