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

How it keeps its promises:

- A resource lives in a *layer*: one per scope node (the session, a module, a
  test...) and event loop. A resource's layer is the narrowest of its own scope,
  its dependencies' layers and the place an override of it was declared, so
  overriding ``db`` for one test restarts what depends on ``db`` for that test
  only, and what only the replaced ``db`` needed is never started.
- Each layer runs its resources in one *host task* on the test's event loop:
  setup and teardown may come from different tasks (pytest-asyncio does that),
  the resources still enter and exit in the host task.
- A layer stops, in reverse, when pytest leaves its scope node or when the loop
  it runs on is about to end; its teardown errors are raised then, once.
- Async tests get resources on their own loop (pytest-asyncio's runner or
  anyio's test runner, on asyncio or trio); sync tests get them from a
  background event loop, which suits values that need no loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import sys
import types
from collections.abc import Callable, Coroutine, Generator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol, TypeVar, cast

import anyio
import anyio.from_thread
import pytest

from lifespan_kit._bundle import Bundle, bundle_resource_names, create_bundle
from lifespan_kit._lifespan import Lifespan
from lifespan_kit._registry import Registry

if sys.version_info < (3, 11):  # pragma: no cover  # the backport, on 3.10 only
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from anyio.abc import TestRunner
    from anyio.streams.memory import (
        MemoryObjectReceiveStream,
        MemoryObjectSendStream,
    )

    from lifespan_kit._bundle import ResourceMap

__all__ = ["SCOPES"]

T = TypeVar("T")

SCOPES: Final = ("session", "package", "module", "class", "function")
"""The scopes a resource fixture may have, widest first (pytest's own names)."""

MARKER: Final = "lifespan_kit"

_STATE = pytest.StashKey["_State"]()


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
    config.stash[_STATE] = _State(settings)
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


@dataclass(frozen=True)
class _Settings:
    registry: Registry | None
    default_scope: int
    scopes: Mapping[str, int]
    prefix: str
    bundle: type[Bundle] | None


def _read_settings(config: pytest.Config) -> _Settings:
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
        scopes[name.strip()] = _scope_index(scope.strip(), f"for {name.strip()!r}")
    if registry is not None:
        unknown = sorted(set(scopes) - {resource.name for resource in registry})
        if unknown:
            message = (
                f"lifespan_kit_scopes names {', '.join(map(repr, unknown))}, "
                f"which {registry_path!r} does not register."
            )
            raise pytest.UsageError(message)
    default = _scope_index(
        cast("str", config.getini("lifespan_kit_scope")).strip(), "lifespan_kit_scope"
    )
    prefix = cast("str", config.getini("lifespan_kit_prefix")).strip()
    return _Settings(registry, default, scopes, prefix, bundle)


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


def _scope_index(scope: str, where: str) -> int:
    if scope not in SCOPES:
        message = f"scope {scope!r} {where} is not one of {', '.join(SCOPES)}."
        raise pytest.UsageError(message)
    return SCOPES.index(scope)


# --- fixtures ------------------------------------------------------------------


@pytest.fixture(scope="session")
def lifespan_kit_registry(pytestconfig: pytest.Config) -> Registry:
    """The registry the resource fixtures come from.

    It is the one ``lifespan_kit_registry`` names. Override this fixture in a
    ``conftest.py`` to replace resources for a whole directory::

        @pytest.fixture(scope="session")
        def lifespan_kit_registry() -> Registry:
            return registry.override(mailer=FakeMailer())
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
    """Replacements for one test: override it to return ``{"db": FakeDatabase()}``.

    They apply to the tests that see the override, like the marker on a test.
    """
    return {}


@pytest.fixture
def _lifespan_kit_test(
    request: pytest.FixtureRequest,
    lifespan_kit_registry: Registry,
    lifespan_kit_overrides: Mapping[str, object],
) -> _Test:
    """Resolve resources for one test, on its event loop."""
    state = request.config.stash[_STATE]
    return _Test(state, request, lifespan_kit_registry, lifespan_kit_overrides)


@pytest.fixture
def lifespan_kit_bundle(
    request: pytest.FixtureRequest, _lifespan_kit_test: _Test
) -> Bundle:
    """The bundle class ``lifespan_kit_bundle`` names, with this test's resources."""
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

        def resource_fixture(_lifespan_kit_test: _Test, name: str = name) -> object:
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
    state.positions = {id(item): index for index, item in enumerate(session.items)}
    state.items = session.items


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop what an interrupted run left, and the background loop."""
    session.config.stash[_STATE].close()


# --- running -------------------------------------------------------------------


class _Driver(Protocol):
    """Runs coroutines on one event loop from synchronous fixture code."""

    def run(self, func: Callable[[], Coroutine[object, object, T]]) -> T: ...

    def close(self) -> None: ...


@dataclass(eq=False)
class _Layer:
    """The resources of one scope node on one loop, entered by one host task."""

    driver: _Driver
    level: int
    host: _Host
    values: dict[str, object] = field(default_factory=dict[str, object])
    failures: dict[str, BaseException] = field(default_factory=dict[str, BaseException])


_LayerKey = tuple[int, int, int, int]


class _State:
    """What the plugin keeps for the whole run: loops and running layers.

    Layers and pytest-asyncio's loops end with their scope node, through the
    node's finalizers (which pytest runs before those of fixtures set up
    earlier, such as the loop's own runner). anyio's test runner is shared
    by all tests of a backend, so it is held until the next test needs
    another backend, or none.
    """

    def __init__(self, settings: _Settings) -> None:
        self.settings = settings
        self.layers: dict[_LayerKey, _Layer] = {}
        self.drivers: list[_Driver] = []
        self.items: list[pytest.Item] = []
        self.positions: dict[int, int] = {}

    def driver_for(self, request: pytest.FixtureRequest) -> _Driver:
        item = request.node
        assert isinstance(item, pytest.Function)
        if not inspect.iscoroutinefunction(item.obj):
            return self._portal_driver(item)
        if "anyio_backend" in item.fixturenames:
            backend = cast("object", request.getfixturevalue("anyio_backend"))
            return self._anyio_driver(backend)
        return self._asyncio_driver(request, item)

    def _portal_driver(self, item: pytest.Item) -> _Driver:
        for driver in self.drivers:
            if isinstance(driver, _PortalDriver):
                return driver
        return self._add_driver(_PortalDriver(), item.session)

    def _anyio_driver(self, backend: object) -> _Driver:
        for driver in self.drivers:
            if isinstance(driver, _AnyioDriver) and driver.backend == backend:
                return driver
        self.release_anyio(None)  # one runner at a time: another backend's ends
        return self._add_driver(_AnyioDriver(backend), None)

    def _asyncio_driver(
        self, request: pytest.FixtureRequest, item: pytest.Function
    ) -> _Driver:
        if not request.config.pluginmanager.has_plugin("asyncio"):
            message = (
                f"{item.nodeid} is an async test, but neither anyio's pytest plugin "
                "nor pytest-asyncio runs it: mark it `@pytest.mark.anyio` or "
                "`@pytest.mark.asyncio`."
            )
            raise pytest.UsageError(message)
        marker = item.get_closest_marker("asyncio")
        kwargs: Mapping[str, object] = {} if marker is None else marker.kwargs
        loop_scope = cast(
            "str",
            kwargs.get("loop_scope")
            or kwargs.get("scope")
            or request.config.getini("asyncio_default_test_loop_scope")
            or "function",
        )
        runner = cast(
            "_AsyncioRunner", request.getfixturevalue(f"_{loop_scope}_scoped_runner")
        )
        for driver in self.drivers:
            if isinstance(driver, _AsyncioDriver) and driver.runner is runner:
                return driver
        node = _scope_node(item, _scope_index(loop_scope, "of pytest-asyncio's loop"))
        return self._add_driver(_AsyncioDriver(runner), node)

    def _add_driver(
        self, driver: _Driver, node: pytest.Item | pytest.Collector | None
    ) -> _Driver:
        self.drivers.append(driver)
        if node is not None:
            node.addfinalizer(lambda: _raise_all(self.stop_driver(driver)))
        return driver

    async def open_layer(
        self, key: _LayerKey, driver: _Driver, node: pytest.Item | pytest.Collector
    ) -> _Layer:
        """Return the layer `key`, starting its host task on first use."""
        layer = self.layers.get(key)
        if layer is None:
            layer = self.layers[key] = _Layer(driver, key[1], await _Host.spawn())
            node.addfinalizer(lambda: _raise_all(self._stop_layers([key])))
        return layer

    def next_running(self, next_item: pytest.Item | None) -> pytest.Item | None:
        """The next test that is not skipped by a plain ``skip`` marker."""
        index = self.positions.get(id(next_item))
        if index is None:
            return next_item
        for upcoming in self.items[index:]:
            if upcoming.get_closest_marker("skip") is None:
                return upcoming
        return None

    def release_anyio(self, next_item: pytest.Item | None) -> None:
        params = getattr(getattr(next_item, "callspec", None), "params", {})
        backend = cast("dict[str, object]", params).get("anyio_backend")
        errors: list[BaseException] = []
        for driver in list(self.drivers):
            if isinstance(driver, _AnyioDriver) and driver.backend != backend:
                errors.extend(self.stop_driver(driver))
        _raise_all(errors)

    def stop_driver(self, driver: _Driver) -> list[BaseException]:
        if driver not in self.drivers:
            return []
        errors = self._stop_layers(
            [key for key, layer in self.layers.items() if layer.driver is driver]
        )
        self.drivers.remove(driver)
        driver.close()
        return errors

    def _stop_layers(self, keys: list[_LayerKey]) -> list[BaseException]:
        layers = [(key, self.layers[key]) for key in keys if key in self.layers]
        errors: list[BaseException] = []
        # Narrowest first, newest first: dependents stop before their dependencies.
        ordered = sorted(enumerate(layers), key=lambda e: (-e[1][1].level, -e[0]))
        for _, (key, layer) in ordered:
            del self.layers[key]
            errors.extend(layer.driver.run(layer.host.stop))
        return errors

    def close(self) -> None:
        errors: list[BaseException] = []
        for driver in list(self.drivers):
            errors.extend(self.stop_driver(driver))
        _raise_all(errors)


class _Test:
    """One test's view: its overrides, its registry and its event loop."""

    def __init__(
        self,
        state: _State,
        request: pytest.FixtureRequest,
        registry: Registry,
        fixture_overrides: Mapping[str, object],
    ) -> None:
        item = request.node
        assert isinstance(item, pytest.Item)
        self._state = state
        self._item = item
        self._request = request
        self._base = registry
        replacements, self._override_levels = _overrides(item, fixture_overrides)
        self._registry = registry.override(**replacements) if replacements else registry
        self._levels: dict[str, int] = {}
        # Ask for the loop now, so that pytest stops this test's fixture first.
        self._driver = state.driver_for(request)

    def values(self, names: tuple[str, ...]) -> list[object]:
        driver = self._driver

        async def resolve_all() -> list[object]:
            return [await self._resolve(name, driver) for name in names]

        return driver.run(resolve_all)

    async def _resolve(self, name: str, driver: _Driver) -> object:
        level = self._level(name)
        node = _scope_node(self._item, level)
        key = (id(driver), level, id(node), id(self._base))
        layer = self._state.layers.get(key)
        if layer is not None and name in layer.values:
            return layer.values[name]
        if layer is not None and name in layer.failures:
            raise layer.failures[name]
        resource = self._registry[name]
        provided = {
            dependency.resource_name: await self._resolve(
                dependency.resource_name, driver
            )
            for dependency in resource.dependencies
        }
        layer = await self._state.open_layer(key, driver, node)
        lifespan = self._registry._open_resource(name, provided)  # pyright: ignore[reportPrivateUsage]
        try:
            started = await layer.host.start(lifespan)
        except Exception as exc:
            layer.failures[name] = exc
            raise
        value = layer.values[name] = started[name]
        return value

    def _level(self, name: str) -> int:
        level = self._levels.get(name)
        if level is None:
            settings = self._state.settings
            level = max(
                settings.scopes.get(name, settings.default_scope),
                self._override_levels.get(name, 0),
                *(
                    self._level(dependency.resource_name)
                    for dependency in self._registry[name].dependencies
                ),
            )
            self._levels[name] = level
        return level


def _overrides(
    item: pytest.Item, fixture_overrides: Mapping[str, object]
) -> tuple[dict[str, object], dict[str, int]]:
    """Collect replacements: the fixture's, then the closest marker's, by name."""
    replacements = dict(fixture_overrides)
    levels = dict.fromkeys(fixture_overrides, SCOPES.index("function"))
    for node, mark in item.iter_markers_with_node(MARKER):
        if mark.args:
            message = (
                f"@pytest.mark.{MARKER} takes resource names as keywords, "
                f"e.g. {MARKER}(db=FakeDatabase()); {item.nodeid} passes "
                "positional arguments."
            )
            raise pytest.UsageError(message)
        for name, replacement in mark.kwargs.items():
            if name not in replacements:
                replacements[name] = replacement
                levels[name] = _node_level(node)
    return replacements, levels


def _node_level(node: object) -> int:
    """The level of an override: the scope of the node its marker is on."""
    if isinstance(node, pytest.Item):
        return SCOPES.index("function")
    if isinstance(node, pytest.Class):
        return SCOPES.index("class")
    # A module's, or a package's (kept per module: a narrower, safe choice).
    return SCOPES.index("module")


def _scope_node(item: pytest.Item, level: int) -> pytest.Item | pytest.Collector:
    scope = SCOPES[level]
    node: pytest.Item | pytest.Collector | None = None
    if scope == "session":
        node = item.session
    elif scope == "package":
        node = item.getparent(pytest.Package) or item.session
    elif scope == "module":
        node = item.getparent(pytest.Module)
    elif scope == "class":
        node = item.getparent(pytest.Class) or item.getparent(pytest.Module)
    return node or item


def _raise_all(errors: list[BaseException]) -> None:
    if len(errors) == 1:
        raise errors[0]
    if errors:
        message = f"{len(errors)} lifespan_kit resources failed to stop"
        raise BaseExceptionGroup(message, errors)


# --- the host task -------------------------------------------------------------


class _Reply:
    def __init__(self) -> None:
        self.done = anyio.Event()
        self.value: ResourceMap | None = None
        self.error: BaseException | None = None


class _Host:
    """One task that enters a layer's lifespans and exits them, in reverse."""

    def __init__(
        self, send: MemoryObjectSendStream[tuple[Lifespan[ResourceMap], _Reply]]
    ) -> None:
        self._send = send
        self._stopped = anyio.Event()
        self._errors: list[BaseException] = []

    @classmethod
    async def spawn(cls) -> _Host:
        send, receive = anyio.create_memory_object_stream[
            "tuple[Lifespan[ResourceMap], _Reply]"
        ](1)
        host = cls(send)
        _spawn_task(lambda: host._serve(receive))
        return host

    async def start(self, lifespan: Lifespan[ResourceMap]) -> ResourceMap:
        reply = _Reply()
        await self._send.send((lifespan, reply))
        await reply.done.wait()
        if reply.error is not None:
            raise reply.error
        assert reply.value is not None
        return reply.value

    async def stop(self) -> list[BaseException]:
        self._send.close()
        await self._stopped.wait()
        return self._errors

    async def _serve(
        self,
        requests: MemoryObjectReceiveStream[tuple[Lifespan[ResourceMap], _Reply]],
    ) -> None:
        opened: list[Lifespan[ResourceMap]] = []
        try:
            with requests:
                async for lifespan, reply in requests:
                    try:
                        reply.value = await lifespan.__aenter__()
                        opened.append(lifespan)
                    except Exception as exc:
                        reply.error = exc
                    finally:
                        reply.done.set()
        finally:
            for lifespan in reversed(opened):
                error = await _exit(lifespan)
                if error is not None:
                    self._errors.append(error)
            self._send.close()
            self._stopped.set()


async def _exit(lifespan: Lifespan[ResourceMap]) -> Exception | None:
    try:
        await lifespan.__aexit__(None, None, None)
    except Exception as exc:  # reported at the end of the layer's scope
        return exc
    return None


def _spawn_task(func: Callable[[], Coroutine[object, object, None]]) -> None:
    """Start `func` in a task of its own that outlives the calling task."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        import trio

        trio.lowlevel.spawn_system_task(func)
    else:
        task = loop.create_task(func())
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)


_TASKS: set[asyncio.Task[None]] = set()


# --- drivers: where a test's event loop comes from -----------------------------


class _PortalDriver:
    """A background loop for sync tests, alive until the end of the session."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._portal = self._stack.enter_context(
            anyio.from_thread.start_blocking_portal("asyncio")
        )

    def run(self, func: Callable[[], Coroutine[object, object, T]]) -> T:
        return self._portal.call(func)

    def close(self) -> None:
        self._stack.close()


class _AnyioDriver:
    """anyio's test runner, kept open between tests of the same backend."""

    def __init__(self, backend: object) -> None:
        from anyio.pytest_plugin import extract_backend_and_options, get_runner

        self.backend = backend
        name, options = extract_backend_and_options(backend)
        self._stack = contextlib.ExitStack()
        self._runner: TestRunner = self._stack.enter_context(get_runner(name, options))

    def run(self, func: Callable[[], Coroutine[object, object, T]]) -> T:
        return self._runner.run_fixture(func, {})

    def close(self) -> None:
        self._stack.close()


class _AsyncioRunner(Protocol):
    """What pytest-asyncio's runner fixtures give: an `asyncio.Runner`."""

    def run(self, coro: Coroutine[object, object, T]) -> T: ...


class _AsyncioDriver:
    """pytest-asyncio's runner for the test's loop scope."""

    def __init__(self, runner: _AsyncioRunner) -> None:
        self.runner = runner

    def run(self, func: Callable[[], Coroutine[object, object, T]]) -> T:
        async def call() -> T:
            return await func()

        return self.runner.run(call())

    def close(self) -> None:
        """The runner is pytest-asyncio's: it closes it."""
