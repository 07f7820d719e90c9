"""Run a registry as a Starlette or FastAPI lifespan; read its resources per request.

```python
app = Starlette(routes=routes, lifespan=lifespan(registry, Resources))


async def home(request: Request) -> Response:
    database = resources(request, Resources).db  # typed as Database
    return JSONResponse(await database.fetch_notes())
```

The started resources travel in the ASGI lifespan state, the dictionary the
server copies into every request's scope: nothing is global, so several apps in
one process (or one app under several test clients) each have their own, and an
app may run several lifespans (FastAPI's router lifespans). A resource that
fails while the app runs turns the health routes to 503 and, by default, stops
the server gracefully.

Added in 0.1.
"""

from __future__ import annotations

from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    nullcontext,
    suppress,
)
from typing import Final, Generic, Literal, TypeVar, cast, final, overload

import anyio

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

from lifespan_kit import _server
from lifespan_kit._bundle import ResourceMap
from lifespan_kit._inner import InnerFactory, InnerState, inner_factory
from lifespan_kit._lifespan import Lifespan
from lifespan_kit._models import Bundle
from lifespan_kit._registry import Registry
from lifespan_kit._report import Listener, log_fields, logger
from lifespan_kit._resource import Resource
from lifespan_kit._types import ValueT
from lifespan_kit.errors import (
    InvalidOptionError,
    LifespanKitError,
    LifespanNotRunCause,
    LifespanNotRunError,
    UnknownResourceError,
)

__all__ = [
    "AppLifespan",
    "FailurePolicy",
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
    [AppT, ResultT],
    AbstractAsyncContextManager[InnerState]
    | AsyncIterator[InnerState]
    | AbstractContextManager[InnerState]
    | Iterator[InnerState],
]
"""Your own lifespan, run inside lifespan_kit's: it receives the app and the bundle.

It takes every shape Starlette takes for ``lifespan=``, with the bundle as a
second argument: a function decorated with ``@asynccontextmanager`` (or any
callable returning an async context manager), an async generator function, a
generator function, or a function returning a sync context manager (sync
shapes run on the event loop: keep them quick).
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

FailurePolicy = Literal["stop", "degrade"]
"""What a running app does when one of its resources fails at runtime.

Either way the failure is logged at once, and ``/readyz`` and ``/livez``
answer 503 naming the resource. With "stop" (the default), the app then asks
the server to shut down gracefully, as SIGTERM does: requests in flight
finish, the resources stop in reverse, and the server exits with a failure
status. With "degrade", it keeps serving until the server is stopped (by an
orchestrator that reads ``/livez``, for instance).

Example:
    ```python
    app = FastAPI(lifespan=lifespan(registry, Resources, on_failure="degrade"))
    ```
