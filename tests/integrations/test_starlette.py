"""lifespan_kit.starlette: the lifespan, the request accessors and the health routes."""

from __future__ import annotations

import itertools
import typing
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Literal, TypeVar

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

import lifespan_kit.starlette
from lifespan_kit import Bundle, Registry, Resource, ResourceMap
from lifespan_kit.errors import (
    GraphError,
    LifespanNotRunError,
    NotRunningError,
    StartupError,
    UnknownResourceError,
)
from lifespan_kit.starlette import (
    AppLifespan,
    health_routes,
    lifespan,
    resource,
    resources,
)
from tests.fakes import Recorder
from tests.integrations.driver import (
    LifespanFailedError,
    open_client,
    run_lifespan,
    with_state,
)
from tests.integrations.imports import import_with_blocked


class Greeter:
    """A typed resource: says its greeting, knows which instance it is."""

    def __init__(self, greeting: str, number: int = 0) -> None:
        self.greeting = greeting
        self.number = number


class Resources(Bundle):
    greeter: Greeter


class OtherResources(Bundle):
    settings: str


def greeter_registry(
    recorder: Recorder, *, fail: str | None = None, numbers: Iterator[int] | None = None
) -> tuple[Registry, Resource[Greeter]]:
    """settings <- greeter; each records its start and stop; `fail` fails to start."""
    counter = itertools.count() if numbers is None else numbers
    registry = Registry()

    @registry.resource
    async def settings() -> AsyncIterator[str]:
        recorder.events.append("start settings")
        yield "hello"
        recorder.events.append("stop settings")

    @registry.resource
    async def greeter(settings: str) -> AsyncIterator[Greeter]:
        recorder.events.append("start greeter")
        if fail == "greeter":
            raise ConnectionRefusedError("greeter is unreachable")
        yield Greeter(settings, next(counter))
        recorder.events.append("stop greeter")

    return registry, greeter


async def greet(request: Request) -> PlainTextResponse:
    """Answer with the greeting and the instance number of the bundle's greeter."""
    greeter = resources(request, Resources).greeter
    return PlainTextResponse(f"{greeter.greeting} {greeter.number}")


def greeting_app(app_lifespan: AppLifespan[Resources, object]) -> Starlette:
    return Starlette(
        routes=[Route("/", greet), *health_routes()], lifespan=app_lifespan
    )


@pytest.fixture
def client_factory(anyio_backend_name: str) -> Callable[[Starlette], TestClient]:
    """Create Starlette test clients that run on the test's backend."""

    backend: Literal["asyncio", "trio"] = (
        "trio" if anyio_backend_name == "trio" else "asyncio"
    )

    def create(app: Starlette) -> TestClient:
        return TestClient(app, backend=backend)

    return create


# --- the lifespan -------------------------------------------------------------


async def test_handler_reads_the_typed_bundle() -> None:
    """A handler reads the bundle the app's lifespan started."""
    registry, _ = greeter_registry(Recorder())
    async with open_client(greeting_app(lifespan(registry, Resources))) as client:
        response = await client.get("/")
    assert response.text == "hello 0"


async def test_resources_stop_in_reverse_when_the_server_shuts_down() -> None:
    """Startup starts the resources in order; shutdown stops them in reverse."""
    recorder = Recorder()
    registry, _ = greeter_registry(recorder)
    app = greeting_app(lifespan(registry, Resources))
    async with open_client(app) as client:
        recorder.events.append("request")
        await client.get("/")
    assert recorder.events == [
        "start settings",
        "start greeter",
        "request",
        "stop greeter",
        "stop settings",
    ]


async def test_each_app_has_its_own_resources() -> None:
    """Two apps sharing one lifespan object run side by side with separate bundles."""
    recorder = Recorder()
    registry, _ = greeter_registry(recorder)
    app_lifespan = lifespan(registry, Resources)
    first, second = greeting_app(app_lifespan), greeting_app(app_lifespan)
    async with open_client(first) as first_client:
        async with open_client(second) as second_client:
            answers = [(await c.get("/")).text for c in (first_client, second_client)]
        assert recorder.events[-2:] == ["stop greeter", "stop settings"]
        assert (await first_client.get("/")).text == "hello 0"
    assert answers == ["hello 0", "hello 1"]


