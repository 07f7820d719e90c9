"""Run a registry as a Starlette or FastAPI lifespan; read its resources per request.

```python
app = Starlette(routes=routes, lifespan=lifespan(registry, Resources))


async def home(request: Request) -> Response:
    database = resources(request, Resources).db  # typed as Database
    return JSONResponse(await database.fetch_notes())
```

The started resources travel in the ASGI lifespan state, the dictionary the
server copies into every request's scope: nothing is global, so several apps in
one process (or one app under several test clients) each have their own.

Added in 0.1.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Final, Generic, Literal, TypeVar, cast, final, overload

try:
    from starlette.requests import HTTPConnection, Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import BaseRoute, Route
    from starlette.types import Scope
except ImportError as _missing:  # pragma: no cover  # checked in a subprocess
    _MESSAGE = (
        "lifespan_kit.starlette needs Starlette, which is not installed; install it "
        'with: pip install "lifespan_kit[starlette]"'
    )
    raise ImportError(_MESSAGE) from _missing

from lifespan_kit._bundle import ResourceMap
from lifespan_kit._lifespan import Lifespan
from lifespan_kit._models import Bundle
from lifespan_kit._registry import Registry
from lifespan_kit._report import Listener
from lifespan_kit._resource import Resource
from lifespan_kit._types import ValueT
from lifespan_kit.errors import LifespanNotRunCause, LifespanNotRunError

__all__ = [
    "AppLifespan",
    "InnerLifespan",
    "health_routes",
    "lifespan",
    "resource",
    "resources",
]

BundleT = TypeVar("BundleT", bound=Bundle)
ResultT = TypeVar("ResultT", bound="Bundle | ResourceMap")
AppT = TypeVar("AppT")
AppT_contra = TypeVar("AppT_contra", contravariant=True)

InnerLifespan = Callable[
    [AppT, ResultT], AbstractAsyncContextManager[Mapping[str, object] | None]
]
"""Your own lifespan, run inside lifespan_kit's: it receives the app and the bundle.

What it yields (a mapping or None) is added to the lifespan state, as a plain
Starlette lifespan's would be.

Example:
    ```python
    @asynccontextmanager
    async def warm_up(app: FastAPI, resources: Resources) -> AsyncIterator[None]:
        await resources.cache.set("started", "yes")  # after the resources started
        yield  # before they stop


    inner: InnerLifespan[FastAPI, Resources] = warm_up
    app = FastAPI(lifespan=lifespan(registry, Resources, inner=inner))
    ```
"""

_STATE_KEY: Final = "lifespan_kit"
_AppPhase = Literal["running", "draining"]


@final
class _AppState:
    """What one run of the lifespan puts into the ASGI lifespan state."""

    __slots__ = ("lifespan", "phase", "result", "values")

    def __init__(
        self, lifespan: Lifespan[Bundle | ResourceMap], result: Bundle | ResourceMap
    ) -> None:
        self.lifespan = lifespan
        self.result = result
        self.values = lifespan.resources
        self.phase: _AppPhase = "running"


@final
class AppLifespan(Generic[ResultT, AppT_contra]):
    """A Starlette lifespan that starts a registry's resources for an app.

    Get one from [lifespan][lifespan_kit.starlette.lifespan] and pass it as
    ``Starlette(lifespan=...)`` or ``FastAPI(lifespan=...)``. Each time an app
    runs it, a new [Lifespan][lifespan_kit.Lifespan] starts the resources, so
    one object may serve several apps, or several test clients, at once.

    Example:
        ```python
        app_lifespan = lifespan(registry, Resources)
        app = FastAPI(lifespan=app_lifespan)
        print(app_lifespan.resource_names)  # what each run starts, in order
        ```

    Added in 0.1.
    """

    def __init__(
        self,
        open_lifespan: Callable[[], Lifespan[ResultT]],
        *,
        inner: InnerLifespan[AppT_contra, ResultT] | None,
    ) -> None:
        self._open_lifespan = open_lifespan
        self._inner = inner
        # Opening validates the graph now, when the app is created.
        self._resource_names = open_lifespan().resource_names

    @property
    def resource_names(self) -> tuple[str, ...]:
        """The resources each run starts, in sequential start order."""
        return self._resource_names

    def __call__(
        self, app: AppT_contra, /
    ) -> AbstractAsyncContextManager[Mapping[str, object]]:
        """Return the context manager Starlette enters for `app`'s lifespan."""
        return self._run(app)

    @asynccontextmanager
    async def _run(
        self, app: AppT_contra
    ) -> AsyncGenerator[Mapping[str, object], None]:
        lifespan = self._open_lifespan()
        async with lifespan as result:
            state = _AppState(lifespan, result)
            inner = (
                nullcontext(None) if self._inner is None else self._inner(app, result)
            )
            async with inner as inner_state:
                try:
                    yield {**(inner_state or {}), _STATE_KEY: state}
                finally:
                    state.phase = "draining"

    def __repr__(self) -> str:
        return f"<AppLifespan resources={list(self._resource_names)!r}>"


