"""lifespan_kit.starlette composed: several lifespans per app; the inner lifespan."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import (
    AsyncExitStack,
    asynccontextmanager,
    contextmanager,
)
from types import TracebackType
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from lifespan_kit import Bundle, Registry
from lifespan_kit.errors import (
    InvalidOptionError,
    LifespanNotRunError,
    UnknownResourceError,
)
from lifespan_kit.fastapi import bundle
from lifespan_kit.fastapi import resources as depend_on_resources
from lifespan_kit.starlette import health_routes, lifespan, resource, resources
from tests.fakes import Recorder
from tests.integrations.driver import LifespanFailedError, open_client, run_lifespan

# --- several lifespans per app --------------------------------------------------


class AppResources(Bundle):
    db: str


class SearchResources(Bundle):
    index: str


def app_registry(recorder: Recorder) -> Registry:
    registry = Registry()
    registry.add("db", recorder.generator("db"))
    return registry


def search_registry(recorder: Recorder, *, healthy: bool = True) -> Registry:
    registry = Registry()

    def ping(index: object) -> bool:
        return healthy

    registry.add("synonyms", recorder.generator("synonyms"))
    registry.add(
        "index",
        recorder.generator("index"),
        depends={"synonyms": "synonyms"},
        health=ping,
    )
    return registry


AppRes = Annotated[AppResources, Depends(depend_on_resources)]
SearchRes = Annotated[SearchResources, Depends(bundle(SearchResources))]
AppResChecked = Annotated[AppResources, Depends(bundle(AppResources))]


def fastapi_with_router(recorder: Recorder, *, healthy: bool = True) -> FastAPI:
    """The app's lifespan, plus a router's lifespan that FastAPI merges into it."""
    app = FastAPI(
        lifespan=lifespan(app_registry(recorder), AppResources), routes=health_routes()
    )
    router = APIRouter(
        lifespan=lifespan(search_registry(recorder, healthy=healthy), SearchResources)
    )

    @router.get("/search")
    async def search(res: SearchRes, same: AppResChecked) -> list[str]:
        return [res.index, same.db]

    @app.get("/app")
    async def from_app(res: AppRes) -> str:
        return res.db

    app.include_router(router)
    return app


async def test_fastapi_router_lifespan_resolves_its_own_bundle() -> None:
    """With an app lifespan and a router lifespan, each bundle class finds its own."""
    recorder = Recorder()
    async with open_client(fastapi_with_router(recorder)) as client:
        search = await client.get("/search")
        app_res = await client.get("/app")
        recorder.events.append("requests served")
    assert search.json() == ["index", "db"]
    assert app_res.json() == "db"
    assert recorder.events == [
        *("start db", "start synonyms", "start index", "requests served"),
        *("stop index", "stop synonyms", "stop db"),
    ]


@pytest.mark.parametrize(
    ("healthy", "status", "code"),
    [
        pytest.param(True, "ready", 200, id="router-healthy"),
        pytest.param(False, "unhealthy", 503, id="router-unhealthy"),
    ],
)
async def test_readiness_covers_every_lifespan(
    healthy: bool, status: str, code: int
) -> None:
    """/readyz runs the health checks of the router's lifespan too."""
    app = fastapi_with_router(Recorder(), healthy=healthy)
    async with open_client(app) as client:
        response = await client.get("/readyz")
    assert response.status_code == code
    assert response.json()["status"] == status
    assert list(response.json()["resources"]) == ["index"]


def composed_by_hand(recorder: Recorder) -> Starlette:
    """Two lifespan_kit lifespans entered one inside the other, states merged."""
    first = lifespan(app_registry(recorder), AppResources)
    second = lifespan(search_registry(recorder), SearchResources)

    @asynccontextmanager
    async def both(app: Starlette) -> AsyncIterator[Mapping[str, object]]:
        async with AsyncExitStack() as stack:
            first_state = await stack.enter_async_context(first(app))
            second_state = await stack.enter_async_context(second(app))
            yield {**first_state, **second_state}

    async def handler(request: Request) -> JSONResponse:
        return JSONResponse(
            [
                resources(request, AppResources).db,
                resources(request, SearchResources).index,
                str(resource(request, "synonyms")),
                str(resource(request, "db")),
            ]
        )

    async def unknown(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(resource(request, "indx")))

    async def other(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(resources(request, Missing)))

    return Starlette(
        routes=[
            Route("/", handler),
            Route("/unknown", unknown),
            Route("/other", other),
        ],
        lifespan=both,
    )


class Missing(Bundle):
    nothing: str


async def test_lifespans_composed_by_hand_each_resolve() -> None:
    """Composing two lifespans by hand: bundles and names resolve in either one."""
    async with open_client(composed_by_hand(Recorder())) as client:
        response = await client.get("/")
        with pytest.raises(UnknownResourceError, match="did you mean: 'index'"):
            await client.get("/unknown")
        with pytest.raises(LifespanNotRunError) as info:
            await client.get("/other")
    assert response.json() == ["db", "index", "synonyms", "db"]
    assert info.value.cause == "other-bundle"
    assert info.value.expected == "Missing"


# --- the inner lifespan: every shape Starlette takes -----------------------------


class InnerEvents:
    """The events of one inner lifespan, in order."""

    def __init__(self) -> None:
        self.events: list[str] = []


