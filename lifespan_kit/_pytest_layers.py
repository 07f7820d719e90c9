"""The pytest plugin's machinery: layers of resources, and which test gets which.

`lifespan_kit.pytest_plugin` turns ini options, markers and fixture requests
into calls here; it imports this module only once a registry is in use.

- A resource lives in a *layer*: one per scope node (the session, a module, a
  test...), event loop and registry. A resource's layer is the narrowest of its
  own scope, its dependencies' layers, the place an override of it was
  declared and the scope of the ``lifespan_kit_registry`` fixture, so
  overriding ``db`` for one test restarts what depends on ``db`` for that test
  only, and what only the replaced ``db`` needed never starts.
- Each started resource is a *slot* of its layer: its value, or the failure
  that every test asking for it gets (a failed start, or a failure while it
  runs, which also marks the slots built on it).
- Each layer enters its resources in one *host task* on the test's event loop
  (see `lifespan_kit._pytest_loops`), so setup and teardown may come from
  different tasks (pytest-asyncio does that) while the resources enter and
  exit in one. The host task also waits on each lifespan's `wait_failed`.
- A layer stops, in reverse, when pytest tears its scope node down, or when the
  loop it runs on is about to end; its teardown errors are raised then, once.
- A *driver* runs coroutines on a test's loop from pytest's synchronous code
  (see `lifespan_kit._pytest_loops`). A value already started is handed out
  without touching the loop.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
import weakref
from collections.abc import Mapping
from types import TracebackType
from typing import cast

import pytest

from lifespan_kit._pytest_loops import (
    AnyioDriver,
    AsyncioDriver,
    AsyncioRunner,
    Driver,
    Host,
    PortalDriver,
)
from lifespan_kit._registry import Registry
from lifespan_kit.pytest_plugin import MARKER, SCOPES, Settings

if sys.version_info < (3, 11):  # pragma: no cover  # the backport, on 3.10 only
    from exceptiongroup import BaseExceptionGroup

# pytest leaves the frames of this module out of failure reports, so that a
# report starts with the test and the resource code the user wrote.
__tracebackhide__ = True

_FUNCTION = SCOPES.index("function")
_RESOLVER = pytest.StashKey["Resolver"]()


Node = pytest.Item | pytest.Collector
_LayerKey = tuple["Driver", int, Node, Registry]
"""A layer's identity: its loop, its level, its scope node and its registry."""


class _Slot:
    """One resource started in a layer: its value, or the failure to report."""

    __slots__ = ("context", "dependencies", "dependents", "error", "name", "value")

    def __init__(self, name: str, dependencies: list[_Slot]) -> None:
        self.name = name
        self.dependencies = dependencies
        self.dependents: list[_Slot] = []
        self.value: object = None
        self.error: BaseException | None = None
        self.context: BaseException | None = None

    def get(self) -> object:
        if self.error is not None:
            self.raise_error()
        return self.value

    def raise_error(self) -> None:
        error = self.error
        assert error is not None
        # Raised afresh each time: the report of every test that gets it has
        # the same size, instead of growing with the frames of each raise.
        error.__context__ = self.context
        raise error.with_traceback(None)

    def fail(self, error: BaseException) -> None:
        """Record `error` here and in every slot built on this one."""
        if self.error is None:
            self.error = error
            self.context = error.__context__
            for dependent in self.dependents:
                dependent.fail(error)


class _Layer:
    """The resources of one scope node on one loop, entered by one host task."""

    def __init__(self, driver: Driver, level: int) -> None:
        self.driver = driver
        self.level = level
        self.slots: dict[str, _Slot] = {}
        self.host: Host | None = None

    def fail(self, resource_name: str, error: BaseException) -> None:
        self.slots[resource_name].fail(_prepared(error))

    def forget(self) -> None:
        """Unlink this layer's slots from the wider ones they were built on."""
        for slot in self.slots.values():
            for dependency in slot.dependencies:
                with contextlib.suppress(ValueError):
                    dependency.dependents.remove(slot)