async def test_an_app_run_twice_starts_fresh_resources() -> None:
    """Running the same app's lifespan again starts new resources."""
    registry, _ = greeter_registry(Recorder())
    app = greeting_app(lifespan(registry, Resources))
    answers: list[str] = []
    for _ in range(2):
        async with open_client(app) as client:
            answers.append((await client.get("/")).text)
    assert answers == ["hello 0", "hello 1"]


async def test_inner_lifespan_runs_inside_with_the_bundle() -> None:
    """The user's lifespan starts after the resources, gets the bundle, stops first."""
    recorder = Recorder()
    registry, _ = greeter_registry(recorder)

    @asynccontextmanager
    async def warm_up(app: Starlette, res: Resources) -> AsyncIterator[dict[str, str]]:
        recorder.events.append(f"start inner with {res.greeter.greeting}")
        yield {"motd": "welcome"}
        recorder.events.append("stop inner")

    async def motd(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(request.state.motd))

    app = Starlette(
        routes=[Route("/", motd)], lifespan=lifespan(registry, Resources, inner=warm_up)
    )
    async with open_client(app) as client:
        response = await client.get("/")
    assert response.text == "welcome"
    assert recorder.events == [
        "start settings",
        "start greeter",
        "start inner with hello",
        "stop inner",
        "stop greeter",
        "stop settings",
    ]


async def test_inner_lifespan_receives_the_resource_map_without_a_bundle() -> None:
    """Without a bundle class, the user's lifespan gets every resource by name."""
    registry, greeter = greeter_registry(Recorder())
    seen: list[str] = []

    @asynccontextmanager
    async def warm_up(app: Starlette, res: ResourceMap) -> AsyncIterator[None]:
        seen.append(res[greeter].greeting)
        yield

    app = Starlette(lifespan=lifespan(registry, inner=warm_up))
    async with run_lifespan(app):
        pass
    assert seen == ["hello"]


async def test_inner_lifespan_failure_stops_the_resources() -> None:
    """When the user's lifespan fails to start, the resources stop; startup fails."""
    recorder = Recorder()
    registry, _ = greeter_registry(recorder)

    @asynccontextmanager
    async def broken(app: Starlette, res: Resources) -> AsyncIterator[None]:
        if res.greeter.greeting == "hello":
            raise RuntimeError("cannot warm up")
        yield  # pragma: no cover  # the greeting is always "hello"

    app = Starlette(lifespan=lifespan(registry, Resources, inner=broken))
    with pytest.raises(LifespanFailedError, match="cannot warm up") as info:
        await run_lifespan(app).__aenter__()
    assert info.value.event == "lifespan.startup.failed"
    assert recorder.events == [
        "start settings",
        "start greeter",
        "stop greeter",
        "stop settings",
    ]


async def test_startup_failure_tells_the_server_with_a_readable_message() -> None:
    """A failed start sends lifespan.startup.failed naming the resource and the fix."""
    recorder = Recorder()
    registry, _ = greeter_registry(recorder, fail="greeter")
    app = greeting_app(lifespan(registry, Resources))
    with pytest.raises(LifespanFailedError) as info:
        await run_lifespan(app).__aenter__()
    assert info.value.event == "lifespan.startup.failed"
    assert "Resource 'greeter' failed during startup." in info.value.message
    assert "ConnectionRefusedError: greeter is unreachable" in info.value.message
    assert "fix: " in info.value.message
    assert isinstance(info.value.__cause__, StartupError)
    assert recorder.events == ["start settings", "start greeter", "stop settings"]


async def test_shutdown_failure_tells_the_server() -> None:
    """A failed teardown sends lifespan.shutdown.failed naming the resource."""
    registry = Registry()

    @registry.resource
    async def greeter() -> AsyncIterator[Greeter]:
        yield Greeter("hello")
        raise OSError("connection reset while closing")

    with pytest.raises(LifespanFailedError) as info:
        async with run_lifespan(greeting_app(lifespan(registry, Resources))):
            pass
    assert info.value.event == "lifespan.shutdown.failed"
    assert "Resource 'greeter' failed during shutdown." in info.value.message


