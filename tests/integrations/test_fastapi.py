"""lifespan_kit.fastapi: dependencies that hand handlers the lifespan's resources."""

from __future__ import annotations

import typing
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Literal

import httpx
import pytest
from fastapi import Depends, FastAPI, WebSocket
from fastapi.testclient import TestClient

import lifespan_kit.fastapi
from lifespan_kit import Bundle, Registry, ResourceEvent, ResourceMap
from lifespan_kit.errors import LifespanNotRunError, UnknownResourceError
from lifespan_kit.fastapi import bundle, resource, resources
from lifespan_kit.starlette import health_routes, lifespan
from tests.integrations.driver import open_client, run_lifespan, with_state
from tests.integrations.imports import import_with_blocked


class Database:
    """A typed resource standing in for a connection pool."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_closed = False


class Resources(Bundle):
    db: Database


class Other(Bundle):
    settings: str


registry = Registry()
registry.add("settings", "sqlite:///:memory:")


@registry.resource
async def db(settings: str) -> AsyncIterator[Database]:
    database = Database(settings)
    yield database
    database.is_closed = True


def create_app(events: list[str] | None = None) -> FastAPI:
    """An app whose handlers use each kind of dependency; records db's events."""

    def record(event: ResourceEvent) -> None:
        if events is not None and event.kind in ("started", "stopped"):
            events.append(f"{event.kind} {event.resource_name}")

    app_lifespan = lifespan(registry, Resources, listeners=[record])
    app = FastAPI(lifespan=app_lifespan, routes=health_routes())

    # FastAPI resolves these annotations in the module's globals: the
    # dependencies name module-level objects only.
    @app.get("/bundle")
    async def from_bundle(
        res: Annotated[Resources, Depends(resources)],
    ) -> dict[str, object]:
        return {"url": res.db.url, "is_closed": res.db.is_closed}

    @app.get("/checked")
    async def from_checked(
        res: Annotated[Resources, Depends(bundle(Resources))],
    ) -> str:
        return res.db.url

    @app.get("/wrong-bundle")
    async def from_wrong_bundle(
        res: Annotated[Other, Depends(bundle(Other))],
    ) -> str:  # pragma: no cover  # the dependency fails before the handler runs
        return res.settings

    @app.get("/handle")
    async def from_handle(database: Annotated[Database, Depends(resource(db))]) -> str:
        return database.url

    @app.get("/name")
    async def from_name(
        settings: Annotated[object, Depends(resource("settings"))],
    ) -> str:
        return str(settings)

    @app.get("/typo")
    async def from_typo(
        setting: Annotated[object, Depends(resource("setting"))],
    ) -> str:  # pragma: no cover  # the dependency fails before the handler runs
        return str(setting)

    @app.websocket("/ws")
    async def socket(
        websocket: WebSocket, res: Annotated[Resources, Depends(resources)]
    ) -> None:
        await websocket.accept()
        await websocket.send_text(res.db.url)
        await websocket.close()

    return app


@pytest.fixture
def client_factory(anyio_backend_name: str) -> Callable[[FastAPI], TestClient]:
    """Create FastAPI test clients that run on the test's backend."""
    backend: Literal["asyncio", "trio"] = (
        "trio" if anyio_backend_name == "trio" else "asyncio"
    )

    def create(app: FastAPI) -> TestClient:
        return TestClient(app, backend=backend)

    return create


async def test_handler_depends_on_the_whole_bundle() -> None:
    """Depends(resources) gives the handler the running bundle."""
    events: list[str] = []
    app = create_app(events)
    async with open_client(app) as client:
        response = await client.get("/bundle")
    assert response.json() == {"url": "sqlite:///:memory:", "is_closed": False}
    assert events == ["started db", "stopped db"]


async def test_handler_depends_on_a_bundle_by_its_class() -> None:
    """Depends(bundle(Resources)) gives the bundle of the lifespan that yields it."""
    app = create_app()
    async with open_client(app) as client:
        response = await client.get("/checked")
        with pytest.raises(LifespanNotRunError) as info:
            await client.get("/wrong-bundle")
    assert response.json() == "sqlite:///:memory:"
    assert (info.value.cause, info.value.expected, info.value.found) == (
        "other-bundle",
        "Other",
        "Resources",
    )