def inner_shapes(log: InnerEvents) -> dict[str, object]:
    """Each way users write a lifespan, recording its start and stop."""

    @asynccontextmanager
    async def decorated(
        app: object, res: AppResources
    ) -> AsyncIterator[dict[str, str]]:
        log.events.append(f"start {res.db}")
        yield {"motd": "hi"}
        log.events.append("stop")

    async def async_generator(
        app: object, res: AppResources
    ) -> AsyncIterator[dict[str, str]]:
        log.events.append(f"start {res.db}")
        yield {"motd": "hi"}
        log.events.append("stop")

    def generator(app: object, res: AppResources) -> Iterator[dict[str, str]]:
        log.events.append(f"start {res.db}")
        yield {"motd": "hi"}
        log.events.append("stop")

    class AsyncClass:
        def __init__(self, app: object, res: AppResources) -> None:
            self.res = res

        async def __aenter__(self) -> dict[str, str]:
            log.events.append(f"start {self.res.db}")
            return {"motd": "hi"}

        async def __aexit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> None:
            log.events.append("stop")

    class SyncClass:
        def __init__(self, app: object, res: AppResources) -> None:
            self.res = res

        def __enter__(self) -> dict[str, str]:
            log.events.append(f"start {self.res.db}")
            return {"motd": "hi"}

        def __exit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> None:
            log.events.append("stop")

    class Service:
        async def lifespan(
            self, app: object, res: AppResources
        ) -> AsyncIterator[dict[str, str]]:
            log.events.append(f"start {res.db}")
            yield {"motd": "hi"}
            log.events.append("stop")

    async def with_greeting(
        app: object, res: AppResources, greeting: str
    ) -> AsyncIterator[dict[str, str]]:
        log.events.append(f"start {res.db}")
        yield {"motd": greeting}
        log.events.append("stop")

    return {
        "asynccontextmanager": decorated,
        "async-generator-function": async_generator,
        "generator-function": generator,
        "contextmanager": contextmanager(generator),
        "async-context-manager-class": AsyncClass,
        "context-manager-class": SyncClass,
        "lambda-returning-a-context-manager": lambda app, res: decorated(app, res),
        "lambda-returning-a-sync-context-manager": lambda app, res: SyncClass(app, res),
        "bound-method": Service().lifespan,
        "partial": functools.partial(with_greeting, greeting="hi"),
    }


SHAPES = list(inner_shapes(InnerEvents()))


@pytest.mark.parametrize("shape", SHAPES)
async def test_inner_lifespan_takes_every_shape_starlette_takes(shape: str) -> None:
    """Each shape starts after the resources, adds its state, stops before them."""
    recorder, log = Recorder(), InnerEvents()
    inner: Any = inner_shapes(log)[shape]

    async def motd(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(request.state.motd))

    app = Starlette(
        routes=[Route("/", motd), *health_routes()],
        lifespan=lifespan(app_registry(recorder), AppResources, inner=inner),
    )
    async with open_client(app) as client:
        response = await client.get("/")
        ready = await client.get("/readyz")  # beside the inner lifespan's state
        log.events.append("request")
    assert response.text == "hi"
    assert ready.json() == {"status": "ready", "resources": {}}
    assert log.events == ["start db", "request", "stop"]
    assert recorder.events == ["start db", "stop db"]


class NotAContextManager:
    def __init__(self, app: object, res: object) -> None: ...


async def warm_up_coroutine(app: object, res: object) -> None: ...


@asynccontextmanager
async def starlette_style(app: object) -> AsyncIterator[None]:
    yield  # pragma: no cover  # rejected before it runs


@pytest.mark.parametrize(
    ("inner", "problem", "remedy"),
    [
        pytest.param(
            starlette_style(None),
            "it is an instance of _AsyncGeneratorContextManager, a context manager",
            "pass the function itself",
            id="a-context-manager-instead-of-its-function",
        ),
        pytest.param(
            "warm_up",
            "it is an instance of str, not a function",
            "pass the function itself",
            id="not-callable",
        ),
        pytest.param(
            zip,
            "it is a class that is not a context manager",
            "give the class __aenter__ and __aexit__",
            id="builtin-class-without-signature",
        ),
        pytest.param(
            warm_up_coroutine,
            "it is an async function, which returns a coroutine",
            "make it an async generator that yields once",
            id="async-function",
        ),
        pytest.param(
            NotAContextManager,
            "it is a class that is not a context manager",
            "give the class __aenter__ and __aexit__",
            id="class-without-context-methods",
        ),
        pytest.param(
            starlette_style,
            "it takes (app: 'object') -> 'AsyncIterator[None]', not the two arguments",
            "take the app and the bundle",
            id="one-parameter-as-for-starlette",
        ),
        pytest.param(
            lambda: None,
            "it takes (), not the two arguments",
            "take the app and the bundle",
            id="lambda-without-parameters",
        ),
    ],
)
def test_inner_lifespan_of_a_wrong_shape_is_rejected_at_creation(
    inner: object, problem: str, remedy: str
) -> None:
    """lifespan(..., inner=...) rejects what cannot be a lifespan, saying what to do."""
    registry = app_registry(Recorder())
    with pytest.raises(InvalidOptionError, match="Option 'inner'") as info:
        lifespan(registry, AppResources, inner=inner)  # type: ignore[call-overload]
    assert info.value.code == "invalid-option"
    assert info.value.option == "inner"
    assert problem in info.value.problem
    assert f"fix: {remedy}" in str(info.value)


async def test_inner_callable_returning_no_context_manager_fails_the_startup() -> None:
    """A callable whose result is no context manager fails startup, named, cleanly."""
    recorder = Recorder()
    inner: Callable[[object, object], Any] = lambda app, res: {"motd": "hi"}  # noqa: E731
    app = Starlette(
        lifespan=lifespan(app_registry(recorder), AppResources, inner=inner),
    )
    with pytest.raises(LifespanFailedError, match="Option 'inner'") as info:
        await run_lifespan(app).__aenter__()
    assert info.value.event == "lifespan.startup.failed"
    assert "calling it returned an instance of dict" in info.value.message
    assert recorder.events == ["start db", "stop db"]
