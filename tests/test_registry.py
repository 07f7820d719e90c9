"""Declaring resources: names, factory forms, dependencies, options, composition."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import pytest

from lifespan_kit import Bundle, Registry, Resource
from lifespan_kit.errors import (
    DuplicateResourceError,
    InvalidBundleError,
    InvalidFactoryError,
    InvalidOptionError,
    UnknownResourceError,
)


def test_decorator_uses_the_function_name_and_returns_a_handle() -> None:
    """@registry.resource registers under the function's name and returns a Resource."""
    registry = Registry()

    @registry.resource
    async def db() -> AsyncIterator[int]:
        yield 1  # pragma: no cover

    assert isinstance(db, Resource)
    assert db.name == "db"
    assert db.kind == "async_generator"
    assert registry["db"] is db
    assert "db" in registry
    assert len(registry) == 1
    assert list(registry) == [db]


def test_decorator_with_options_sets_name_and_timeouts() -> None:
    """@registry.resource(...) applies its options."""
    registry = Registry()

    @registry.resource(name="database", start_timeout=3, stop_timeout=math.inf)
    async def make_db() -> int:
        return 1  # pragma: no cover

    assert make_db.name == "database"
    assert make_db.timeouts.start_timeout == 3
    assert make_db.timeouts.stop_timeout == math.inf


def test_dependencies_are_parameters_without_defaults() -> None:
    """Parameters with defaults, *args and **kwargs are not dependencies."""
    registry = Registry()

    def factory(a: int, b: int = 2, *args: int, c: int, d: int = 4, **kw: int) -> int:
        return a  # pragma: no cover

    resource = registry.add("thing", factory)
    assert [d.resource_name for d in resource.dependencies] == ["a", "c"]


def test_depends_maps_parameters_to_resources() -> None:
    """depends= renames a parameter's resource, even one with a default."""
    registry = Registry()

    def factory(cfg: object, timeout: float = 1.0) -> None:
        return None  # pragma: no cover

    resource = registry.add(
        "db", factory, depends={"cfg": "settings", "timeout": "db_timeout"}
    )
    assert [(d.parameter, d.resource_name) for d in resource.dependencies] == [
        ("cfg", "settings"),
        ("timeout", "db_timeout"),
    ]


def test_depends_may_name_keyword_arguments() -> None:
    """With **kwargs, depends= may add parameters the signature does not list."""
    registry = Registry()
    resource = registry.add("db", lambda **kw: kw, depends={"extra": "settings"})
    assert [d.parameter for d in resource.dependencies] == ["extra"]


async def test_positional_only_dependencies_are_passed_by_position() -> None:
    """Positional-only parameters receive their resources positionally."""
    registry = Registry()
    registry.add("a", 1)
    registry.add("b", 2)

    def pair(a: int, /, b: int) -> tuple[int, int]:
        return (a, b)

    registry.add("pair", pair)
    async with registry.lifespan() as resources:
        assert resources["pair"] == (1, 2)


def test_unknown_depends_parameter_is_rejected() -> None:
    """depends= naming a parameter the factory lacks is an InvalidFactoryError."""
    registry = Registry()
    with pytest.raises(InvalidFactoryError, match="names parameter 'nope'") as info:
        registry.add("db", lambda settings: None, depends={"nope": "x"})
    assert info.value.code == "invalid-factory"
    assert "use one of its parameters: settings." in str(info.value)


def test_depends_on_a_plain_value_is_rejected() -> None:
    """A plain value has no parameters to map."""
    registry = Registry()
    with pytest.raises(InvalidFactoryError, match="plain value"):
        registry.add("answer", 42, depends={"x": "y"})  # type: ignore[call-overload]


def test_factory_whose_signature_raises_is_named() -> None:
    """A factory whose signature cannot be read is reported with the cause."""

    class Broken:
        @property
        def __signature__(self) -> object:
            raise RuntimeError("no signature for you")

        def __call__(self) -> int:
            return 1  # pragma: no cover

    registry = Registry()
    with pytest.raises(
        InvalidFactoryError, match="reading its signature raised"
    ) as info:
        registry.add("broken", Broken())
    assert isinstance(info.value.__cause__, RuntimeError)