@pytest.mark.parametrize("path", ["/bundle", "/checked", "/handle", "/name"])
async def test_dependencies_refuse_closed_resources_after_shutdown(path: str) -> None:
    """A request with the state of a stopped lifespan gets NotRunningError."""
    app = create_app()
    async with run_lifespan(app) as state:
        pass
    transport = httpx.ASGITransport(app=with_state(app, state))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        with pytest.raises(LifespanNotRunError, match="has stopped") as info:
            await client.get(path)
    assert info.value.cause == "stopped"


async def test_handler_depends_on_one_resource_by_handle() -> None:
    """Depends(resource(handle)) gives the handler that resource's value."""
    app = create_app()
    async with open_client(app) as client:
        response = await client.get("/handle")
    assert response.json() == "sqlite:///:memory:"


async def test_handler_depends_on_one_resource_by_name() -> None:
    """Depends(resource(name)) reads any started resource, dependencies included."""
    app = create_app()
    async with open_client(app) as client:
        response = await client.get("/name")
    assert response.json() == "sqlite:///:memory:"


async def test_unknown_name_fails_the_request_with_suggestions() -> None:
    """A dependency on a name that did not start raises UnknownResourceError."""
    app = create_app()
    async with open_client(app) as client:
        with pytest.raises(UnknownResourceError, match="did you mean: 'settings'"):
            await client.get("/typo")


def test_websocket_endpoint_depends_on_the_bundle(
    client_factory: Callable[[FastAPI], TestClient],
) -> None:
    """A websocket endpoint gets the bundle through the same dependency."""
    app = create_app()
    with client_factory(app) as client, client.websocket_connect("/ws") as websocket:
        assert websocket.receive_text() == "sqlite:///:memory:"


def test_test_client_without_with_is_explained(
    client_factory: Callable[[FastAPI], TestClient],
) -> None:
    """Without `with`, the dependency raises an error that names the fix."""
    client = client_factory(create_app())
    with pytest.raises(LifespanNotRunError, match="with TestClient") as info:
        client.get("/bundle")
    assert (info.value.cause, info.value.app) == ("not-entered", "FastAPI")


def test_test_client_with_runs_the_lifespan(
    client_factory: Callable[[FastAPI], TestClient],
) -> None:
    """With `with`, TestClient runs the lifespan; the resources stop after it."""
    events: list[str] = []
    with client_factory(create_app(events)) as client:
        assert client.get("/readyz").json() == {"status": "ready", "resources": {}}
        events.append("request")
    assert events == ["started db", "request", "stopped db"]


async def test_resource_map_when_the_lifespan_has_no_bundle() -> None:
    """Without a bundle class, Depends(resources) gives a ResourceMap."""
    app = FastAPI(lifespan=lifespan(registry))

    @app.get("/")
    async def names(res: Annotated[ResourceMap, Depends(resources)]) -> list[str]:
        return [*sorted(res), res[db].url]

    async with open_client(app) as client:
        response = await client.get("/")
    assert response.json() == ["db", "settings", "sqlite:///:memory:"]


def test_dependencies_add_no_parameter_to_the_openapi_schema() -> None:
    """FastAPI recognises the connection parameter: no query parameter appears."""
    schema = create_app().openapi()
    operations = [schema["paths"][path]["get"] for path in ("/bundle", "/handle")]
    assert [operation.get("parameters", []) for operation in operations] == [[], []]
    assert "/readyz" not in schema["paths"]


def test_resource_dependency_is_named_after_the_resource() -> None:
    """The dependency's name says which resource it reads, for tracebacks."""
    assert resource(db).__name__ == "resource_db"
    assert resource("settings").__qualname__ == "resource_settings"
    assert bundle(Resources).__name__ == "bundle_Resources"


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(resources, id="resources"),
        pytest.param(resource, id="resource"),
        pytest.param(resource("settings"), id="resource()"),
        pytest.param(bundle, id="bundle"),
        pytest.param(bundle(Resources), id="bundle()"),
    ],
)
def test_annotations_resolve_at_runtime(target: Callable[..., object]) -> None:
    """FastAPI can resolve every annotation of the dependencies at runtime."""
    assert "return" in typing.get_type_hints(target)


def test_all_lists_the_public_names_in_order() -> None:
    """__all__ is sorted and names the dependencies."""
    assert lifespan_kit.fastapi.__all__ == ["bundle", "resource", "resources"]


def test_import_without_fastapi_names_the_extra() -> None:
    """Without FastAPI, importing the module says which extra to install."""
    result = import_with_blocked("fastapi", "lifespan_kit.fastapi")
    assert result.returncode == 1
    assert 'pip install "lifespan_kit[fastapi]"' in result.stderr