"""

_STATE_KEY: Final = "lifespan_kit"
_FAILURE_POLICIES: Final = ("stop", "degrade")
_AppPhase = Literal["running", "draining", "stopped"]


@final
class _AppState:
    """What one run of the lifespan puts into the ASGI lifespan state."""

    __slots__ = (
        "failure",
        "is_closed",
        "key",
        "lifespan",
        "phase",
        "result",
        "values",
    )

    result: Bundle | ResourceMap
    values: ResourceMap

    def __init__(self, lifespan: Lifespan[Bundle | ResourceMap]) -> None:
        self.lifespan = lifespan
        self.phase: _AppPhase = "running"
        # Set when the resources begin to stop: requests no longer get them.
        self.is_closed = False
        self.failure: LifespanKitError | None = None
        # Each run also sits under a key of its own, so that merging the states
        # of several lifespans (FastAPI's router lifespans) keeps every one.
        self.key = f"{_STATE_KEY}:{id(self):x}"

    def start(self, result: Bundle | ResourceMap) -> None:
        """Keep what the lifespan started, for the requests."""
        self.result = result
        self.values = self.lifespan.resources


@final
class AppLifespan(Generic[ResultT, AppT_contra]):
    """A Starlette lifespan that starts a registry's resources for an app.

    Get one from [lifespan][lifespan_kit.starlette.lifespan] and pass it as
    ``Starlette(lifespan=...)``, ``FastAPI(lifespan=...)`` or
    ``APIRouter(lifespan=...)``. Each time an app runs it, a new
    [Lifespan][lifespan_kit.Lifespan] starts the resources, so one object may
    serve several apps, or several test clients, at once.

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
        on_failure: FailurePolicy = "stop",
    ) -> None:
        if on_failure not in _FAILURE_POLICIES:
            raise InvalidOptionError(
                None,
                option="on_failure",
                problem=f"it must be 'stop' or 'degrade', not {on_failure!r}",
                remedy="pass on_failure='stop' (the default) or on_failure='degrade'.",
                owner="lifespan_kit.starlette.lifespan()",
            )
        self._open_lifespan = open_lifespan
        self._inner: InnerFactory | None = (
            None if inner is None else inner_factory(inner)
        )
        self._on_failure: FailurePolicy = on_failure
        # Opening validates the graph now, when the app is created.
        self._resource_names = open_lifespan().resource_names

    @property
    def resource_names(self) -> tuple[str, ...]:
        """The resources each run starts, in sequential start order."""
        return self._resource_names

    @property
    def on_failure(self) -> FailurePolicy:
        """What a run does when a resource fails at runtime: "stop" or "degrade"."""
        return self._on_failure

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
        state = _AppState(lifespan)
        try:
            async with lifespan as result:
                state.start(result)
                try:
                    async with (
                        self._watching(state),
                        self._enter_inner(app, result) as inner_state,
                    ):
                        try:
                            yield {
                                **(inner_state or {}),
                                _STATE_KEY: state,
                                state.key: state,
                            }
                        finally:
                            state.phase = "draining"
                finally:
                    state.is_closed = True
        finally:
            state.phase = "stopped"

    @asynccontextmanager
    async def _watching(self, state: _AppState) -> AsyncGenerator[None, None]:
        """Watch for runtime failures while the app runs."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch, state)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()

    def _enter_inner(
        self, app: AppT_contra, result: ResultT
    ) -> AbstractAsyncContextManager[InnerState]:
        if self._inner is None:
            return nullcontext(None)
        return self._inner(app, result)

    async def _watch(self, state: _AppState) -> None:
        """Wait for a runtime failure; report it, and apply the failure policy."""
        error: LifespanKitError = await state.lifespan.wait_failed()
        state.failure = error
        name = error.resource_name
        if self._on_failure == "degrade":
            logger.error(
                "Resource '%s' failed while the app was running; on_failure="
                "'degrade': the app keeps serving, and /readyz and /livez answer "
                "503 until the server is stopped.",
                name,
                extra=log_fields("degraded", error=error),
            )
            return
        how = _server.ask_server_to_stop()
        if how is None:
            logger.error(
                "Resource '%s' failed while the app was running, and no process "
                "here stops the server on SIGTERM; the app keeps serving, and "
                "/readyz and /livez answer 503 until the server is stopped.",
                name,
                extra=log_fields("degraded", error=error),
            )
        else:
            logger.error(
                "Resource '%s' failed while the app was running; stopping the "
                "server gracefully (%s).",
                name,
                how,
                extra=log_fields("stopping_app", error=error),
            )

    def __repr__(self) -> str:
        return (
            f"<AppLifespan resources={list(self._resource_names)!r} "
            f"on_failure={self._on_failure!r}>"
        )


@overload
def lifespan(
    registry: Registry,
    bundle: type[BundleT],
    /,
    *,
    inner: None = None,
    concurrency: int | None = None,
    listeners: Sequence[Listener] = (),
    on_failure: FailurePolicy = "stop",
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
    on_failure: FailurePolicy = "stop",
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
    on_failure: FailurePolicy = "stop",
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
    on_failure: FailurePolicy = "stop",
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
    on_failure: FailurePolicy = "stop",
) -> AppLifespan[BundleT, AppT] | AppLifespan[ResourceMap, AppT]:
    """Return a lifespan for ``Starlette(lifespan=...)`` or ``FastAPI(lifespan=...)``.

    The graph and `inner` are checked now, so a bad declaration fails when the
    app is created. When the server starts the app, the resources start; if one
    fails, the server is told the startup failed (with the error's text) and
    exits without serving. When the server stops, the resources stop in reverse.
    When a resource fails while the app runs (a background task raises), the
    failure is logged, the health routes answer 503, and `on_failure` decides
    what happens next.

    Args:
        registry: The resources' [Registry][lifespan_kit.Registry].
        bundle: A [Bundle][lifespan_kit.Bundle] subclass; without one, every
            resource starts and requests see a
            [ResourceMap][lifespan_kit.ResourceMap].
        inner: Your own lifespan, entered after the resources started and exited
            before they stop; it receives the app and the bundle. Any shape
            Starlette takes for ``lifespan=`` (see
            [InnerLifespan][lifespan_kit.starlette.InnerLifespan]).
        concurrency: How many resources may start at once; None for no limit.
        listeners: Extra event listeners for this lifespan only.
        on_failure: "stop" (the default) asks the server to shut down
            gracefully when a resource fails at runtime; "degrade" keeps
            serving (see [FailurePolicy][lifespan_kit.starlette.FailurePolicy]).

    Returns:
        The [AppLifespan][lifespan_kit.starlette.AppLifespan].

    Raises:
        GraphError: Listing every missing dependency, cycle and unknown name.
        InvalidBundleError: When `bundle` is not a Bundle subclass.
        InvalidOptionError: When `concurrency` is not a positive int, when
            `on_failure` is not a policy, or when `inner` cannot be a lifespan
            (not callable, an ``async def`` that does not yield, or taking
            other than two arguments).

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
        return AppLifespan(open_map, inner=map_inner, on_failure=on_failure)

    bundle_class = bundle

    def open_bundle() -> Lifespan[BundleT]:
        return registry.lifespan(
            bundle_class, concurrency=concurrency, listeners=listeners
        )

    # The overloads pair a bundle class with an inner taking that bundle.
    bundle_inner = cast("InnerLifespan[AppT, BundleT] | None", inner)
    return AppLifespan(open_bundle, inner=bundle_inner, on_failure=on_failure)


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
    state = _app_state(connection, "read the resources", bundle)
    result = state.result
    if bundle is None or isinstance(result, bundle):
        return result
    for other in _other_states(connection.scope, state):
        if isinstance(other.result, bundle):
            return other.result
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
    state = _app_state(connection, "read a resource", None)
    try:
        return state.values[key]
    except UnknownResourceError:
        for other in _other_states(connection.scope, state):
            with suppress(UnknownResourceError):
                return other.values[key]
        raise


def _app_state(
    connection: HTTPConnection, action: str, bundle: type[Bundle] | None
) -> _AppState:
    """Return the state of the app's (first) lifespan, while it is running."""
    scope = connection.scope
    try:
        state: _AppState = scope["state"][_STATE_KEY]
    except KeyError:
        raise _not_run_error(scope, action, bundle) from None
    if state.is_closed:
        raise LifespanNotRunError(
            action=action,
            cause="stopped",
            app=type(scope.get("app")).__name__,
            expected=None if bundle is None else bundle.__name__,
        )
    return state


def _other_states(scope: Scope, first: _AppState) -> Iterator[_AppState]:
    """The other lifespan_kit lifespans that run for this app, still running."""
    for value in scope["state"].values():
        if type(value) is _AppState and value is not first and not value.is_closed:
            yield value


def _all_states(scope: Scope) -> list[_AppState]:
    """Every lifespan_kit lifespan that ran for this app, each once."""
    states: dict[int, _AppState] = {}
    for value in scope.get("state", {}).values():
        if type(value) is _AppState:
            states[id(value)] = value
    return list(states.values())


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
    started resources, of every lifespan_kit lifespan the app runs, and
    answers 200 with a JSON report when all pass. It answers 503 when a check
    fails, when a resource failed at runtime, while the lifespan has not
    started and once it is shutting down. The JSON body always has a
    ``status`` ("ready", "unhealthy", "failed", "starting", "draining" or
    "stopped") and ``resources``, each checked resource's outcome by name;
    after a runtime failure, ``failed`` maps the failed resource to its error.

    Liveness (``GET /livez``) answers 200 as long as no resource failed at
    runtime, whatever the health checks say: restarting a process does not
    heal its database. After a runtime failure it answers 503 with the same
    ``failed`` map, so that an orchestrator restarts the process. Its body
    also says the lifespan's phase.

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


def _respond(body: Mapping[str, object], *, is_ok: bool) -> Response:
    return JSONResponse(body, status_code=200 if is_ok else 503, headers=_NO_STORE)


async def _readiness(request: Request) -> Response:
    states = _all_states(request.scope)
    if not states:
        error = _not_run_error(request.scope, "check readiness", None)
        body: dict[str, object] = {
            "status": "starting",
            "resources": {},
            "detail": error.summary(),
        }
        return _respond(body, is_ok=False)
    failed = _failures(states)
    if failed:
        return _respond(
            {"status": "failed", "resources": {}, "failed": failed}, is_ok=False
        )
    for state in states:
        if state.phase != "running":
            return _respond({"status": state.phase, "resources": {}}, is_ok=False)
    checked: dict[str, object] = {}
    is_healthy = True
    for state in states:
        report = await state.lifespan.health()
        is_healthy = is_healthy and report.is_healthy
        checked.update(report.model_dump(mode="json")["resources"])
    status = "ready" if is_healthy else "unhealthy"
    return _respond({"status": status, "resources": checked}, is_ok=is_healthy)


async def _liveness(request: Request) -> Response:
    states = _all_states(request.scope)
    phase = "starting" if not states else states[0].phase
    failed = _failures(states)
    if failed:
        return _respond(
            {"status": "failed", "lifespan": phase, "failed": failed}, is_ok=False
        )
    return _respond({"status": "alive", "lifespan": phase}, is_ok=True)


def _failures(states: list[_AppState]) -> dict[str, str]:
    """Each resource that failed at runtime, with its error's summary and cause."""
    failed: dict[str, str] = {}
    for state in states:
        error = state.failure
        if error is not None:
            lines = [error.summary(), *(f"{k}: {v}" for k, v in error.details())]
            failed[str(error.resource_name)] = " ".join(lines)
    return failed
