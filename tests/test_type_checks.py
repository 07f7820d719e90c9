"""Type checks of dependencies and bundle fields: what is checked, what is skipped.

A factory parameter's annotation is checked with `isinstance` when that is a
meaningful, working check; every other annotation only documents the type, and
a check that fails in itself never fails a start. Bundle fields are validated
by pydantic, field by field when pydantic cannot validate the whole bundle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Annotated, Any, NewType, Protocol, TypedDict, runtime_checkable

import pytest
import typing_extensions
from fastapi import Depends, FastAPI
from pydantic import Field, create_model

from lifespan_kit import Bundle, Registry
from lifespan_kit.errors import BundleTypeError, DependencyTypeError
from lifespan_kit.fastapi import resources
from lifespan_kit.starlette import lifespan
from tests.integrations.driver import open_client


class Database:
    """The value every test's dependency provides."""

    def ping(self) -> None:
        """Answer a health check."""


class Movie(TypedDict):
    """A TypedDict from typing."""

    title: str


class MovieExt(typing_extensions.TypedDict):
    """A TypedDict from typing_extensions."""

    title: str


UserId = NewType("UserId", int)


class Closable(Protocol):
    """A protocol isinstance refuses (not runtime-checkable)."""

    def close(self) -> None:
        """Close it."""


@runtime_checkable
class Pingable(Protocol):
    """A runtime-checkable protocol."""

    def ping(self) -> None:
        """Answer a health check."""


class _RefusingMeta(type):
    def __instancecheck__(cls, instance: object) -> bool:
        raise RuntimeError("no isinstance check here")


class Refusing(metaclass=_RefusingMeta):
    """A class whose isinstance check always raises."""


class _PickyMeta(type):
    def __instancecheck__(cls, instance: object) -> bool:
        if isinstance(instance, Database):
            raise RuntimeError("cannot tell for a Database")
        return False


class Picky(metaclass=_PickyMeta):
    """A class whose isinstance check raises only for some values."""


UNCHECKED = [
    pytest.param(Any, id="typing.Any"),
    pytest.param(typing_extensions.Any, id="typing_extensions.Any"),
    pytest.param(Annotated[Any, "any database"], id="Annotated-Any"),
    pytest.param("Any", id="string-Any"),
    pytest.param("Annotated[Any, 'doc']", id="string-Annotated-Any"),
    pytest.param(Movie, id="TypedDict"),
    pytest.param(MovieExt, id="typing_extensions.TypedDict"),
    pytest.param(UserId, id="NewType"),
    pytest.param(Closable, id="Protocol"),
    pytest.param(Pingable, id="runtime-checkable-Protocol"),
    pytest.param(list[int], id="list[int]"),
    pytest.param(Mapping[str, Any], id="Mapping[str, Any]"),
    pytest.param(int | None, id="union"),
    pytest.param(type[Database], id="type[Database]"),
    pytest.param(Callable[[], None], id="Callable"),
    pytest.param(object, id="object"),
    pytest.param(Refusing, id="isinstance-always-raises"),
    pytest.param(Picky, id="isinstance-raises-for-the-value"),
    pytest.param("NotDefinedAnywhere", id="unresolvable"),
]


def _function(annotation: object) -> tuple[object, dict[str, str] | None]:
    def client(db):  # type: ignore[no-untyped-def]  # annotated below
        return "client"

    client.__annotations__ = {"db": annotation}
    return client, None


def _async_function(annotation: object) -> tuple[object, dict[str, str] | None]:
    async def client(db):  # type: ignore[no-untyped-def]
        return "client"

    client.__annotations__ = {"db": annotation}
    return client, None


def _async_generator(annotation: object) -> tuple[object, dict[str, str] | None]:
    async def client(db):  # type: ignore[no-untyped-def]
        yield "client"

    client.__annotations__ = {"db": annotation}
    return client, None


def _class(annotation: object) -> tuple[object, dict[str, str] | None]:
    class Client:
        def __init__(self, db):  # type: ignore[no-untyped-def]
            self.db = db

    Client.__init__.__annotations__ = {"db": annotation}
    return Client, None


def _dataclass(annotation: object) -> tuple[object, dict[str, str] | None]:
    return dataclasses.make_dataclass("Client", [("db", annotation)]), None


def _depends_mapped(annotation: object) -> tuple[object, dict[str, str] | None]:
    def client(database):  # type: ignore[no-untyped-def]
        return "client"

    client.__annotations__ = {"database": annotation}
    return client, {"database": "db"}


FACTORY_FORMS = [
    pytest.param(_function, id="function"),
    pytest.param(_async_function, id="async-function"),
    pytest.param(_async_generator, id="async-generator"),
    pytest.param(_class, id="class"),
    pytest.param(_dataclass, id="dataclass"),
    pytest.param(_depends_mapped, id="depends-mapped"),
]

FactoryForm = Callable[[object], tuple[object, "dict[str, str] | None"]]


def _registry(form: FactoryForm, annotation: object) -> Registry:
    factory, depends = form(annotation)
    registry = Registry()
    registry.add("db", Database())
    registry.add("client", factory, depends=depends)  # type: ignore[call-overload]  # a factory built at runtime
    return registry


@pytest.mark.parametrize("form", FACTORY_FORMS)
@pytest.mark.parametrize("annotation", UNCHECKED)
async def test_annotations_isinstance_cannot_check_are_skipped(
    form: FactoryForm, annotation: object, concurrency: int | None
) -> None:
    """A parameter annotated with what isinstance cannot check starts unchecked."""
    registry = _registry(form, annotation)
    async with registry.lifespan(concurrency=concurrency) as resources:
        assert "client" in resources