def test_graph_errors_raise_when_the_app_is_created() -> None:
    """A bundle field without a resource fails at lifespan(), before any server."""
    registry, _ = greeter_registry(Recorder())

    class Typo(Bundle):
        settingz: str

    with pytest.raises(GraphError, match="No resource is named 'settingz'"):
        lifespan(registry, Typo)


def test_app_lifespan_lists_its_resources() -> None:
    """The lifespan object names the resources it starts, in start order."""
    registry, _ = greeter_registry(Recorder())
    app_lifespan = lifespan(registry, Resources)
    assert app_lifespan.resource_names == ("settings", "greeter")
    assert repr(app_lifespan) == (
        "<AppLifespan resources=['settings', 'greeter'] on_failure='stop'>"
    )


# --- reading resources ----------------------------------------------------------


async def test_resource_by_handle_and_by_name() -> None:
    """One resource is read by its handle, or by name, also outside the bundle."""
    registry, greeter = greeter_registry(Recorder())

    async def one(request: Request) -> PlainTextResponse:
        by_handle = resource(request, greeter)
        return PlainTextResponse(
            f"{by_handle.greeting} {resource(request, 'settings')}"
        )

    app = Starlette(routes=[Route("/", one)], lifespan=lifespan(registry, Resources))
    async with open_client(app) as client:
        response = await client.get("/")
    assert response.text == "hello hello"


async def test_unknown_resource_name_suggests_close_names() -> None:
    """A name the lifespan did not start raises UnknownResourceError, with hints."""
    registry, _ = greeter_registry(Recorder())

    async def typo(request: Request) -> Response:
        return PlainTextResponse(str(resource(request, "greter")))

    app = Starlette(routes=[Route("/", typo)], lifespan=lifespan(registry, Resources))
    async with open_client(app) as client:
        with pytest.raises(
            UnknownResourceError, match="did you mean: 'greeter'"
        ) as info:
            await client.get("/")
    assert info.value.resource_name == "greter"
    assert info.value.phase == "running"


async def test_without_a_bundle_requests_see_a_resource_map() -> None:
    """lifespan(registry) starts every resource; requests get a ResourceMap."""
    registry, greeter = greeter_registry(Recorder())

    async def names(request: Request) -> JSONResponse:
        res = resources(request)
        assert isinstance(res, ResourceMap)
        return JSONResponse([sorted(res), res[greeter].greeting])

    app = Starlette(routes=[Route("/", names)], lifespan=lifespan(registry))
    async with open_client(app) as client:
        response = await client.get("/")
    assert response.json() == [["greeter", "settings"], "hello"]


