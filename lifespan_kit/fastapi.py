"""FastAPI dependencies that hand a handler the resources its app's lifespan started.

```python
app = FastAPI(lifespan=lifespan_kit.starlette.lifespan(registry, Resources))


@app.get("/notes")
async def list_notes(
    res: Annotated[Resources, Depends(lifespan_kit.fastapi.resources)],
    cache: Annotated[Cache, Depends(lifespan_kit.fastapi.resource(cache_resource))],
) -> list[str]:
    notes = await res.db.fetch_notes()
    await cache.set("notes", ",".join(notes))
    return notes
```

The dependencies are `async def`, so FastAPI calls them on the event loop
instead of sending them to its thread pool, and reading a resource costs about
as much as reading `request.state`. They work in websocket endpoints too.

Added in 0.1.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

try:
    # FastAPI reads the dependencies' signatures at runtime: these names must
    # be importable, never imported for type checking only.
    from fastapi.requests import HTTPConnection
except ImportError as _missing:  # pragma: no cover  # checked in a subprocess
    _MESSAGE = (
        "lifespan_kit.fastapi needs FastAPI, which is not installed; install it "
        'with: pip install "lifespan_kit[fastapi]"'
    )
    raise ImportError(_MESSAGE) from _missing

from lifespan_kit import starlette as _starlette
from lifespan_kit._bundle import Bundle, ResourceMap
from lifespan_kit._resource import Resource
from lifespan_kit._types import ValueT

__all__ = ["bundle", "resource", "resources"]

BundleT = TypeVar("BundleT", bound=Bundle)


async def resources(connection: HTTPConnection) -> Bundle | ResourceMap:
    """Depend on the bundle the app's lifespan yielded.

    Annotate the parameter with your bundle class: the annotation gives the
    type, and ``Depends`` fills it. When the app runs several lifespan_kit
    lifespans (``APIRouter(lifespan=...)``), this is the app's own one; depend
    on [bundle][lifespan_kit.fastapi.bundle] to pick another by its class.

    Args:
        connection: The request or websocket; FastAPI passes it.

    Returns:
        The bundle (a [ResourceMap][lifespan_kit.ResourceMap] when the lifespan
        was created without a bundle class).

    Raises:
        LifespanNotRunError: When the app's lifespan did not run (the message
            says why).

    Example:
        ```python
        @app.get("/")
        async def home(
            res: Annotated[Resources, Depends(lifespan_kit.fastapi.resources)],
        ) -> str:
            return await res.db.fetch_greeting()
        ```

    Added in 0.1.
    """
    return _starlette.resources(connection)


def bundle(
    bundle_class: type[BundleT], /
) -> Callable[[HTTPConnection], Awaitable[BundleT]]:
    """Return a dependency on the bundle of the lifespan that yields `bundle_class`.

    Use it when the app runs several lifespan_kit lifespans, such as one given
    to ``FastAPI(lifespan=...)`` and one to ``APIRouter(lifespan=...)``: each
    bundle class resolves to the lifespan that yields it. It also checks the
    class, where ``Depends(resources)`` trusts the annotation.

    Args:
        bundle_class: The [Bundle][lifespan_kit.Bundle] subclass a lifespan of
            the app was created with.

    Returns:
        An `async def` dependency for ``Depends``.

    Raises:
        LifespanNotRunError: When no running lifespan of the app yields
            `bundle_class` (the dependency raises it when called).

    Example:
        ```python
        Res = Annotated[Resources, Depends(lifespan_kit.fastapi.bundle(Resources))]


        @app.get("/notes")
        async def list_notes(res: Res) -> list[str]:  # from the lifespan of Resources
            return await res.db.fetch_notes()
        ```

    Added in 0.1.
    """

    async def dependency(connection: HTTPConnection) -> BundleT:
        return _starlette.resources(connection, bundle_class)

    dependency.__name__ = dependency.__qualname__ = f"bundle_{bundle_class.__name__}"
    return dependency


@overload
def resource(
    key: Resource[ValueT], /
) -> Callable[[HTTPConnection], Awaitable[ValueT]]: ...
@overload
def resource(key: str, /) -> Callable[[HTTPConnection], Awaitable[object]]: ...
def resource(
    key: Resource[ValueT] | str, /
) -> Callable[[HTTPConnection], Awaitable[object]]:
    """Return a dependency on one started resource, by its handle or by name.

    With several lifespan_kit lifespans, the name is looked up in the app's own
    lifespan first, then in the others.

    Args:
        key: The [Resource][lifespan_kit.Resource] handle, or the resource's name.

    Returns:
        An `async def` dependency for ``Depends``.

    Example:
        ```python
        Db = Annotated[Database, Depends(lifespan_kit.fastapi.resource(db))]


        @app.get("/")
        async def home(database: Db) -> str:
            return await database.fetch_greeting()
        ```

    Added in 0.1.
    """
    name = key if isinstance(key, str) else key.name

    async def dependency(connection: HTTPConnection) -> object:
        return _starlette.resource(connection, key)

    dependency.__name__ = dependency.__qualname__ = f"resource_{name}"
    return dependency
