"""pytest plugin: the resources of a registry become test fixtures.

pytest loads it through the ``pytest11`` entry point. It does nothing until the
``lifespan_kit_registry`` ini option names a registry::

    [tool.pytest.ini_options]
    lifespan_kit_registry = "myapp.resources:registry"
    lifespan_kit_scope = "session"              # the default lifetime
    lifespan_kit_scopes = ["db = module"]       # per resource

Then every resource is a fixture of the same name (``lifespan_kit_prefix``
prepends a prefix), and ``@pytest.mark.lifespan_kit(db=FakeDatabase())`` on a
test, a class or a module replaces resources there. See the pytest page of the
docs for the whole story.

Async tests get resources on their own event loop, pytest-asyncio's or anyio's
(asyncio or trio); sync tests get them from a background loop. Each group of
resources enters and exits in one host task (see `lifespan_kit._pytest_layers`).
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Generator, Mapping
from typing import cast

import pytest

from lifespan_kit._bundle import bundle_resource_names, create_bundle
from lifespan_kit._models import Bundle
from lifespan_kit._pytest_layers import (
    MARKER,
    SCOPES,
    Resolver,
    Scope,
    Settings,
    State,
    scope_index,
)
from lifespan_kit._registry import Registry

__all__ = ["MARKER", "SCOPES", "Scope"]

_STATE = pytest.StashKey[State]()


# --- configuration -------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    """Declare the ini options (all start with ``lifespan_kit_``)."""
    parser.addini(
        "lifespan_kit_registry",
        "module:attribute of the Registry whose resources become fixtures",
        default="",
    )
    parser.addini(
        "lifespan_kit_scope",
        f"how long a resource fixture lives by default: one of {', '.join(SCOPES)}",
        default="session",
    )
    parser.addini(
        "lifespan_kit_scopes",
        "scopes of single resources, one `name = scope` per line",
        type="linelist",
        default=[],
    )
    parser.addini(
        "lifespan_kit_prefix",
        "prefix of the resource fixtures' names (default: none)",
        default="",
    )
    parser.addini(
        "lifespan_kit_bundle",
        "module:attribute of a Bundle class served by the lifespan_kit_bundle fixture",
        default="",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Read the ini options and register one fixture per resource."""
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**replacements): replace resources (values or factories) for "
        "the marked test, class or module.",
    )
    settings = _read_settings(config)
    config.stash[_STATE] = State(settings)
    if settings.registry is not None:
        fixtures = _resource_fixtures(settings.registry, settings.prefix)
        module = types.ModuleType("lifespan_kit.pytest_plugin.resource_fixtures")
        module.__dict__.update(fixtures)
        config.pluginmanager.register(module, "lifespan_kit-resource-fixtures")
    manager = id(config.pluginmanager)
    _PREFIXES[manager] = settings.prefix
    for conftest in _PENDING_CONFTESTS.pop(manager, []):
        _add_conftest_fixtures(conftest, settings.prefix)


_PREFIXES: dict[int, str] = {}
_PENDING_CONFTESTS: dict[int, list[types.ModuleType]] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_plugin_registered(
    plugin: object, plugin_name: str | None, manager: pytest.PytestPluginManager
) -> None:
    """Give a conftest that sets ``lifespan_kit_registry`` its resource fixtures.

    It runs before pytest reads the conftest's fixtures, so they are scoped to
    the conftest's directory, like fixtures written there by hand.
    """
    registry = getattr(plugin, "lifespan_kit_registry", None)
    if not (isinstance(plugin, types.ModuleType) and isinstance(registry, Registry)):
        return
    prefix = _PREFIXES.get(id(manager))
    if prefix is None:  # an initial conftest: pytest is not configured yet
        _PENDING_CONFTESTS.setdefault(id(manager), []).append(plugin)
    else:
        _add_conftest_fixtures(plugin, prefix)


def _add_conftest_fixtures(conftest: types.ModuleType, prefix: str) -> None:
    registry = conftest.lifespan_kit_registry
    assert isinstance(registry, Registry)

    @pytest.fixture(scope="session", name="lifespan_kit_registry")
    def conftest_registry() -> Registry:
        return registry

    fixtures = _resource_fixtures(registry, prefix)
    fixtures["_lifespan_kit_conftest_registry"] = conftest_registry
    conftest.__dict__.update(fixtures)


def _read_settings(config: pytest.Config) -> Settings:
    registry_path = cast("str", config.getini("lifespan_kit_registry")).strip()
    bundle_path = cast("str", config.getini("lifespan_kit_bundle")).strip()
    registry = None
    if registry_path:
        found = _import_object(registry_path, "lifespan_kit_registry")
        if not isinstance(found, Registry):
            message = (
                f"lifespan_kit_registry = {registry_path!r} is a "
                f"{type(found).__name__}, not a lifespan_kit Registry: "
                "point it at the `registry = Registry()` of your application."
            )
            raise pytest.UsageError(message)
        registry = found
    bundle = None
    if bundle_path:
        found = _import_object(bundle_path, "lifespan_kit_bundle")
        if not (isinstance(found, type) and issubclass(found, Bundle)):
            message = (
                f"lifespan_kit_bundle = {bundle_path!r} is not a Bundle subclass: "
                "point it at a `class Resources(Bundle)` of your application."
            )
            raise pytest.UsageError(message)
        bundle = found
    scopes: dict[str, int] = {}
    for line in cast("list[str]", config.getini("lifespan_kit_scopes")):
        name, equals, scope = line.partition("=")
        if not equals:
            message = (
                f"lifespan_kit_scopes line {line!r} is not `name = scope`, "
                "e.g. `db = module`."
            )
            raise pytest.UsageError(message)
        scopes[name.strip()] = scope_index(scope.strip(), f"for {name.strip()!r}")
    if registry is not None:
        unknown = sorted(set(scopes) - {resource.name for resource in registry})
        if unknown:
            message = (
                f"lifespan_kit_scopes names {', '.join(map(repr, unknown))}, "
                f"which {registry_path!r} does not register."
            )
            raise pytest.UsageError(message)
    default = scope_index(
        cast("str", config.getini("lifespan_kit_scope")).strip(), "lifespan_kit_scope"
    )
    prefix = cast("str", config.getini("lifespan_kit_prefix")).strip()
    return Settings(registry, default, scopes, prefix, bundle)