class State:
    """What the plugin keeps for the whole run: loops and running layers.

    Layers end with their scope node, through the node's finalizers (which
    pytest runs before those of fixtures set up earlier, such as the loop's
    own runner), and pytest-asyncio's loops end with their runner fixture.
    anyio's test runner is shared by all tests of a backend, so it is held
    until a test needs another backend, or none.
    """

    def __init__(
        self,
        settings: Settings,
        runners: dict[str, tuple[object, pytest.FixtureDef[object]]],
    ) -> None:
        self.settings = settings
        self.layers: dict[_LayerKey, _Layer] = {}
        self.drivers: list[Driver] = []
        self._runners = runners
        self._registry_levels = weakref.WeakKeyDictionary[Registry, int]()
        self._levels = weakref.WeakKeyDictionary[Registry, dict[str, int]]()

    # --- what pytest tells -----------------------------------------------------

    def resolver(
        self,
        request: pytest.FixtureRequest,
        registry: Registry,
        fixture_overrides: Mapping[str, object],
    ) -> Resolver:
        """Return the test's resolver, made by its first resource fixture."""
        stash = cast("pytest.Item", request.node).stash
        resolver = stash.get(_RESOLVER, None)
        if resolver is None:
            resolver = stash[_RESOLVER] = Resolver(
                self, request, registry, fixture_overrides
            )
        return resolver

    def cap_registry(self, registry: object, scope: str) -> None:
        """Make the resources of `registry` live no longer than its fixture.

        Raises:
            pytest.UsageError: When the fixture gives something else.
        """
        if not isinstance(registry, Registry):
            message = (
                f"the lifespan_kit_registry fixture gave a {type(registry).__name__}, "
                "not a lifespan_kit Registry: return `registry.override(...)` "
                "or the registry itself."
            )
            raise pytest.UsageError(message)
        self._registry_levels[registry] = SCOPES.index(scope)

    def registry_level(self, registry: Registry) -> int:
        return self._registry_levels.get(registry, 0)

    def shared_levels(self, registry: Registry) -> dict[str, int]:
        """The levels of `registry`'s resources for tests without overrides."""
        levels = self._levels.get(registry)
        if levels is None:
            levels = self._levels[registry] = {}
        return levels

    def use_anyio_backend(self, backend: object) -> None:
        """Give back anyio's runner unless it runs `backend`."""
        if not self._holds_anyio():
            return
        errors: list[BaseException] = []
        for driver in list(self.drivers):
            if isinstance(driver, AnyioDriver) and driver.backend != backend:
                errors.extend(self.stop_driver(driver))
        raise_all(errors)

    def after_test(self, item: pytest.Item, next_item: pytest.Item | None) -> None:
        """Forget the test; give anyio's runner back before a test without it.

        A sync test may start a loop of its own (`anyio.run`), which anyio
        refuses while its runner is held. A test skipped by a ``skip`` marker
        is looked past: it asks for no loop, and its own teardown decides for
        the test after it.
        """
        if _RESOLVER in item.stash:
            del item.stash[_RESOLVER]
        if self._holds_anyio() and (
            next_item is None
            or not (_runs_on_anyio(next_item) or next_item.get_closest_marker("skip"))
        ):
            self.use_anyio_backend(None)

    def _holds_anyio(self) -> bool:
        return any(isinstance(driver, AnyioDriver) for driver in self.drivers)

    def raise_runtime_failure(self, item: pytest.Item) -> None:
        """Raise the failure of a resource the test got, if one failed since."""
        resolver = item.stash.get(_RESOLVER, None)
        if resolver is not None:
            for slot in resolver.used:
                if slot.error is not None:
                    slot.raise_error()

    def close(self) -> None:
        """Give anyio's runner back; the other loops end with their scope nodes."""
        self.use_anyio_backend(None)

    # --- loops -----------------------------------------------------------------

    def driver_for(self, request: pytest.FixtureRequest) -> Driver:
        item = request.node
        assert isinstance(item, pytest.Function)
        if not inspect.iscoroutinefunction(item.obj):
            return self._portal_driver(item)
        if "anyio_backend" in item.fixturenames:
            backend = cast("object", request.getfixturevalue("anyio_backend"))
            return self._anyio_driver(backend)
        return self._asyncio_driver(request, item)

    def _portal_driver(self, item: pytest.Item) -> Driver:
        for driver in self.drivers:
            if isinstance(driver, PortalDriver):
                return driver
        driver = PortalDriver()
        self.drivers.append(driver)
        item.session.addfinalizer(lambda: raise_all(self.stop_driver(driver)))
        return driver

    def _anyio_driver(self, backend: object) -> Driver:
        self.use_anyio_backend(backend)  # one runner at a time
        for driver in self.drivers:
            if isinstance(driver, AnyioDriver):
                return driver
        driver = AnyioDriver(backend)
        self.drivers.append(driver)
        return driver

    def _asyncio_driver(
        self, request: pytest.FixtureRequest, item: pytest.Function
    ) -> Driver:
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
        runner = self._current_runner(request, f"_{loop_scope}_scoped_runner")
        for driver in self.drivers:
            if isinstance(driver, AsyncioDriver) and driver.runner is runner:
                return driver
        driver = AsyncioDriver(runner)
        self.drivers.append(driver)

        def stop() -> None:
            raise_all(self.stop_driver(driver))

        # The runner's fixture ends its loop: at the end of the loop scope, or
        # earlier when pytest-asyncio builds another loop (a new loop factory
        # or event loop policy). The layers stop first, on the loop they use.
        _, fixturedef = self._runners[f"_{loop_scope}_scoped_runner"]
        fixturedef.addfinalizer(stop)
        return driver

    def _current_runner(
        self, request: pytest.FixtureRequest, name: str
    ) -> AsyncioRunner:
        """Return pytest-asyncio's runner for this test: the one set up last.

        pytest ends a runner fixture when its scope node ends, or when the
        test's loop factory differs (pytest-asyncio asks for the factory
        first), so a runner still set up is this test's.
        """
        latest = self._runners.get(name)
        if latest is not None:
            runner, fixturedef = latest
            cached = fixturedef.cached_result
            if cached is not None and cached[0] is runner:
                return cast("AsyncioRunner", runner)
        # pytest-asyncio sets its runner up before the test's other fixtures;
        # a fixture that asks for a resource earlier still gets the right one.
        return cast("AsyncioRunner", request.getfixturevalue(name))  # pragma: no cover

    def stop_driver(self, driver: Driver) -> list[BaseException]:
        errors = self._stop_layers(
            [key for key, layer in self.layers.items() if layer.driver is driver]
        )
        self.drivers.remove(driver)
        driver.close()
        return errors

    # --- layers ----------------------------------------------------------------

    async def open_layer(self, key: _LayerKey, node: Node) -> _Layer:
        """Return the layer `key`, starting its host task on first use."""
        layer = self.layers.get(key)
        if layer is None:
            layer = self.layers[key] = _Layer(key[0], key[1])
            layer.host = await Host.spawn(layer.fail)
            node.addfinalizer(lambda: raise_all(self._stop_layers([key])))
        return layer

    def _stop_layers(self, keys: list[_LayerKey]) -> list[BaseException]:
        layers = [(key, self.layers[key]) for key in keys if key in self.layers]
        errors: list[BaseException] = []
        # Narrowest first, newest first: dependents stop before their dependencies.
        ordered = sorted(enumerate(layers), key=lambda e: (-e[1][1].level, -e[0]))
        for _, (key, layer) in ordered:
            del self.layers[key]
            layer.forget()
            host = layer.host
            assert host is not None
            errors.extend(layer.driver.run(host.stop))
        return errors


