"""lifespan_kit in the comparison: the same workloads as every other library.

Two rows: the default concurrent lifespan, and ``concurrency=1``, which starts
one resource at a time like the sequential libraries. W3 has two rows as well:
the whole bundle through ``lifespan_kit.fastapi.resources``, and each resource
through ``lifespan_kit.fastapi.resource(handle)``.

Annotations stay real objects here (no ``from __future__ import annotations``)
because FastAPI reads the endpoints' signatures at runtime.
"""

from collections.abc import AsyncIterator, Callable
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
    noop_resource,
)
from fastapi import Depends, FastAPI

import lifespan_kit.fastapi
import lifespan_kit.starlette
from lifespan_kit import Bundle, Registry

BACKENDS = ("asyncio", "trio")


def _factory(graph: Graph, index: int) -> Callable[..., AsyncIterator[None]]:
    hooks = graph.hooks
    if hooks is None:
        return noop_resource

    async def factory(**dependencies: object) -> AsyncIterator[None]:
        await hooks.start(index)
        yield None
        await hooks.stop(index)

    return factory


def _build(concurrency: int | None) -> Callable[[Graph, str], Enter]:
    def build(graph: Graph, backend: str) -> Enter:
        registry = Registry()
        for index, name in enumerate(graph.names):
            depends = {
                f"d{k}": graph.names[d] for k, d in enumerate(graph.dependencies[index])
            }
            registry.add(name, _factory(graph, index), depends=depends)
        lifespan = registry.lifespan(concurrency=concurrency)  # validates the graph
        return lambda: lifespan

    return build


# --- W3 --------------------------------------------------------------------------

registry = Registry()


@registry.resource
async def settings() -> AsyncIterator[AppSettings]:
    yield AppSettings()


@registry.resource
async def database(settings: AppSettings) -> AsyncIterator[Database]:
    yield Database(settings)


@registry.resource
async def cache(settings: AppSettings) -> AsyncIterator[Cache]:
    yield Cache(settings)


class Resources(Bundle):
    """The resources W3's endpoint reads."""

    database: Database
    cache: Cache


def bundle_app(backend: str) -> FastAPI:
    app = FastAPI(lifespan=lifespan_kit.starlette.lifespan(registry, Resources))

    @app.get(W3_PATH)
    async def item(
        res: Annotated[Resources, Depends(lifespan_kit.fastapi.resources)],
    ) -> dict[str, str]:
        return item_body(res.database, res.cache)

    return app


DatabaseDep = Annotated[Database, Depends(lifespan_kit.fastapi.resource(database))]
CacheDep = Annotated[Cache, Depends(lifespan_kit.fastapi.resource(cache))]


def resource_app(backend: str) -> FastAPI:
    app = FastAPI(lifespan=lifespan_kit.starlette.lifespan(registry, Resources))

    @app.get(W3_PATH)
    async def item(database: DatabaseDep, cache: CacheDep) -> dict[str, str]:
        return item_body(database, cache)

    return app


ADAPTERS = [
    Adapter(
        label="lifespan_kit concurrent",
        distribution="lifespan_kit",
        backends=BACKENDS,
        build=_build(None),
        fastapi_app=bundle_app,
        w3_label="lifespan_kit resources",
        notes=(
            "registry.lifespan(); W3 row 'lifespan_kit resources': the whole "
            "bundle through Depends(lifespan_kit.fastapi.resources).",
        ),
    ),
    Adapter(
        label="lifespan_kit sequential",
        distribution="lifespan_kit",
        backends=BACKENDS,
        build=_build(1),
        fastapi_app=resource_app,
        w3_label="lifespan_kit resource()",
        notes=(
            "registry.lifespan(concurrency=1); W3 row 'lifespan_kit resource()': "
            "one Depends(lifespan_kit.fastapi.resource(handle)) per resource.",
        ),
    ),
]

__all__ = ["ADAPTERS"]