def test_websocket_handlers_read_resources(
    client_factory: Callable[[Starlette], TestClient],
) -> None:
    """A websocket endpoint reads the bundle as a request handler does."""
    registry, _ = greeter_registry(Recorder())

    async def chat(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(resources(websocket, Resources).greeter.greeting)
        await websocket.close()

    app = Starlette(
        routes=[WebSocketRoute("/chat", chat)], lifespan=lifespan(registry, Resources)
    )
    with client_factory(app) as client, client.websocket_connect("/chat") as websocket:
        assert websocket.receive_text() == "hello"


def test_mounted_app_reads_the_outermost_apps_resources(
    client_factory: Callable[[Starlette], TestClient],
) -> None:
    """A mounted app sees the resources of the lifespan its outermost app runs."""
    registry, _ = greeter_registry(Recorder())
    inner_app = Starlette(routes=[Route("/", greet)])
    outer_app = Starlette(
        routes=[Mount("/api", app=inner_app)], lifespan=lifespan(registry, Resources)
    )
    with client_factory(outer_app) as client:
        assert client.get("/api/").text == "hello 0"


# --- when the lifespan did not run ---------------------------------------------


async def test_transport_without_lifespan_is_explained() -> None:
    """httpx.ASGITransport alone runs no lifespan; the error says so and the fix."""
    registry, _ = greeter_registry(Recorder())
    transport = httpx.ASGITransport(app=greeting_app(lifespan(registry, Resources)))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with pytest.raises(LifespanNotRunError, match="did not run the app's lifespan"):
            await client.get("/")


def test_test_client_without_with_is_explained(
    client_factory: Callable[[Starlette], TestClient],
) -> None:
    """A TestClient used without `with` never runs the lifespan; the error says so."""
    registry, _ = greeter_registry(Recorder())
    client = client_factory(greeting_app(lifespan(registry, Resources)))
    with pytest.raises(LifespanNotRunError) as info:
        client.get("/")
    assert info.value.code == "lifespan-not-run"
    assert info.value.cause == "not-entered"
    assert info.value.app == "Starlette"
    assert info.value.expected == "Resources"
    assert "`with TestClient(app) as client:`" in str(info.value)


def test_app_without_the_lifespan_is_explained(
    client_factory: Callable[[Starlette], TestClient],
) -> None:
    """An app created without lifespan_kit's lifespan gets an error naming the fix."""
    app = Starlette(routes=[Route("/", greet)])
    with (
        client_factory(app) as client,
        pytest.raises(LifespanNotRunError, match="created without") as info,
    ):
        client.get("/")
    assert info.value.cause == "no-lifespan"
    assert "fix: pass `lifespan=lifespan_kit.starlette.lifespan(" in str(info.value)


def test_mounted_app_with_its_own_lifespan_is_explained(
    client_factory: Callable[[Starlette], TestClient],
) -> None:
    """A mounted app's lifespan never runs; the error points at the outermost app."""
    registry, _ = greeter_registry(Recorder())
    outer_app = Starlette(
        routes=[Mount("/api", app=greeting_app(lifespan(registry, Resources)))]
    )
    with (
        client_factory(outer_app) as client,
        pytest.raises(LifespanNotRunError, match="outermost app's lifespan") as info,
    ):
        client.get("/api/")
    assert info.value.cause == "mounted"


async def test_asking_for_another_bundle_class_is_explained() -> None:
    """Asking for a bundle class other than the lifespan's names both classes."""
    registry, _ = greeter_registry(Recorder())

    async def other(request: Request) -> Response:
        return PlainTextResponse(resources(request, OtherResources).settings)

    app = Starlette(routes=[Route("/", other)], lifespan=lifespan(registry, Resources))
    async with open_client(app) as client:
        with pytest.raises(LifespanNotRunError) as info:
            await client.get("/")
    assert info.value.cause == "other-bundle"
    assert info.value.summary() == (
        "Cannot read the resources: the lifespan that ran for this request yields "
        "Resources, not OtherResources."
    )
    assert "fix: ask for Resources" in str(info.value)


def test_not_run_error_is_a_not_running_error() -> None:
    """Code that catches NotRunningError or RuntimeError catches it too."""
    assert issubclass(LifespanNotRunError, NotRunningError)
    assert issubclass(LifespanNotRunError, RuntimeError)


# --- readiness and liveness -----------------------------------------------------


def checked_registry(*, healthy: bool) -> Registry:
    """One resource whose health check passes or fails."""
    registry = Registry()

    def ping(greeter: Greeter) -> bool:
        if not healthy:
            raise ConnectionResetError("no answer to ping")
        return True

    registry.add("greeter", Greeter("hello"), health=ping)
    return registry


async def test_readiness_is_ready_when_every_check_passes() -> None:
    """GET /readyz answers 200 with each resource's health."""
    app = greeting_app(lifespan(checked_registry(healthy=True), Resources))
    async with open_client(app) as client:
        response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["status"] == "ready"
    assert body["resources"]["greeter"]["status"] == "healthy"


async def test_readiness_is_503_when_a_check_fails() -> None:
    """GET /readyz answers 503 and names the failing resource and its error."""
    app = greeting_app(lifespan(checked_registry(healthy=False), Resources))
    async with open_client(app) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["resources"]["greeter"] == {
        "status": "unhealthy",
        "duration": body["resources"]["greeter"]["duration"],
        "error": "ConnectionResetError: no answer to ping",
        "detail": None,
    }


async def test_readiness_is_503_before_the_lifespan_started() -> None:
    """Without a running lifespan, readiness answers 503 "starting" and says why."""
    app = greeting_app(lifespan(checked_registry(healthy=True), Resources))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        ready = await client.get("/readyz")
        live = await client.get("/livez")
    assert ready.status_code == 503
    assert ready.json()["status"] == "starting"
    assert "did not run for the app" in ready.json()["detail"]
    assert (live.status_code, live.json()) == (
        200,
        {"status": "alive", "lifespan": "starting"},
    )


async def test_readiness_is_503_while_draining() -> None:
    """Once shutdown begins, readiness answers 503 "draining"; liveness stays 200."""
    stopping, may_stop = anyio.Event(), anyio.Event()
    registry = Registry()

    @registry.resource
    async def greeter() -> AsyncIterator[Greeter]:
        yield Greeter("hello")
        stopping.set()
        await may_stop.wait()

    app = greeting_app(lifespan(registry, Resources))
    states: list[dict[str, object]] = []
    entered, shutdown = anyio.Event(), anyio.Event()

    async def serve() -> None:
        async with run_lifespan(app) as state:
            states.append(state)
            entered.set()
            await shutdown.wait()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            await entered.wait()
            transport = httpx.ASGITransport(app=with_state(app, states[0]))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                before = await c.get("/readyz")
                shutdown.set()
                await stopping.wait()
                during = await c.get("/readyz")
                live = await c.get("/livez")
                may_stop.set()
    assert (before.status_code, before.json()["status"]) == (200, "ready")
    assert during.status_code == 503
    assert during.json() == {"status": "draining", "resources": {}}
    assert live.json() == {"status": "alive", "lifespan": "draining"}


async def test_liveness_reports_the_running_lifespan() -> None:
    """GET /livez answers 200 with the lifespan's phase."""
    app = greeting_app(lifespan(checked_registry(healthy=False), Resources))
    async with open_client(app) as client:
        response = await client.get("/livez")
    assert response.json() == {"status": "alive", "lifespan": "running"}


async def test_health_routes_take_custom_paths() -> None:
    """The probe paths can be chosen."""
    routes = health_routes(ready_path="/health/ready", live_path="/health/live")
    registry = checked_registry(healthy=True)
    app = Starlette(routes=routes, lifespan=lifespan(registry, Resources))
    async with open_client(app) as client:
        statuses = [
            (await client.get(p)).status_code for p in ("/health/ready", "/health/live")
        ]
    assert statuses == [200, 200]


# --- the module -----------------------------------------------------------------


def test_import_without_starlette_names_the_extra() -> None:
    """Without Starlette, importing the module says which extra to install."""
    result = import_with_blocked("starlette", "lifespan_kit.starlette")
    assert result.returncode == 1
    assert 'pip install "lifespan_kit[starlette]"' in result.stderr
    assert "ImportError" in result.stderr


def test_all_lists_the_public_names_in_order() -> None:
    """__all__ is sorted and lists every public name the module defines."""
    module = lifespan_kit.starlette
    defined = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, TypeVar)  # typing machinery, not API
        and getattr(value, "__module__", None) == module.__name__
    }
    assert defined <= set(module.__all__)
    assert module.__all__ == sorted(module.__all__, key=lambda n: (n[0].islower(), n))


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(AppLifespan.__init__, id="AppLifespan.__init__"),
        pytest.param(AppLifespan.__call__, id="AppLifespan.__call__"),
        pytest.param(health_routes, id="health_routes"),
        pytest.param(lifespan, id="lifespan"),
        pytest.param(resource, id="resource"),
        pytest.param(resources, id="resources"),
    ],
)
def test_annotations_resolve_at_runtime(target: Callable[..., object]) -> None:
    """get_type_hints resolves the annotations of every public callable."""
    assert "return" in typing.get_type_hints(target)