def _runs_on_anyio(item: pytest.Item) -> bool:
    return (
        isinstance(item, pytest.Function)
        and inspect.iscoroutinefunction(item.obj)
        and "anyio_backend" in item.fixturenames
    )


class Resolver:
    """One test's view: its overrides, its registry and its event loop."""

    def __init__(
        self,
        state: State,
        request: pytest.FixtureRequest,
        registry: Registry,
        fixture_overrides: Mapping[str, object],
    ) -> None:
        item = request.node
        assert isinstance(item, pytest.Item)
        self._state = state
        self._item = item
        replacements, self._override_levels = _overrides(item, fixture_overrides)
        self._base = registry
        if replacements:
            self._registry = registry.override(**replacements)
            self._levels: dict[str, int] = {}
        else:
            self._registry = registry
            self._levels = state.shared_levels(registry)
        self._nodes: dict[int, Node] = {}
        self.used: list[_Slot] = []
        # Ask for the loop now, so that pytest stops this test's fixture first.
        self._driver = state.driver_for(request)

    def value(self, name: str) -> object:
        """Return the value of resource `name` for this test, or raise its failure."""
        key = self._key(name)
        layer = self._state.layers.get(key)
        slot = None if layer is None else layer.slots.get(name)
        if slot is None:
            slot = self._start(name)
        self.used.append(slot)
        return slot.get()

    def _start(self, name: str) -> _Slot:
        # Failures come back in the slot, to be raised out of the loop's frames.
        return self._driver.run(lambda: self._resolve(name))

    async def _resolve(self, name: str) -> _Slot:
        key = self._key(name)
        layer = self._state.layers.get(key)
        slot = None if layer is None else layer.slots.get(name)
        if slot is not None:
            return slot
        dependencies: list[_Slot] = []
        for dependency in self._registry[name].dependencies:
            found = await self._resolve(dependency.resource_name)
            if found.error is not None:
                return found
            dependencies.append(found)
        layer = await self._state.open_layer(key, key[2])
        host = layer.host
        assert host is not None
        # In place before the start: a failure may be reported while it runs.
        slot = layer.slots[name] = _Slot(name, dependencies)
        for found in dependencies:
            found.dependents.append(slot)
        provided = {found.name: found.value for found in dependencies}
        lifespan = self._registry._open_resource(name, provided)  # pyright: ignore[reportPrivateUsage]
        try:
            slot.value = (await host.start(lifespan, name))[name]
        except Exception as exc:
            slot.fail(_prepared(exc))
        return slot

    def _key(self, name: str) -> _LayerKey:
        level = self._level(name)
        node = self._nodes.get(level)
        if node is None:
            node = self._nodes[level] = _scope_node(self._item, level)
        return (self._driver, level, node, self._base)

    def _level(self, name: str) -> int:
        level = self._levels.get(name)
        if level is None:
            settings = self._state.settings
            level = max(
                settings.scopes.get(name, settings.default_scope),
                self._override_levels.get(name, 0),
                self._state.registry_level(self._base),
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
    levels = dict.fromkeys(fixture_overrides, _FUNCTION)
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
        return _FUNCTION
    if isinstance(node, pytest.Class):
        return SCOPES.index("class")
    # A module's, or a package's (kept per module: a narrower, safe choice).
    return SCOPES.index("module")


def _scope_node(item: pytest.Item, level: int) -> Node:
    scope = SCOPES[level]
    node: Node | None = None
    if scope == "session":
        node = item.session
    elif scope == "package":
        node = item.getparent(pytest.Package) or item.session
    elif scope == "module":
        node = item.getparent(pytest.Module)
    elif scope == "class":
        node = item.getparent(pytest.Class) or item.getparent(pytest.Module)
    return node or item


def raise_all(errors: list[BaseException]) -> None:
    if len(errors) == 1:
        raise errors[0]
    if errors:
        message = f"{len(errors)} lifespan_kit resources failed to stop"
        raise BaseExceptionGroup(message, errors)


def _prepared(error: BaseException) -> BaseException:
    """Strip `error` of the machinery's frames, once, before it is reported.

    Its own frames are the library's (its message says everything); its
    cause's start in the library too, then reach the code the user wrote.
    """
    error.__traceback__ = None
    cause = error.__cause__
    if cause is not None:
        cause.__traceback__ = _user_frames(cause.__traceback__)
    return error


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    first = tb
    while first is not None and _is_library_frame(first):
        first = first.tb_next
    return first or tb


def _is_library_frame(tb: TracebackType) -> bool:
    module = cast("str", tb.tb_frame.f_globals.get("__name__", ""))
    return module.startswith(("lifespan_kit.", "anyio.", "contextlib"))
