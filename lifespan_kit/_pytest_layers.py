"""The pytest plugin's machinery: layers of resources, their host tasks, their loops.

`lifespan_kit.pytest_plugin` turns ini options and markers into calls here.

- A resource lives in a *layer*: one per scope node (the session, a module, a
  test...), event loop and registry. A resource's layer is the narrowest of its
  own scope, its dependencies' layers and the place an override of it was
  declared, so overriding ``db`` for one test restarts what depends on ``db``
  for that test only, and what only the replaced ``db`` needed never starts.
- Each layer enters its resources in one *host task* on the test's event loop,
  so setup and teardown may come from different tasks (pytest-asyncio does
  that) while the resources enter and exit in one.
- A layer stops, in reverse, when pytest tears its scope node down, or when the
  loop it runs on is about to end; its teardown errors are raised then, once.
- A *driver* runs coroutines on a test's loop from pytest's synchronous code:
  pytest-asyncio's runner, anyio's test runner (asyncio or trio), or a
  background loop for sync tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sys
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, Protocol, TypeVar, cast

import anyio
import anyio.from_thread
import pytest

from lifespan_kit._lifespan import Lifespan
from lifespan_kit._models import Bundle
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

T = TypeVar("T")

Scope = Literal["session", "package", "module", "class", "function"]
"""A pytest fixture scope: how long a resource fixture's value lives.

Example:
    ```python
    from lifespan_kit.pytest_plugin import Scope

    scope: Scope = "module"  # as in `lifespan_kit_scopes = db = module`
    ```
"""

SCOPES: Final[tuple[Scope, ...]] = (
    "session",
    "package",
    "module",
    "class",
    "function",
)
"""Every scope, widest first: a resource lives no longer than its dependencies.

Example:
    ```python
    from lifespan_kit.pytest_plugin import SCOPES

    assert SCOPES.index("session") < SCOPES.index("function")
    ```
"""

MARKER: Final = "lifespan_kit"
"""The marker that replaces resources for a test, a class or a module.

Example:
    ```python
    import pytest

    @pytest.mark.lifespan_kit(clock="fixed")
    def test_clock(clock: str) -> None:
        assert clock == "fixed"
    ```
"""


@dataclass(frozen=True)
class Settings:
    registry: Registry | None
    default_scope: int
    scopes: Mapping[str, int]
    prefix: str
    bundle: type[Bundle] | None


def scope_index(scope: str, where: str) -> int:
    if scope not in SCOPES:
        message = f"scope {scope!r} {where} is not one of {', '.join(SCOPES)}."
        raise pytest.UsageError(message)
    return SCOPES.index(scope)


class _Driver(Protocol):
    """Runs coroutines on one event loop from synchronous fixture code."""

    def run(self, func: Callable[[], Coroutine[object, object, T]]) -> T: ...

    def close(self) -> None: ...


@dataclass(eq=False)
class _Layer:
    """The resources of one scope node on one loop, entered by one host task."""

    driver: _Driver
    level: int
    host: Host
    values: dict[str, object] = field(default_factory=dict[str, object])
    failures: dict[str, BaseException] = field(default_factory=dict[str, BaseException])


_LayerKey = tuple["_Driver", int, "pytest.Item | pytest.Collector", Registry]
"""A layer's identity: its loop, its level, its scope node and its registry."""


class State:
    """What the plugin keeps for the whole run: loops and running layers.

    Layers and pytest-asyncio's loops end with their scope node, through the
    node's finalizers (which pytest runs before those of fixtures set up
    earlier, such as the loop's own runner). anyio's test runner is shared
    by all tests of a backend, so it is held until the next test needs
    another backend, or none.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.layers: dict[_LayerKey, _Layer] = {}
        self.drivers: list[_Driver] = []
        self.items: list[pytest.Item] = []
        self.positions: dict[pytest.Item, int] = {}

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
        node = _scope_node(item, scope_index(loop_scope, "of pytest-asyncio's loop"))
        return self._add_driver(_AsyncioDriver(runner), node)

    def _add_driver(
        self, driver: _Driver, node: pytest.Item | pytest.Collector | None
    ) -> _Driver:
        self.drivers.append(driver)
        if node is not None:
            node.addfinalizer(lambda: raise_all(self.stop_driver(driver)))
        return driver

    async def open_layer(
        self, key: _LayerKey, driver: _Driver, node: pytest.Item | pytest.Collector
    ) -> _Layer:
        """Return the layer `key`, starting its host task on first use."""
        layer = self.layers.get(key)
        if layer is None:
            layer = self.layers[key] = _Layer(driver, key[1], await Host.spawn())
            node.addfinalizer(lambda: raise_all(self._stop_layers([key])))
        return layer

    def next_running(self, next_item: pytest.Item | None) -> pytest.Item | None:
        """The next test that is not skipped by a plain ``skip`` marker."""
        index = None if next_item is None else self.positions.get(next_item)
        if index is None:
            return next_item
        for upcoming in self.items[index:]:
            if upcoming.get_closest_marker("skip") is None:
                return upcoming
        return None

    def release_anyio(self, next_item: pytest.Item | None) -> None:
        """Give anyio's runner back unless the next test is async on its backend.

        A sync test may start a loop of its own (`anyio.run`), which anyio
        refuses while its runner is held.
        """
        params = getattr(getattr(next_item, "callspec", None), "params", {})
        backend = cast("dict[str, object]", params).get("anyio_backend")
        if not inspect.iscoroutinefunction(getattr(next_item, "obj", None)):
            backend = None
        errors: list[BaseException] = []
        for driver in list(self.drivers):
            if isinstance(driver, _AnyioDriver) and driver.backend != backend:
                errors.extend(self.stop_driver(driver))
        raise_all(errors)

    def stop_driver(self, driver: _Driver) -> list[BaseException]:
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
        """Give anyio's runner back; the other loops end with their scope nodes."""
        self.release_anyio(None)


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
        key = (driver, level, node, self._base)
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


def raise_all(errors: list[BaseException]) -> None:
    if len(errors) == 1:
        raise errors[0]
    if errors:
        message = f"{len(errors)} lifespan_kit resources failed to stop"
        raise BaseExceptionGroup(message, errors)


# --- the host task -------------------------------------------------------------


class Reply:
    def __init__(self) -> None:
        self.done = anyio.Event()
        self.value: ResourceMap | None = None
        self.error: BaseException | None = None


class Host:
    """One task that enters a layer's lifespans and exits them, in reverse."""

    def __init__(
        self, send: MemoryObjectSendStream[tuple[Lifespan[ResourceMap], Reply]]
    ) -> None:
        self._send = send
        self._stopped = anyio.Event()
        self._errors: list[BaseException] = []

    @classmethod
    async def spawn(cls) -> Host:
        send, receive = anyio.create_memory_object_stream[
            "tuple[Lifespan[ResourceMap], Reply]"
        ](1)
        host = cls(send)
        _spawn_task(lambda: host._serve(receive))
        return host

    async def start(self, lifespan: Lifespan[ResourceMap]) -> ResourceMap:
        reply = Reply()
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
        requests: MemoryObjectReceiveStream[tuple[Lifespan[ResourceMap], Reply]],
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