def _import_object(path: str, option: str) -> object:
    module_name, colon, attribute = path.partition(":")
    if not colon or not module_name or not attribute:
        message = (
            f"{option} = {path!r} is not `module:attribute`, "
            "e.g. `myapp.resources:registry`."
        )
        raise pytest.UsageError(message)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        message = (
            f"{option}: cannot import {module_name!r} ({exc}); "
            "set `pythonpath` in the pytest configuration or install the project."
        )
        raise pytest.UsageError(message) from exc
    try:
        return cast("object", getattr(module, attribute))
    except AttributeError:
        message = f"{option}: module {module_name!r} has no attribute {attribute!r}."
        raise pytest.UsageError(message) from None


# --- fixtures ------------------------------------------------------------------


@pytest.fixture(scope="session")
def lifespan_kit_registry(pytestconfig: pytest.Config) -> Registry:
    """The registry the resource fixtures come from.

    It is the one the ``lifespan_kit_registry`` ini option (or conftest
    variable) names. Override this fixture in a ``conftest.py`` to replace
    resources for a whole directory.

    Example:
        ```python
        import pytest

        @pytest.fixture(scope="session")
        def lifespan_kit_registry() -> Registry:
            return registry.override(db=FakeDatabase())
        ```
    """
    registry = pytestconfig.stash[_STATE].settings.registry
    if registry is None:
        message = (
            "no registry is configured: set `lifespan_kit_registry = "
            '"module:attribute"` in the pytest configuration.'
        )
        raise pytest.UsageError(message)
    return registry


@pytest.fixture
def lifespan_kit_overrides() -> Mapping[str, object]:
    """Replacements for each test that sees an override of this fixture.

    They apply like the ``lifespan_kit`` marker on a test, and beat markers;
    the override may use other fixtures.

    Example:
        ```python
        from collections.abc import Mapping

        import pytest

        @pytest.fixture
        def lifespan_kit_overrides(tmp_path: object) -> Mapping[str, object]:
            return {"db": FakeDatabase()}
        ```
    """
    return {}


@pytest.fixture
def _lifespan_kit_test(
    request: pytest.FixtureRequest,
    lifespan_kit_registry: Registry,
    lifespan_kit_overrides: Mapping[str, object],
) -> Resolver:
    """Resolve resources for one test, on its event loop."""
    state = request.config.stash[_STATE]
    return Resolver(state, request, lifespan_kit_registry, lifespan_kit_overrides)


@pytest.fixture
def lifespan_kit_bundle(
    request: pytest.FixtureRequest, _lifespan_kit_test: Resolver
) -> Bundle:
    """The bundle class the ``lifespan_kit_bundle`` ini option names, filled.

    Its resources are this test's, with its overrides.

    Example:
        ```python
        def test_bundle(lifespan_kit_bundle: Resources) -> None:
            assert lifespan_kit_bundle.db is not None
        ```
    """
    bundle = request.config.stash[_STATE].settings.bundle
    if bundle is None:
        message = (
            "no bundle is configured: set `lifespan_kit_bundle = "
            '"module:Class"` in the pytest configuration.'
        )
        raise pytest.UsageError(message)
    names = bundle_resource_names(bundle)
    values = _lifespan_kit_test.values(names)
    return create_bundle(bundle, dict(zip(names, values, strict=True)))


def _resource_fixtures(registry: Registry, prefix: str) -> dict[str, object]:
    """Build one fixture per resource, keyed by a name no one else uses."""
    fixtures: dict[str, object] = {}
    for resource in registry:
        name = resource.name

        def resource_fixture(_lifespan_kit_test: Resolver, name: str = name) -> object:
            return _lifespan_kit_test.values((name,))[0]

        resource_fixture.__doc__ = f"The value of resource {name!r}."
        fixture_name = f"{prefix}{name}"
        fixtures[f"_lifespan_kit_fixture_{fixture_name}"] = pytest.fixture(
            name=fixture_name
        )(resource_fixture)
    return fixtures


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, None, None]:
    """After a test, give anyio's runner back if the next test needs another."""
    try:
        return (yield)
    finally:
        state = item.config.stash[_STATE]
        state.release_anyio(state.next_running(nextitem))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Number the tests, to look past the skipped ones quickly."""
    state = session.config.stash[_STATE]
    state.positions = {item: index for index, item in enumerate(session.items)}
    state.items = session.items


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop what an interrupted run left, and the background loop."""
    session.config.stash[_STATE].close()