@pytest.mark.parametrize("form", FACTORY_FORMS)
async def test_plain_class_annotations_are_still_checked(
    form: FactoryForm, concurrency: int | None
) -> None:
    """The same factory forms annotated with a plain class do get checked."""
    registry = _registry(form, "str")
    with pytest.raises(DependencyTypeError, match="expects parameter") as info:
        async with registry.lifespan(concurrency=concurrency):
            pass  # pragma: no cover
    assert info.value.code == "dependency-type"
    assert info.value.resource_name == "client"
    assert (info.value.expected, info.value.found) == ("str", "Database")


def any_client(db: Any) -> str:
    """A factory as a FastAPI app writes it: `db: Any`, postponed annotations."""
    return "client"


async def test_a_module_level_any_parameter_starts() -> None:
    """The string annotation "Any" resolves to typing.Any and is not checked."""
    registry = Registry()
    registry.add("db", Database())
    registry.add("client", any_client)
    async with registry.lifespan() as resources:
        assert resources["client"] == "client"


# --- bundles ------------------------------------------------------------------


def _bundle(annotation: object) -> type[Bundle]:
    definition: dict[str, Any] = {"db": (annotation, ...)}
    return create_model("Resources", __base__=Bundle, **definition)


class AnyResources(Bundle):
    """A bundle as a FastAPI app writes it: `db: Any`, postponed annotations."""

    db: Any


BUNDLE_FIELDS = [
    pytest.param(Any, Database(), id="typing.Any"),
    pytest.param(typing_extensions.Any, Database(), id="typing_extensions.Any"),
    pytest.param(Annotated[Any, "doc"], Database(), id="Annotated-Any"),
    pytest.param(Movie, {"title": "Alien"}, id="TypedDict"),
    pytest.param(MovieExt, {"title": "Alien"}, id="typing_extensions.TypedDict"),
    pytest.param(UserId, 5, id="NewType"),
    pytest.param(Closable, Database(), id="Protocol"),
    pytest.param(Pingable, Database(), id="runtime-checkable-Protocol"),
    pytest.param(list[int], [1], id="list[int]"),
    pytest.param(Refusing, Database(), id="isinstance-always-raises"),
    pytest.param(Picky, Database(), id="isinstance-raises-for-the-value"),
]


@pytest.mark.parametrize(("annotation", "value"), BUNDLE_FIELDS)
async def test_bundle_fields_pydantic_cannot_check_do_not_fail_a_start(
    annotation: object, value: object, concurrency: int | None
) -> None:
    """A bundle field starts with a fitting value, or unchecked if it cannot be."""
    registry = Registry()
    registry.add("db", value)
    async with registry.lifespan(_bundle(annotation), concurrency=concurrency) as res:
        assert getattr(res, "db") == value  # noqa: B009  # a field made at runtime


async def test_a_bundle_with_postponed_any_starts() -> None:
    """A module-level bundle with `db: Any` under postponed annotations starts."""
    registry = Registry()
    database = Database()
    registry.add("db", database)
    async with registry.lifespan(AnyResources) as resources:
        assert resources.db is database


async def test_unchecked_bundle_fields_leave_the_others_checked(
    concurrency: int | None,
) -> None:
    """Next to a field pydantic cannot check, a wrong value elsewhere still fails."""
    events: list[str] = []

    async def db() -> AsyncIterator[Database]:
        events.append("start db")
        yield Database()
        events.append("stop db")

    registry = Registry()
    registry.add("db", db)
    registry.add("port", "8000")
    definition: dict[str, Any] = {
        "database": (Closable, Field(alias="db")),
        "port": (int, ...),
    }
    bundle = create_model("Resources", __base__=Bundle, **definition)
    with pytest.raises(BundleTypeError, match="provided str, but field 'port'") as info:
        async with registry.lifespan(bundle, concurrency=concurrency):
            pass  # pragma: no cover
    assert info.value.code == "bundle-type"
    assert info.value.resource_name == "port"
    assert events == ["start db", "stop db"]


async def test_unchecked_bundle_fields_keep_their_aliases() -> None:
    """A bundle built field by field maps aliased fields to their resources."""
    registry = Registry()
    database = Database()
    registry.add("db", database)
    registry.add("port", 8000)
    definition: dict[str, Any] = {
        "database": (Closable, Field(alias="db")),
        "port": (int, ...),
    }
    bundle = create_model("Resources", __base__=Bundle, **definition)
    async with registry.lifespan(bundle) as res:
        assert getattr(res, "database") is database  # noqa: B009  # a runtime field
        assert getattr(res, "port") == 8000  # noqa: B009


# --- a FastAPI app ----------------------------------------------------------------

fastapi_registry = Registry()
fastapi_registry.add("db", Database())


@fastapi_registry.resource
async def repository(db: Any) -> AsyncIterator[str]:
    """A resource written as FastAPI code often is: its dependency typed Any."""
    yield "repository"


class ApiResources(Bundle):
    """The bundle a handler reads, with a field typed Any."""

    repository: Any


async def test_a_fastapi_app_whose_resource_takes_any_starts() -> None:
    """The FastAPI lifespan starts a resource with an `Any` parameter and field."""
    app = FastAPI(lifespan=lifespan(fastapi_registry, ApiResources))

    @app.get("/")
    async def home(res: Annotated[ApiResources, Depends(resources)]) -> object:
        return res.repository

    async with open_client(app) as client:
        response = await client.get("/")
    assert response.json() == "repository"