def test_builtin_without_signature_takes_no_dependencies() -> None:
    """A callable with no introspectable signature is a factory without dependencies."""
    registry = Registry()
    resource: Resource[object] = registry.add("numbers", dict)
    assert resource.dependencies == ()
    assert resource.kind == "callable"


def test_callable_object_with_async_call_is_a_coroutine_factory() -> None:
    """An instance with `async def __call__` is run as an async function."""

    class Factory:
        async def __call__(self) -> int:
            return 1  # pragma: no cover

    assert Registry().add("thing", Factory()).kind == "coroutine"


def test_duplicate_name_shows_both_definitions() -> None:
    """Registering a name twice names both places it was defined."""
    registry = Registry()

    @registry.resource
    def db() -> int:
        return 1  # pragma: no cover

    with pytest.raises(DuplicateResourceError) as info:
        registry.add("db", 2)
    error = info.value
    assert error.code == "duplicate-resource"
    assert error.resource_name == "db"
    assert "test_duplicate_name_shows_both_definitions.<locals>.db" in error.first
    assert "test_registry.py:" in error.first
    assert error.second == "a value of type int"
    assert "Resource 'db' is registered twice." in str(error)


def test_duplicate_builtin_factory_is_described_without_a_file() -> None:
    """A builtin factory has no source file; the error still names it."""
    registry = Registry()
    registry.add("numbers", dict)
    with pytest.raises(DuplicateResourceError) as info:
        registry.add("numbers", list)
    assert (info.value.first, info.value.second) == ("builtins.dict", "builtins.list")


def test_invalid_names_are_rejected() -> None:
    """A name must be a Python identifier, so it can be a parameter name."""
    registry = Registry()
    with pytest.raises(InvalidFactoryError, match="not a valid Python identifier"):
        registry.add("db-pool", 1)
    with pytest.raises(InvalidFactoryError, match="not a valid Python identifier"):
        registry.resource(lambda: 1)


def test_decorating_a_non_callable_is_rejected() -> None:
    """The decorator form needs a named callable."""
    registry = Registry()
    with pytest.raises(InvalidFactoryError, match="is not a named callable"):
        registry.resource(42)  # type: ignore[call-overload]


def test_invalid_timeouts_name_the_resource_and_option() -> None:
    """A non-positive timeout is rejected with the option's name."""
    registry = Registry()
    with pytest.raises(
        InvalidOptionError, match="Option 'stop_timeout' of resource 'db'"
    ):
        registry.add("db", 1, stop_timeout=-1)  # type: ignore[call-overload]
    with pytest.raises(
        InvalidOptionError, match="Option 'start_timeout' of the registry"
    ):
        Registry(start_timeout=0)


@pytest.mark.parametrize(
    "concurrency",
    [
        pytest.param(0, id="zero"),
        pytest.param(True, id="bool"),
        pytest.param(1.5, id="float"),
    ],
)
def test_invalid_concurrency_is_rejected(concurrency: object) -> None:
    """concurrency must be a positive int or None."""
    with pytest.raises(InvalidOptionError, match="Option 'concurrency'"):
        Registry().lifespan(concurrency=concurrency)  # type: ignore[call-overload]


def test_lifespan_requires_a_bundle_subclass() -> None:
    """Passing something other than a Bundle subclass is an InvalidBundleError."""
    from pydantic import BaseModel

    class NotABundle(BaseModel):
        db: int

    with pytest.raises(InvalidBundleError, match="not the class NotABundle"):
        Registry().lifespan(NotABundle)  # type: ignore[type-var]
    with pytest.raises(InvalidBundleError, match="not an instance of int"):
        Registry().check(3)  # type: ignore[arg-type]


def test_lookup_of_an_unknown_name_suggests() -> None:
    """registry[name] for a missing name suggests close ones."""
    registry = Registry()
    registry.add("database", 1)
    with pytest.raises(UnknownResourceError, match="did you mean: 'database'"):
        registry["databse"]