@overload
def lifespan(
    registry: Registry,
    bundle: type[BundleT],
    /,
    *,
    inner: None = None,
    concurrency: int | None = None,
    listeners: Sequence[Listener] = (),
) -> AppLifespan[BundleT, object]: ...
@overload
def lifespan(
    registry: Registry,
    bundle: type[BundleT],
    /,
    *,
    inner: InnerLifespan[AppT, BundleT],
    concurrency: int | None = None,
    listeners: Sequence[Listener] = (),
) -> AppLifespan[BundleT, AppT]: ...
@overload
def lifespan(
    registry: Registry,
    bundle: None = None,
    /,
    *,
    inner: None = None,
    concurrency: int | None = None,
    listeners: Sequence[Listener] = (),
) -> AppLifespan[ResourceMap, object]: ...
@overload
def lifespan(
    registry: Registry,
    bundle: None = None,
    /,
    *,
    inner: InnerLifespan[AppT, ResourceMap],
    concurrency: int | None = None,
    listeners: Sequence[Listener] = (),
) -> AppLifespan[ResourceMap, AppT]: ...
def lifespan(
    registry: Registry,
    bundle: type[BundleT] | None = None,
    /,
    *,
    inner: InnerLifespan[AppT, BundleT]
    | InnerLifespan[AppT, ResourceMap]
    | None = None,
    concurrency: int | None = None,
    listeners: Sequence[Listener] = (),
) -> AppLifespan[BundleT, AppT] | AppLifespan[ResourceMap, AppT]:
    """Return a lifespan for ``Starlette(lifespan=...)`` or ``FastAPI(lifespan=...)``.

    The graph is validated now, so a bad declaration fails when the app is
    created. When the server starts the app, the resources start; if one fails,
    the server is told the startup failed (with the error's text) and exits
    without serving. When the server stops, the resources stop in reverse.

    Args:
        registry: The resources' [Registry][lifespan_kit.Registry].
        bundle: A [Bundle][lifespan_kit.Bundle] subclass; without one, every
            resource starts and requests see a
            [ResourceMap][lifespan_kit.ResourceMap].
        inner: Your own lifespan, entered after the resources started and exited
            before they stop; it receives the app and the bundle.
        concurrency: How many resources may start at once; None for no limit.
        listeners: Extra event listeners for this lifespan only.

    Returns:
        The [AppLifespan][lifespan_kit.starlette.AppLifespan].

    Raises:
        GraphError: Listing every missing dependency, cycle and unknown name.
        InvalidBundleError: When `bundle` is not a Bundle subclass.
        InvalidOptionError: When `concurrency` is not a positive int.

    Example:
        ```python
        @asynccontextmanager
        async def warm_up(app: FastAPI, resources: Resources) -> AsyncIterator[None]:
            await resources.cache.set("started", "yes")
            yield

        app = FastAPI(lifespan=lifespan(registry, Resources, inner=warm_up))
        ```

    Added in 0.1.
    """
    if bundle is None:

        def open_map() -> Lifespan[ResourceMap]:
            return registry.lifespan(concurrency=concurrency, listeners=listeners)

        # The overloads pair a missing bundle with an inner taking a ResourceMap.
        map_inner = cast("InnerLifespan[AppT, ResourceMap] | None", inner)
        return AppLifespan(open_map, inner=map_inner)

    bundle_class = bundle

    def open_bundle() -> Lifespan[BundleT]:
        return registry.lifespan(
            bundle_class, concurrency=concurrency, listeners=listeners
        )

    # The overloads pair a bundle class with an inner taking that bundle.
    bundle_inner = cast("InnerLifespan[AppT, BundleT] | None", inner)
    return AppLifespan(open_bundle, inner=bundle_inner)


# --- reading resources in a request -------------------------------------------


@overload
def resources(connection: HTTPConnection, bundle: type[BundleT], /) -> BundleT: ...
@overload
def resources(connection: HTTPConnection, /) -> Bundle | ResourceMap: ...
def resources(
    connection: HTTPConnection, bundle: type[BundleT] | None = None, /
) -> BundleT | Bundle | ResourceMap:
    """Return what the app's lifespan yielded: the bundle, or a ResourceMap.

    Args:
        connection: The request (or websocket) being served.
        bundle: The bundle class the app's lifespan was created with; the
            result is checked against it and typed as it.

    Returns:
        The bundle the lifespan yielded.

    Raises:
        LifespanNotRunError: When the app's lifespan did not run (the message
            says why), or when it yields another bundle class.

    Example:
        ```python
        async def list_notes(request: Request) -> JSONResponse:
            db = resources(request, Resources).db  # typed as Database
            return JSONResponse(await db.fetch_notes())
        ```

    Added in 0.1.
    """
    result = _app_state(connection, "read the resources", bundle).result
    if bundle is None or isinstance(result, bundle):
        return result
    raise LifespanNotRunError(
        action="read the resources",
        cause="other-bundle",
        app=type(connection.scope.get("app")).__name__,
        expected=bundle.__name__,
        found=type(result).__name__,
    )


