"""Types of `lifespan_kit.starlette`: the lifespan, the accessors, the routes.

Checked by mypy and pyright in strict mode; never executed. Each
``# type: ignore[...]`` marks a call the API must reject; both checkers flag
an ignore that is no longer needed.
"""

# pyright: reportUnnecessaryTypeIgnoreComment=true

from __future__ import annotations

from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Generator,
    Iterator,
    Mapping,
)
from contextlib import (
    AbstractAsyncContextManager,
    asynccontextmanager,
    contextmanager,
)

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.websockets import WebSocket
from typing_extensions import assert_type

from lifespan_kit import Bundle, Registry, ResourceMap
from lifespan_kit.starlette import (
    AppLifespan,
    FailurePolicy,
    health_routes,
    lifespan,
    resource,
    resources,
)


class Database:
    async def execute(self, query: str) -> None: ...


registry = Registry()


@registry.resource
async def db() -> AsyncIterator[Database]:
    yield Database()


class Resources(Bundle):
    db: Database


class Other(Bundle):
    db: Database


# --- lifespan -------------------------------------------------------------------

with_bundle = lifespan(registry, Resources)
assert_type(with_bundle, AppLifespan[Resources, object])
assert_type(
    lifespan(registry, Resources, concurrency=1), AppLifespan[Resources, object]
)
assert_type(lifespan(registry), AppLifespan[ResourceMap, object])
assert_type(with_bundle.resource_names, tuple[str, ...])
assert_type(with_bundle(Starlette()), AbstractAsyncContextManager[Mapping[str, object]])

Starlette(lifespan=with_bundle)
FastAPI(lifespan=with_bundle)
Starlette(lifespan=lifespan(registry))


@asynccontextmanager
async def warm_up(app: FastAPI, res: Resources) -> AsyncGenerator[None, None]:
    await res.db.execute("select 1")
    yield


@asynccontextmanager
async def warm_up_map(
    app: Starlette, res: ResourceMap
) -> AsyncGenerator[dict[str, int], None]:
    yield {"workers": 4}


with_inner = lifespan(registry, Resources, inner=warm_up)
assert_type(with_inner, AppLifespan[Resources, FastAPI])
FastAPI(lifespan=with_inner)

map_inner = lifespan(registry, inner=warm_up_map)
assert_type(map_inner, AppLifespan[ResourceMap, Starlette])
Starlette(lifespan=map_inner)


# Every shape Starlette takes for lifespan=, with the bundle as a second argument.
async def warm_up_generator(app: Starlette, res: Resources) -> AsyncIterator[None]:
    yield


def warm_up_sync(app: Starlette, res: Resources) -> Iterator[dict[str, int]]:
    yield {"workers": 4}


def warm_up_cm(app: Starlette, res: Resources) -> Generator[None, None, None]:
    yield


assert_type(
    lifespan(registry, Resources, inner=warm_up_generator),
    AppLifespan[Resources, Starlette],
)
assert_type(
    lifespan(registry, Resources, inner=warm_up_sync), AppLifespan[Resources, Starlette]
)
assert_type(
    lifespan(registry, Resources, inner=contextmanager(warm_up_cm)),
    AppLifespan[Resources, Starlette],
)

policy: FailurePolicy = "degrade"
assert_type(lifespan(registry, Resources, on_failure=policy).on_failure, FailurePolicy)
lifespan(registry, Resources, on_failure="restart")  # type: ignore[call-overload]

lifespan(registry, Resources, inner=warm_up_map)  # type: ignore[arg-type]  # wants a map
lifespan(registry, inner=warm_up)  # type: ignore[arg-type]  # wants a bundle
lifespan(registry, Database)  # type: ignore[type-var]  # not a Bundle


# --- accessors ------------------------------------------------------------------


def handler(request: Request, websocket: WebSocket) -> None:
    assert_type(resources(request, Resources), Resources)
    assert_type(resources(websocket, Other), Other)
    assert_type(resources(request), Bundle | ResourceMap)
    assert_type(resource(request, db), Database)
    assert_type(resource(websocket, "db"), object)
    resource(request, 42)  # type: ignore[call-overload]  # a handle or a name
    resources(request, Database)  # type: ignore[type-var]  # not a Bundle


# --- health routes --------------------------------------------------------------

assert_type(health_routes(), list[BaseRoute])
assert_type(health_routes(ready_path="/ready", live_path="/live"), list[BaseRoute])
Starlette(routes=health_routes())
FastAPI(routes=health_routes())
health_routes("/ready")  # type: ignore[call-arg]  # the paths are keyword-only