def test_include_copies_resources_of_another_registry() -> None:
    """include() adds the other registry's resources."""
    library = Registry()
    library.add("client", 1)
    app = Registry()
    app.add("db", 2)
    app.include(library)
    assert [r.name for r in app] == ["db", "client"]


def test_include_refuses_duplicates_and_copies_nothing() -> None:
    """A name in both registries is an error and leaves the target unchanged."""
    library = Registry()
    library.add("other", 0)
    library.add("db", 1)
    app = Registry()
    app.add("db", 2)
    with pytest.raises(DuplicateResourceError):
        app.include(library)
    assert [r.name for r in app] == ["db"]


async def test_override_replaces_a_resource_and_prunes_its_dependencies() -> None:
    """An overridden resource no longer pulls in what only it needed."""
    started: list[str] = []
    registry = Registry()

    async def connection() -> AsyncIterator[str]:
        started.append("connection")
        yield "real connection"

    registry.add("connection", connection)
    registry.add("db", lambda connection: f"db over {connection}")

    class Resources(Bundle):
        db: str

    fake = registry.override(db="fake db")
    assert fake is not registry
    async with fake.lifespan(Resources) as resources:
        assert resources.db == "fake db"
    assert started == []
    async with registry.lifespan(Resources) as resources:
        assert resources.db == "db over real connection"
    assert started == ["connection"]


def test_override_of_an_unknown_name_is_an_error() -> None:
    """Overriding a name that is not registered is refused (it is probably a typo)."""
    registry = Registry()
    registry.add("db", 1)
    with pytest.raises(UnknownResourceError, match=r"passed to override\(\)"):
        registry.override(dbb=2)


async def test_override_keeps_listeners_and_defaults() -> None:
    """The copy made by override() keeps the registry's listeners."""
    heard: list[str] = []
    registry = Registry(stop_timeout=1)
    registry.add_listener(lambda e: heard.append(e.kind))
    registry.add("db", lambda: 1)
    async with registry.override(db=lambda: 2).lifespan() as resources:
        assert resources["db"] == 2
    assert heard[:2] == ["starting", "started"]


def test_reprs_are_informative() -> None:
    """Registry and Resource reprs show names, kinds and dependencies."""
    registry = Registry()
    registry.add("settings", 1)
    db = registry.add("db", lambda settings: settings)
    assert repr(registry) == "<Registry ['settings', 'db']>"
    assert repr(db) == "<Resource 'db' (callable) depends on [settings]>"


async def test_resource_map_is_typed_by_handle_and_suggests_names() -> None:
    """A ResourceMap looks values up by handle or name, and suggests on a miss."""
    registry = Registry()
    db = registry.add("db", 1)
    async with registry.lifespan() as resources:
        assert resources[db] == 1
        assert len(resources) == 1
        assert repr(resources) == "ResourceMap(['db'])"
        with pytest.raises(UnknownResourceError, match="did you mean: 'db'"):
            resources["dbb"]


async def test_real_numbers_satisfy_a_complex_annotation() -> None:
    """The numeric tower applies to complex too, but a bool is no number here."""
    registry = Registry()
    registry.add("real", 2.5)

    def widened(real: complex) -> complex:
        return real * 1j

    registry.add("widened", widened)
    async with registry.lifespan() as resources:
        assert resources["widened"] == 2.5j


async def test_annotations_that_cannot_resolve_skip_the_type_check() -> None:
    """An unresolvable forward reference only documents; startup still works."""
    registry = Registry()
    registry.add("settings", 1)

    def db(settings: NotDefinedAnywhere) -> str:  # type: ignore[name-defined]  # noqa: F821
        return "db"

    registry.add("db", db)
    async with registry.lifespan() as resources:
        assert resources["db"] == "db"


class Settings:
    """A stand-in settings class."""


async def test_class_factories_are_checked_through_init() -> None:
    """A class used as a factory has its __init__ annotations checked."""

    class Client:
        def __init__(self, settings: Settings) -> None:
            self.settings = settings

    registry = Registry()
    registry.add("settings", Settings())
    registry.add("client", Client)
    async with registry.lifespan() as resources:
        assert isinstance(resources["client"], Client)