@overload
def resource(connection: HTTPConnection, key: Resource[ValueT], /) -> ValueT: ...
@overload
def resource(connection: HTTPConnection, key: str, /) -> object: ...
def resource(connection: HTTPConnection, key: Resource[ValueT] | str, /) -> object:
    """Return one started resource's value, by its handle (typed) or by name.

    Any resource the lifespan started can be read, also a dependency that is
    not a field of the bundle.

    Args:
        connection: The request (or websocket) being served.
        key: The [Resource][lifespan_kit.Resource] handle, or the resource's name.

    Returns:
        The value; typed as the resource's value when `key` is a handle.

    Raises:
        LifespanNotRunError: When the app's lifespan did not run.
        UnknownResourceError: When the lifespan did not start that resource.

    Example:
        ```python
        async def greeting(request: Request) -> JSONResponse:
            database = resource(request, db)  # by its handle: typed as Database
            settings = resource(request, "settings")  # by name: typed as object
            return JSONResponse({"greeting": await database.fetch_greeting()})
        ```

    Added in 0.1.
    """
    return _app_state(connection, "read a resource", None).values[key]


def _app_state(
    connection: HTTPConnection, action: str, bundle: type[Bundle] | None
) -> _AppState:
    scope = connection.scope
    try:
        state: _AppState = scope["state"][_STATE_KEY]
    except KeyError:
        raise _not_run_error(scope, action, bundle) from None
    return state


def _not_run_error(
    scope: Scope, action: str, bundle: type[Bundle] | None
) -> LifespanNotRunError:
    """Work out from the scope why the lifespan's state is missing."""
    app: object = scope.get("app")
    router: object = getattr(app, "router", None)
    # The outermost Starlette router puts itself in the scope; a mounted app's
    # own router comes later and leaves it there.
    outermost: object = scope.get("router", router)
    cause: LifespanNotRunCause
    if outermost is not router:
        cause = "mounted"
    elif "state" not in scope:
        cause = "no-state"
    elif isinstance(getattr(router, "lifespan_context", None), AppLifespan):
        cause = "not-entered"
    else:
        cause = "no-lifespan"
    return LifespanNotRunError(
        action=action,
        cause=cause,
        app=type(app).__name__,
        expected=None if bundle is None else bundle.__name__,
    )


# --- readiness and liveness ---------------------------------------------------


def health_routes(
    *, ready_path: str = "/readyz", live_path: str = "/livez"
) -> list[BaseRoute]:
    """Return a readiness route and a liveness route for probes and load balancers.

    Readiness (``GET /readyz``) runs every health check declared on the
    started resources and answers 200 with a JSON report when all pass; it
    answers 503 while the lifespan has not started, while it is draining
    (shutting down) and when a check fails. The JSON body always has a
    ``status`` ("ready", "starting", "draining" or "unhealthy") and
    ``resources``, each resource's outcome by name.

    Liveness (``GET /livez``) answers 200 as long as the process serves
    requests, whatever the resources' health: restarting a process does not
    heal its database. Its body says the lifespan's phase.

    Args:
        ready_path: The readiness route's path.
        live_path: The liveness route's path.

    Returns:
        The two routes, for ``Starlette(routes=...)`` or ``FastAPI(routes=...)``.

    Example:
        ```python
        app = FastAPI(lifespan=lifespan(registry, Resources), routes=health_routes())
        ```

    Added in 0.1.
    """
    return [
        Route(ready_path, _readiness, methods=["GET"], name="lifespan_kit_readyz"),
        Route(live_path, _liveness, methods=["GET"], name="lifespan_kit_livez"),
    ]


_NO_STORE: Final = {"cache-control": "no-store"}


async def _readiness(request: Request) -> Response:
    try:
        state = _app_state(request, "check readiness", None)
    except LifespanNotRunError as exc:
        body: dict[str, object] = {
            "status": "starting",
            "resources": {},
            "detail": exc.summary(),
        }
        return JSONResponse(body, status_code=503, headers=_NO_STORE)
    if state.phase != "running":
        body = {"status": state.phase, "resources": {}}
        return JSONResponse(body, status_code=503, headers=_NO_STORE)
    report = await state.lifespan.health()
    body = {
        "status": "ready" if report.is_healthy else "unhealthy",
        "resources": report.model_dump(mode="json")["resources"],
    }
    code = 200 if report.is_healthy else 503
    return JSONResponse(body, status_code=code, headers=_NO_STORE)


async def _liveness(request: Request) -> Response:
    state: _AppState | None = request.scope.get("state", {}).get(_STATE_KEY)
    phase = "starting" if state is None else state.phase
    body = {"status": "alive", "lifespan": phase}
    return JSONResponse(body, headers=_NO_STORE)
