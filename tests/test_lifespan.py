"""Running a registry: ordering, concurrency, failures, cancellation, timeouts."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from types import TracebackType

import anyio
import anyio.lowlevel
import pytest

from lifespan_kit import Bundle, Lifespan, Registry, ResourceEvent
from lifespan_kit.errors import (
    AlreadyRunningError,
    BundleTypeError,
    DependencyTypeError,
    MultipleYieldError,
    NotRunningError,
    NoYieldError,
    ShutdownError,
    StartTimeoutError,
    StartupError,
    StopTimeoutError,
    UnknownResourceError,
)
from tests.fakes import Recorder

if sys.version_info < (3, 11):  # pragma: no cover  # the backport, on 3.10 only
    from exceptiongroup import ExceptionGroup


def is_running(lifespan: Lifespan[object]) -> bool:
    """Read the flag through a call, so type checkers do not narrow it."""
    return lifespan.is_running


def chain_registry(recorder: Recorder) -> Registry:
    """settings <- db <- repository, and cache <- settings."""
    registry = Registry()
    registry.add("settings", recorder.generator("settings"))
    registry.add("db", recorder.generator("db"), depends={"settings": "settings"})
    registry.add("cache", recorder.generator("cache"), depends={"settings": "settings"})
    registry.add("repository", recorder.generator("repository"), depends={"db": "db"})
    return registry


async def test_sequential_mode_starts_in_order_and_stops_in_reverse() -> None:
    """concurrency=1 starts in dependency order, ties as registered, then reverses."""
    recorder = Recorder()
    async with chain_registry(recorder).lifespan(concurrency=1):
        recorder.events.append("body")
    assert recorder.events == [
        "start settings",
        "start db",
        "start cache",
        "start repository",
        "body",
        "stop repository",
        "stop cache",
        "stop db",
        "stop settings",
    ]


async def test_concurrent_mode_respects_dependency_order(
    concurrency: int | None,
) -> None:
    """Every resource starts after its dependencies and stops before them."""
    recorder = Recorder()
    async with chain_registry(recorder).lifespan(concurrency=concurrency):
        pass
    events = recorder.events
    for before, after in [
        ("start settings", "start db"),
        ("start settings", "start cache"),
        ("start db", "start repository"),
        ("stop repository", "stop db"),
        ("stop db", "stop settings"),
        ("stop cache", "stop settings"),
    ]:
        assert events.index(before) < events.index(after), (before, after, events)


async def test_independent_resources_start_concurrently() -> None:
    """Two resources that each wait for the other to begin can both start."""
    first_began, second_began = anyio.Event(), anyio.Event()
    registry = Registry()

    async def first() -> AsyncIterator[str]:
        first_began.set()
        await second_began.wait()
        yield "first"

    async def second() -> AsyncIterator[str]:
        second_began.set()
        await first_began.wait()
        yield "second"

    registry.add("first", first)
    registry.add("second", second)
    with anyio.fail_after(5):
        async with registry.lifespan() as resources:
            assert dict(resources) == {"first": "first", "second": "second"}


async def test_concurrency_limit_bounds_starts_in_flight() -> None:
    """No more than `concurrency` starts run at the same moment."""
    in_flight = 0
    peak = 0
    registry = Registry()

    async def slow() -> AsyncIterator[None]:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await anyio.sleep(0.01)
        in_flight -= 1
        yield None

    for index in range(8):
        registry.add(f"r{index}", slow)
    async with registry.lifespan(concurrency=3):
        pass
    assert peak == 3


async def test_dependency_stops_after_all_dependents() -> None:
    """In a diamond, the shared dependency stops only after both dependents stopped."""
    recorder = Recorder()
    registry = Registry()
    registry.add("base", recorder.generator("base"))
    registry.add(
        "left", recorder.generator("left", stop_delay=0.02), depends={"base": "base"}
    )
    registry.add("right", recorder.generator("right"), depends={"base": "base"})
    registry.add(
        "top", recorder.generator("top"), depends={"left": "left", "right": "right"}
    )
    async with registry.lifespan():
        recorder.events.clear()
    assert recorder.events[0] == "stop top"
    assert recorder.events[-1] == "stop base"
    assert sorted(recorder.events[1:3]) == ["stop left", "stop right"]


async def test_resource_enters_and_exits_in_the_same_task(
    concurrency: int | None,
) -> None:
    """A resource's start and stop run in one task, in both modes."""
    recorder = Recorder()
    async with chain_registry(recorder).lifespan(concurrency=concurrency):
        pass
    for name, tasks in recorder.tasks.items():
        assert len(tasks) == 2, name
        assert tasks[0] == tasks[1], name


async def test_resource_holding_a_task_group_starts_and_stops(
    concurrency: int | None,
) -> None:
    """A resource may keep a task group open across its yield."""
    registry = Registry()
    ticks: list[int] = []

    async def worker() -> AsyncIterator[list[int]]:
        async def tick() -> None:
            while True:
                ticks.append(1)
                await anyio.sleep(0.001)

        async with anyio.create_task_group() as tg:
            tg.start_soon(tick)
            yield ticks
            tg.cancel_scope.cancel()

    registry.add("settings", 1)
    registry.add("worker", worker)
    async with registry.lifespan(concurrency=concurrency) as resources:
        await anyio.sleep(0.01)
        assert resources["worker"] is ticks
    count = len(ticks)
    await anyio.sleep(0.01)
    assert count > 0
    assert len(ticks) == count


async def test_resource_is_created_once_for_many_dependents() -> None:
    """A resource that many others depend on is created exactly once."""
    calls = 0
    registry = Registry()

    async def shared() -> AsyncIterator[object]:
        nonlocal calls
        calls += 1
        await anyio.lowlevel.checkpoint()
        yield object()

    registry.add("shared", shared)
    for index in range(10):
        registry.add(
            f"user{index}", lambda shared: shared, depends={"shared": "shared"}
        )
    async with registry.lifespan() as resources:
        assert len({id(resources[f"user{i}"]) for i in range(10)}) == 1
    assert calls == 1


@pytest.mark.parametrize(
    "kind",
    ["async_generator", "async_cm", "coroutine", "generator", "function", "value"],
)
async def test_every_factory_kind_provides_its_value(
    kind: str, concurrency: int | None
) -> None:
    """Each factory form yields its value; teardown runs where it has one."""
    events: list[str] = []
    registry = Registry()

    async def async_generator() -> AsyncIterator[str]:
        yield "value"
        events.append("teardown")

    class Client:
        async def __aenter__(self) -> str:
            return "value"

        async def __aexit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> None:
            events.append("teardown")

    async def coroutine() -> str:
        await anyio.lowlevel.checkpoint()
        return "value"

    def generator() -> Iterator[str]:
        yield "value"
        events.append("teardown")

    def function() -> str:
        return "value"

    factories: dict[str, object] = {
        "async_generator": async_generator,
        "async_cm": Client,
        "coroutine": coroutine,
        "generator": generator,
        "function": function,
        "value": "value",
    }
    registry.add("thing", factories[kind])
    async with registry.lifespan(concurrency=concurrency) as resources:
        assert resources["thing"] == "value"
    has_teardown = kind in {"async_generator", "async_cm", "generator"}
    assert events == (["teardown"] if has_teardown else [])


async def test_asynccontextmanager_factory_is_entered_and_exited() -> None:
    """An @asynccontextmanager function is an async context manager factory."""
    events: list[str] = []
    registry = Registry()

    @registry.resource
    @asynccontextmanager
    async def client() -> AsyncIterator[str]:
        events.append("enter")
        yield "client"
        events.append("exit")

    async with registry.lifespan() as resources:
        assert resources[client] == "client"
    assert events == ["enter", "exit"]


class Resources(Bundle):
    """Two of the chain's resources."""

    db: str
    cache: str


async def test_bundle_starts_only_what_its_fields_need(concurrency: int | None) -> None:
    """A bundle starts its fields' resources and their dependencies, nothing else."""
    recorder = Recorder()
    async with chain_registry(recorder).lifespan(
        Resources, concurrency=concurrency
    ) as resources:
        assert resources == Resources(db="db", cache="cache")
    assert sorted(e for e in recorder.events if e.startswith("start")) == [
        "start cache",
        "start db",
        "start settings",
    ]


async def test_bundle_field_alias_names_the_resource() -> None:
    """A field alias maps a differently named field to a resource."""
    from pydantic import Field

    class Aliased(Bundle):
        database: str = Field(alias="db")

    recorder = Recorder()
    async with chain_registry(recorder).lifespan(Aliased) as resources:
        assert resources.database == "db"


async def test_bundle_rejects_a_value_of_the_wrong_type(
    concurrency: int | None,
) -> None:
    """A value that fails its field's type stops everything and names the resource."""

    class Wrong(Bundle):
        db: int

    recorder = Recorder()
    with pytest.raises(
        BundleTypeError, match="field 'db' of Wrong expects int"
    ) as info:
        async with chain_registry(recorder).lifespan(Wrong, concurrency=concurrency):
            pytest.fail("the body must not run")  # pragma: no cover
    assert info.value.code == "bundle-type"
    assert info.value.resource_name == "db"
    assert info.value.found == "str"
    assert recorder.events == ["start settings", "start db", "stop db", "stop settings"]


async def test_partial_startup_failure_stops_what_started(
    concurrency: int | None,
) -> None:
    """When one resource fails to start, those already started are stopped."""
    recorder = Recorder()
    registry = Registry()
    registry.add("settings", recorder.generator("settings"))
    registry.add(
        "db",
        recorder.generator("db", fail_start=ConnectionRefusedError("refused")),
        depends={"settings": "settings"},
    )
    registry.add("api", recorder.generator("api"), depends={"db": "db"})

    class Api(Bundle):
        api: str

    with pytest.raises(
        StartupError, match="Resource 'db' failed during startup"
    ) as info:
        async with registry.lifespan(Api, concurrency=concurrency):
            pytest.fail("the body must not run")  # pragma: no cover
    error = info.value
    assert error.code == "startup-failed"
    assert error.resource_name == "db"
    assert error.dependency_path == ("api", "db")
    assert "dependency path: api -> db" in str(error)
    assert isinstance(error.__cause__, ConnectionRefusedError)
    assert recorder.events == ["start settings", "start db", "stop settings"]


async def test_bare_yield_teardown_runs_after_a_sibling_fails(
    concurrency: int | None,
) -> None:
    """A sibling's failure is never thrown in: code after a bare yield runs."""
    events: list[str] = []
    registry = Registry()

    async def pool() -> AsyncIterator[str]:
        events.append("open pool")
        yield "pool"
        events.append("close pool")

    async def broken(pool: str) -> AsyncIterator[str]:
        raise RuntimeError("boom")
        yield "never"  # type: ignore[unreachable]  # pragma: no cover

    registry.add("pool", pool)
    registry.add("broken", broken)
    with pytest.raises(StartupError):
        async with registry.lifespan(concurrency=concurrency):
            pass  # pragma: no cover
    assert events == ["open pool", "close pool"]


async def test_body_exception_propagates_unchanged_and_resources_exit_cleanly(
    concurrency: int | None,
) -> None:
    """The body's exception reaches the caller as is, and no resource receives it."""
    events: list[str] = []
    registry = Registry()

    async def pool() -> AsyncIterator[str]:
        yield "pool"
        events.append("close pool")

    registry.add("pool", pool)
    error = KeyError("from the body")
    with pytest.raises(KeyError) as info:
        async with registry.lifespan(concurrency=concurrency):
            raise error
    assert info.value is error
    assert events == ["close pool"]


async def test_failing_teardowns_do_not_stop_the_others(
    concurrency: int | None,
) -> None:
    """Every teardown runs even when some raise, and all failures are reported."""
    recorder = Recorder()
    registry = Registry()
    registry.add("a", recorder.generator("a", fail_stop=OSError("a broke")))
    registry.add("b", recorder.generator("b"), depends={"a": "a"})
    registry.add("c", recorder.generator("c", fail_stop=ValueError("c broke")))
    with pytest.raises(ExceptionGroup) as info:
        async with registry.lifespan(concurrency=concurrency):
            pass
    errors = info.value.exceptions
    assert all(isinstance(e, ShutdownError) for e in errors)
    names = sorted(
        e.resource_name or "" for e in errors if isinstance(e, ShutdownError)
    )
    assert names == ["a", "c"]
    assert {type(e.__cause__) for e in errors} == {OSError, ValueError}
    assert sorted(recorder.events[-3:]) == ["stop a", "stop b", "stop c"]


async def test_teardown_failure_after_body_error_is_noted_on_it(
    concurrency: int | None,
) -> None:
    """When the body raised, teardown failures are added as notes, not swallowed."""
    recorder = Recorder()
    registry = Registry()
    registry.add("a", recorder.generator("a", fail_stop=OSError("a broke")))
    with pytest.raises(KeyError) as info:
        async with registry.lifespan(concurrency=concurrency):
            raise KeyError("body")
    notes = getattr(info.value, "__notes__", [])
    assert notes[0] == "1 resource(s) failed during shutdown: 'a'."
    assert "Resource 'a' failed during shutdown." in notes[1]


async def test_hanging_teardown_is_cut_by_stop_timeout(concurrency: int | None) -> None:
    """A teardown that hangs is cancelled at its stop_timeout; the others still run."""
    recorder = Recorder()
    registry = Registry()
    registry.add("base", recorder.generator("base"))
    registry.add(
        "hangs",
        recorder.generator("hangs", stop_delay=math.inf),
        depends={"base": "base"},
        stop_timeout=0.05,
    )
    with anyio.fail_after(5), pytest.raises(ExceptionGroup) as info:
        async with registry.lifespan(concurrency=concurrency):
            pass
    (error,) = info.value.exceptions
    assert isinstance(error, StopTimeoutError)
    assert error.resource_name == "hangs"
    assert error.code == "stop-timeout"
    assert error.elapsed >= 0.05
    assert recorder.events[-1] == "stop base"


async def test_start_timeout_names_the_resource_and_elapsed_time(
    concurrency: int | None,
) -> None:
    """A start past start_timeout fails naming the resource and the time it ran."""
    recorder = Recorder()
    registry = Registry()
    registry.add("fine", recorder.generator("fine"))
    registry.add(
        "slow",
        recorder.generator("slow", delay=math.inf),
        depends={"fine": "fine"},
        start_timeout=0.05,
    )
    with anyio.fail_after(5), pytest.raises(StartTimeoutError) as info:
        async with registry.lifespan(concurrency=concurrency):
            pass  # pragma: no cover
    error = info.value
    assert error.resource_name == "slow"
    assert error.code == "start-timeout"
    assert error.timeout == 0.05
    assert error.elapsed >= 0.05
    assert "was still starting after" in str(error)
    assert recorder.events == ["start fine", "start slow", "stop fine"]


async def test_registry_default_start_timeout_applies() -> None:
    """A registry-wide start_timeout bounds resources without their own."""
    recorder = Recorder()
    registry = Registry(start_timeout=0.05)
    registry.add("slow", recorder.generator("slow", delay=math.inf))
    with anyio.fail_after(5), pytest.raises(StartTimeoutError):
        async with registry.lifespan():
            pass  # pragma: no cover


async def test_blocking_sync_factory_fails_with_a_start_timeout() -> None:
    """A synchronous factory that blocks past start_timeout is reported as blocking."""
    registry = Registry()
    closed: list[str] = []

    def blocking() -> Iterator[str]:
        time.sleep(0.06)
        yield "value"
        closed.append("closed")

    registry.add("blocking", blocking, start_timeout=0.01)
    with pytest.raises(StartTimeoutError, match="blocked the event loop") as info:
        async with registry.lifespan():
            pass  # pragma: no cover
    assert info.value.blocked
    assert "anyio.to_thread.run_sync" in str(info.value)
    assert closed == ["closed"]


async def test_blocking_factory_teardown_failure_is_logged_and_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """If a blocking factory's immediate teardown fails, it is logged and raised."""
    registry = Registry()

    def blocking() -> Iterator[str]:
        time.sleep(0.03)
        yield "value"
        raise OSError("close failed")

    registry.add("blocking", blocking, start_timeout=0.01)
    with (
        caplog.at_level(logging.WARNING, logger="lifespan_kit"),
        pytest.raises(ExceptionGroup, match="1 failed to stop") as info,
    ):
        async with registry.lifespan():
            pass  # pragma: no cover
    timeout, stop = info.value.exceptions
    assert isinstance(timeout, StartTimeoutError)
    assert timeout.blocked
    assert isinstance(stop, ShutdownError)
    assert stop.resource_name == "blocking"
    assert "Resource 'blocking' failed during shutdown." in caplog.text


async def test_caller_cancelled_during_body_still_tears_down(
    concurrency: int | None,
) -> None:
    """Cancelling the caller runs every teardown, shielded, even ones that await."""
    recorder = Recorder()
    registry = Registry()
    registry.add("db", recorder.generator("db", stop_delay=0.01))
    registry.add(
        "api", recorder.generator("api", stop_delay=0.01), depends={"db": "db"}
    )
    with anyio.move_on_after(5) as outer:
        async with registry.lifespan(concurrency=concurrency):
            outer.cancel()
            await anyio.sleep_forever()
    assert outer.cancelled_caught
    assert recorder.events == ["start db", "start api", "stop api", "stop db"]


async def test_caller_cancelled_during_startup_stops_what_started(
    concurrency: int | None,
) -> None:
    """Cancelling the caller mid-startup stops what started and aborts the rest."""
    recorder = Recorder()
    started = anyio.Event()
    registry = Registry()
    registry.add("db", recorder.generator("db"))

    async def slow(db: str) -> AsyncIterator[str]:
        recorder.record("start", "slow")
        started.set()
        await anyio.sleep_forever()
        yield "never"  # pragma: no cover

    registry.add("slow", slow)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                async with registry.lifespan(concurrency=concurrency):
                    pytest.fail("the body must not run")  # pragma: no cover

            tg.start_soon(run)
            await started.wait()
            tg.cancel_scope.cancel()
    assert recorder.events == ["start db", "start slow", "stop db"]


async def test_sibling_failure_aborts_starts_in_flight() -> None:
    """In the concurrent mode a failure cancels the other starts still running."""
    recorder = Recorder()
    registry = Registry()
    registry.add("slow", recorder.generator("slow", delay=math.inf))
    registry.add("bad", recorder.generator("bad", delay=0.01, fail_start=OSError("x")))
    with anyio.fail_after(5), pytest.raises(StartupError) as info:
        async with registry.lifespan():
            pass  # pragma: no cover
    assert info.value.resource_name == "bad"
    assert sorted(recorder.events) == ["start bad", "start slow"]


async def test_every_failed_start_is_reported_in_a_group() -> None:
    """A start that fails while being aborted is reported beside the first failure."""
    registry = Registry()
    began = anyio.Event()

    async def first() -> AsyncIterator[None]:
        await began.wait()
        raise OSError("down")
        yield  # type: ignore[unreachable]  # pragma: no cover

    async def second() -> AsyncIterator[None]:
        began.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            raise RuntimeError("cleanup after abort failed") from None
        yield  # pragma: no cover

    registry.add("first", first)
    registry.add("second", second)
    with anyio.fail_after(5), pytest.raises(ExceptionGroup) as info:
        async with registry.lifespan():
            pass  # pragma: no cover
    errors = info.value.exceptions
    assert [getattr(e, "resource_name", None) for e in errors] == ["first", "second"]
    assert [type(e.__cause__) for e in errors] == [OSError, RuntimeError]
    assert "2 resource(s) failed to start" in str(info.value)


@pytest.mark.parametrize("is_async", [True, False], ids=["async", "sync"])
async def test_generator_that_does_not_yield_fails_startup(
    is_async: bool, concurrency: int | None
) -> None:
    """A generator factory that returns without yielding is a NoYieldError."""
    registry = Registry()

    async def empty() -> AsyncIterator[None]:
        return
        yield  # pragma: no cover

    def sync_empty() -> Iterator[None]:
        return
        yield  # pragma: no cover

    registry.add("empty", empty if is_async else sync_empty)
    with pytest.raises(NoYieldError, match="returned without yielding") as info:
        async with registry.lifespan(concurrency=concurrency):
            pass  # pragma: no cover
    assert info.value.code == "no-yield"
    assert info.value.resource_name == "empty"


async def test_function_returning_an_empty_async_generator_fails_startup(
    concurrency: int | None,
) -> None:
    """A plain function whose async generator returns without yielding fails too."""
    registry = Registry()

    async def empty() -> AsyncIterator[None]:
        return
        yield  # pragma: no cover

    def make() -> AsyncIterator[None]:
        return empty()

    registry.add("empty", make)
    with pytest.raises(NoYieldError, match="returned without yielding") as info:
        async with registry.lifespan(concurrency=concurrency):
            pass  # pragma: no cover
    assert info.value.resource_name == "empty"


@pytest.mark.parametrize("is_async", [True, False], ids=["async", "sync"])
async def test_generator_that_yields_twice_is_closed_and_reported(
    is_async: bool,
) -> None:
    """A generator that yields again is closed there and reported at shutdown."""
    events: list[str] = []
    registry = Registry()

    async def twice() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:
            events.append("closed")

    def sync_twice() -> Iterator[int]:
        try:
            yield 1
            yield 2
        finally:
            events.append("closed")

    registry.add("twice", twice if is_async else sync_twice)
    with pytest.raises(ExceptionGroup) as info:
        async with registry.lifespan():
            pass
    (error,) = info.value.exceptions
    assert isinstance(error, MultipleYieldError)
    assert error.code == "multiple-yields"
    assert events == ["closed"]


async def test_plain_function_returning_a_coroutine_is_awaited() -> None:
    """A wrapper that returns a coroutine (a decorated async function) is awaited."""
    registry = Registry()

    async def real() -> int:
        await anyio.lowlevel.checkpoint()
        return 1

    registry.add("wrapped", lambda: real())
    async with registry.lifespan() as resources:
        assert resources["wrapped"] == 1


async def test_plain_function_returning_generators_is_driven(
    concurrency: int | None,
) -> None:
    """Wrappers returning a generator or an async generator run them as resources."""
    events: list[str] = []
    registry = Registry()

    def sync_gen() -> Iterator[str]:
        yield "sync"
        events.append("sync closed")

    async def async_gen() -> AsyncIterator[str]:
        yield "async"
        events.append("async closed")

    registry.add("sync", lambda: sync_gen())
    registry.add("async_", lambda: async_gen())
    async with registry.lifespan(concurrency=concurrency) as resources:
        assert (resources["sync"], resources["async_"]) == ("sync", "async")
    assert sorted(events) == ["async closed", "sync closed"]


async def test_error_from_another_registry_inside_a_factory_is_wrapped() -> None:
    """A lifespan_kit error raised by user code is the cause, not the startup error."""
    other = Registry()
    registry = Registry()

    def lookup() -> object:
        return other["missing"]

    registry.add("lookup", lookup)
    with pytest.raises(StartupError) as info:
        async with registry.lifespan():
            pass  # pragma: no cover
    assert info.value.resource_name == "lookup"
    assert isinstance(info.value.__cause__, UnknownResourceError)


async def test_aliased_bundle_field_with_a_wrong_value_is_named() -> None:
    """A type error on an aliased field names the resource and stops everything."""
    from pydantic import Field

    class Aliased(Bundle):
        database: int = Field(alias="db")

    recorder = Recorder()
    with pytest.raises(BundleTypeError) as info:
        async with chain_registry(recorder).lifespan(Aliased):
            pass  # pragma: no cover
    assert info.value.resource_name == "db"
    assert recorder.events == ["start settings", "start db", "stop db", "stop settings"]


async def test_generic_annotations_are_not_checked() -> None:
    """Parameterised generics such as dict[str, str] only document the type."""
    registry = Registry()
    registry.add("headers", {"a": "b"})

    def client(headers: dict[str, str]) -> str:
        return headers["a"]

    registry.add("client", client)
    async with registry.lifespan() as resources:
        assert resources["client"] == "b"


async def test_dependency_with_the_wrong_type_is_named() -> None:
    """A dependency whose value does not match the annotation fails startup."""
    registry = Registry()
    registry.add("port", "8080")

    def server(port: int) -> str:
        return f"server on {port}"  # pragma: no cover

    registry.add("server", server)
    events: list[ResourceEvent] = []
    with pytest.raises(DependencyTypeError) as info:
        async with registry.lifespan(listeners=[events.append]):
            pass  # pragma: no cover
    error = info.value
    assert (error.resource_name, error.parameter, error.dependency_name) == (
        "server",
        "port",
        "port",
    )
    assert (error.expected, error.found) == ("int", "str")
    assert error.dependency_path == ("server",)
    assert [e.kind for e in events if e.resource_name == "server"] == [
        "starting",
        "start_failed",
    ]


async def test_dependency_type_error_without_listeners() -> None:
    """The type check fails startup the same way when nobody listens to events."""
    registry = Registry()
    registry.add("port", "8080")

    def server(port: int) -> str:
        return f"server on {port}"  # pragma: no cover

    registry.add("server", server)
    with pytest.raises(DependencyTypeError, match="expects parameter 'port' to be int"):
        async with registry.lifespan():
            pass  # pragma: no cover


async def test_int_satisfies_a_float_annotation() -> None:
    """The numeric tower applies: an int value fits a float parameter."""
    registry = Registry()
    registry.add("ratio", 2)

    def scaled(ratio: float) -> float:
        return ratio * 1.5

    registry.add("scaled", scaled)
    async with registry.lifespan() as resources:
        assert resources["scaled"] == 3.0


async def test_lifespan_cannot_be_entered_twice_at_once() -> None:
    """Entering a running lifespan again is an AlreadyRunningError."""
    lifespan = Registry().lifespan()
    async with lifespan:
        with pytest.raises(AlreadyRunningError, match="already running"):
            await lifespan.__aenter__()


async def test_lifespan_can_run_again_after_exit(concurrency: int | None) -> None:
    """A lifespan that exited can be entered again and starts fresh."""
    recorder = Recorder()
    registry = Registry()
    registry.add("db", recorder.generator("db"))
    lifespan = registry.lifespan(concurrency=concurrency)
    for _ in range(2):
        async with lifespan as resources:
            assert resources["db"] == "db"
    assert recorder.events == ["start db", "stop db"] * 2


async def test_use_after_exit_is_a_not_running_error() -> None:
    """Live views of a lifespan refuse to work once it has exited."""
    registry = Registry()
    registry.add("db", 1)
    lifespan = registry.lifespan()
    with pytest.raises(NotRunningError, match="read the startup report"):
        _ = lifespan.report
    async with lifespan:
        assert is_running(lifespan)
        assert lifespan.resources["db"] == 1
    assert not is_running(lifespan)
    with pytest.raises(NotRunningError, match="check health") as info:
        await lifespan.health()
    assert info.value.code == "not-running"
    with pytest.raises(NotRunningError, match="read the resources"):
        _ = lifespan.resources
    with pytest.raises(NotRunningError):
        await lifespan.__aexit__(None, None, None)


async def test_startup_report_gives_timings_and_critical_path() -> None:
    """The report lists each resource's timing and the chain that set the total."""
    recorder = Recorder()
    registry = Registry()
    registry.add("settings", recorder.generator("settings"))
    registry.add(
        "db", recorder.generator("db", delay=0.03), depends={"settings": "settings"}
    )
    registry.add("cache", recorder.generator("cache"), depends={"settings": "settings"})
    lifespan = registry.lifespan()
    async with lifespan:
        report = lifespan.report
    assert report.critical_path == ("settings", "db")
    assert list(report.timings) == ["settings", "db", "cache"]
    assert report.timings["db"].duration >= 0.03
    assert report.total >= report.timings["db"].ended - 1e-9
    text = str(report)
    assert "critical path: settings -> db" in text
    assert text.splitlines()[0].split() == ["resource", "began", "duration"]


async def test_report_after_a_failed_start_covers_what_started() -> None:
    """After a failed start the report holds only the resources that started."""
    recorder = Recorder()
    registry = Registry()
    registry.add("ok", recorder.generator("ok"))
    registry.add(
        "bad", recorder.generator("bad", fail_start=OSError()), depends={"ok": "ok"}
    )
    lifespan = registry.lifespan(concurrency=1)
    with pytest.raises(StartupError, match="cause: OSError"):
        async with lifespan:
            pass  # pragma: no cover
    assert list(lifespan.report.timings) == ["ok"]


async def test_empty_registry_runs_and_reports_nothing(concurrency: int | None) -> None:
    """A lifespan with no resources starts, yields an empty map and stops."""
    lifespan = Registry().lifespan(concurrency=concurrency)
    async with lifespan as resources:
        assert dict(resources) == {}
    assert lifespan.report.critical_path == ()
    assert "(none)" in str(lifespan.report)


async def test_health_reports_each_checked_resource() -> None:
    """health() runs each check and reports healthy, raising, False and slow checks."""
    registry = Registry(health_timeout=0.05)

    async def healthy(value: object) -> None:
        await anyio.lowlevel.checkpoint()

    def raises(value: object) -> None:
        raise ConnectionError("gone")

    async def hangs(value: object) -> None:
        await anyio.sleep_forever()

    registry.add("ok", 1, health=healthy)
    registry.add("broken", 2, health=raises)
    registry.add("false", 3, health=lambda value: False)
    registry.add("slow", 4, health=hangs)
    registry.add("unchecked", 5)
    lifespan = registry.lifespan()
    async with lifespan:
        report = await lifespan.health()
    assert not report.is_healthy
    assert list(report.resources) == ["ok", "broken", "false", "slow"]
    assert report.resources["ok"].status == "healthy"
    assert report.resources["broken"].error == "ConnectionError: gone"
    assert report.resources["false"].error == "the check returned False"
    assert report.resources["slow"].error == (
        "the check did not finish within 0.05s (health_timeout)"
    )


async def test_health_of_all_healthy_resources_is_healthy() -> None:
    """A report whose every check passed is healthy and serialises to JSON."""
    registry = Registry()
    registry.add("ok", 1, health=lambda value: value == 1)
    lifespan = registry.lifespan()
    async with lifespan:
        report = await lifespan.health()
    assert report.is_healthy
    assert '"status":"healthy"' in report.model_dump_json()


async def test_listeners_hear_every_start_and_stop(concurrency: int | None) -> None:
    """Registry and lifespan listeners receive each event in order."""
    heard: list[str] = []
    extra: list[ResourceEvent] = []
    registry = Registry()
    registry.add_listener(lambda e: heard.append(f"{e.kind} {e.resource_name}"))
    registry.add("db", Recorder().generator("db"))
    async with registry.lifespan(concurrency=concurrency, listeners=[extra.append]):
        pass
    assert heard == ["starting db", "started db", "stopping db", "stopped db"]
    assert [e.kind for e in extra] == ["starting", "started", "stopping", "stopped"]
    assert extra[1].duration is not None


async def test_failing_listener_is_logged_and_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A listener that raises is logged; the lifespan carries on."""

    def broken(event: ResourceEvent) -> None:
        raise RuntimeError("listener bug")

    registry = Registry()
    registry.add_listener(broken)
    registry.add("db", Recorder().generator("db"))
    with caplog.at_level(logging.ERROR, logger="lifespan_kit"):
        async with registry.lifespan() as resources:
            assert resources["db"] == "db"
    assert "failed on starting of resource 'db'" in caplog.text


async def test_failure_events_carry_the_error() -> None:
    """start_failed and stop_failed events carry the failure."""
    events: list[ResourceEvent] = []
    registry = Registry()
    registry.add("bad_stop", Recorder().generator("bad_stop", fail_stop=OSError()))
    registry.add("bad_start", Recorder().generator("bad_start", fail_start=OSError()))
    with pytest.raises(ExceptionGroup):
        async with registry.lifespan(concurrency=1, listeners=[events.append]):
            pass  # pragma: no cover
    failed = {e.kind: e for e in events if e.kind.endswith("failed")}
    assert isinstance(failed["start_failed"].error, StartupError)
    assert isinstance(failed["stop_failed"].error, ShutdownError)


async def test_listeners_see_the_cause_of_a_failed_start() -> None:
    """A start_failed event's error already carries its cause when listeners run."""
    causes: list[object] = []

    def listener(event: ResourceEvent) -> None:
        if event.error is not None:
            causes.append(event.error.__cause__)

    registry = Registry()
    registry.add("bad", Recorder().generator("bad", fail_start=OSError("down")))
    with pytest.raises(StartupError):
        async with registry.lifespan(listeners=[listener]):
            pass  # pragma: no cover
    assert [type(c) for c in causes] == [OSError]


async def test_debug_log_has_one_line_per_start_and_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The lifespan_kit logger records each start and stop with its duration."""
    registry = Registry()
    registry.add("db", Recorder().generator("db"))
    with caplog.at_level(logging.DEBUG, logger="lifespan_kit"):
        async with registry.lifespan():
            pass
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "Resource 'db' starting."
    assert messages[1].startswith("Resource 'db' started in ")
    assert messages[3].startswith("Resource 'db' stopped in ")
    assert caplog.records[1].lifespan_kit_resource == "db"  # type: ignore[attr-defined]


async def test_log_lines_say_failed_starts_in_words(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failed start and a start cancelled by it read as words, not event names."""
    registry = Registry()
    waiting = anyio.Event()

    async def patient() -> None:
        waiting.set()
        await anyio.sleep_forever()

    async def broken() -> None:
        await waiting.wait()
        raise OSError("down")

    registry.add("patient", patient)
    registry.add("broken", broken)
    with (
        caplog.at_level(logging.DEBUG, logger="lifespan_kit"),
        pytest.raises(StartupError),
    ):
        async with registry.lifespan():
            pass  # pragma: no cover
    assert [r.getMessage() for r in caplog.records][2:] == [
        "Resource 'broken' failed to start.",
        "Resource 'patient' cancelled while starting.",
    ]


async def test_log_lines_say_failures_after_startup_in_words(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failure while running and a failed teardown read as words."""
    registry = Registry()
    registry.add("db", Recorder().generator("db", fail_stop=OSError("x")))

    @registry.background
    async def consumer() -> None:
        raise ValueError("queue gone")

    lifespan = registry.lifespan()
    with (
        caplog.at_level(logging.DEBUG, logger="lifespan_kit"),
        pytest.raises(ExceptionGroup),
    ):
        async with lifespan:
            await lifespan.wait_failed()
    messages = [r.getMessage() for r in caplog.records]
    assert "Resource 'consumer' failed while running." in messages
    assert any(m.startswith("Resource 'db' failed to stop after ") for m in messages)


async def test_teardown_failure_is_logged_as_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failing teardown is logged at WARNING as well as raised."""
    registry = Registry()
    registry.add("db", Recorder().generator("db", fail_stop=OSError("x")))
    with (
        caplog.at_level(logging.WARNING, logger="lifespan_kit"),
        pytest.raises(ExceptionGroup),
    ):
        async with registry.lifespan():
            pass
    assert "Resource 'db' failed during shutdown." in caplog.text


async def test_lifespan_dropped_while_running_warns() -> None:
    """Garbage-collecting a lifespan that was never exited emits a ResourceWarning."""
    registry = Registry()
    registry.add("db", "a plain value holds no cancel scope open")
    lifespan = registry.lifespan(concurrency=1)
    await lifespan.__aenter__()
    with pytest.warns(ResourceWarning, match="never stopped"):
        del lifespan


async def test_lifespan_repr_shows_state_and_resources() -> None:
    """The repr names the state and the resources."""
    registry = Registry()
    registry.add("db", 1)
    lifespan = registry.lifespan()
    assert repr(lifespan) == "<Lifespan idle resources=['db']>"
    assert lifespan.resource_names == ("db",)


async def test_unlimited_start_timeout_sets_no_deadline() -> None:
    """math.inf as start_timeout lets a start take as long as it needs."""
    registry = Registry(start_timeout=math.inf)
    registry.add("slow", Recorder().generator("slow", delay=0.01))
    async with registry.lifespan() as resources:
        assert resources["slow"] == "slow"


async def test_callable_returning_any_awaitable_is_awaited() -> None:
    """A plain function returning an awaitable object has it awaited."""

    class Ready:
        def __await__(self) -> Iterator[None]:
            return iter(())

    registry = Registry()
    registry.add("ready", Ready)
    async with registry.lifespan() as resources:
        assert resources["ready"] is None


class Interrupt(BaseException):
    """Stands in for KeyboardInterrupt inside a teardown."""


async def test_base_exception_in_teardown_propagates_after_the_rest(
    concurrency: int | None,
) -> None:
    """A non-Exception raised by a teardown is not turned into a ShutdownError."""
    recorder = Recorder()
    registry = Registry()
    registry.add("first", recorder.generator("first"))
    registry.add(
        "second",
        recorder.generator("second", fail_stop=Interrupt()),
        depends={"first": "first"},
    )
    with pytest.raises(Interrupt):
        async with registry.lifespan(concurrency=concurrency):
            pass
    assert recorder.events[-2:] == ["stop second", "stop first"]


async def test_teardown_failure_during_cancellation_is_logged(
    caplog: pytest.LogCaptureFixture, concurrency: int | None
) -> None:
    """When the caller is cancelled, teardown failures are logged, not lost."""
    registry = Registry()
    registry.add("db", Recorder().generator("db", fail_stop=OSError("x")))
    with caplog.at_level(logging.WARNING, logger="lifespan_kit"):
        with anyio.move_on_after(5) as outer:
            async with registry.lifespan(concurrency=concurrency):
                outer.cancel()
                await anyio.sleep_forever()
    assert outer.cancelled_caught
    assert "Resource 'db' failed during shutdown." in caplog.text


async def test_cancellation_while_aborting_a_failed_start_logs_the_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A caller cancelled while a failed startup unwinds still logs the failure."""
    aborting, release = anyio.Event(), anyio.Event()
    registry = Registry()

    async def slow_to_abort() -> AsyncIterator[None]:
        try:
            await anyio.sleep_forever()
        finally:
            aborting.set()
            with anyio.CancelScope(shield=True):
                await release.wait()
        yield  # pragma: no cover

    registry.add("slow", slow_to_abort)
    registry.add("bad", Recorder().generator("bad", delay=0.01, fail_start=OSError()))
    with caplog.at_level(logging.WARNING, logger="lifespan_kit"), anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                async with registry.lifespan():
                    pass  # pragma: no cover

            tg.start_soon(run)
            await aborting.wait()
            tg.cancel_scope.cancel()
            release.set()
    assert "Resource 'bad' failed during startup." in caplog.text


async def test_starts_not_yet_begun_are_skipped_after_a_failure(
    anyio_backend: str,
) -> None:
    """After a failure, resources whose start has not begun are never started."""
    recorder = Recorder()
    registry = Registry()
    registry.add("bad", recorder.generator("bad", fail_start=OSError()))
    for index in range(5):
        registry.add(f"later{index}", recorder.generator(f"later{index}"))
    with pytest.raises(StartupError):
        async with registry.lifespan():
            pass  # pragma: no cover
    started = {e.split()[1] for e in recorder.events if e.startswith("start")}
    stopped = {e.split()[1] for e in recorder.events if e.startswith("stop")}
    assert stopped == started - {"bad"}
    if anyio_backend == "asyncio":
        # asyncio runs new tasks in spawn order, so none of the others began;
        # trio shuffles its run queue, so some may have started (and stopped).
        assert started == {"bad"}


async def test_shared_dependency_waits_for_a_dependent_in_another_task() -> None:
    """A dependency hosted with one dependent still waits for a slower second one."""
    recorder = Recorder()
    registry = Registry()
    registry.add("base", recorder.generator("base", delay=0.01))
    registry.add(
        "quick", recorder.generator("quick", delay=0.01), depends={"base": "base"}
    )
    registry.add(
        "slow", recorder.generator("slow", stop_delay=0.05), depends={"base": "base"}
    )
    async with registry.lifespan():
        recorder.events.clear()
    assert sorted(recorder.events[:2]) == ["stop quick", "stop slow"]
    assert recorder.events[2] == "stop base"
    assert recorder.tasks["base"][:2] == recorder.tasks["quick"][:2]
    assert recorder.tasks["slow"][0] != recorder.tasks["base"][0]


async def test_start_that_swallows_its_timeout_is_reported(
    concurrency: int | None,
) -> None:
    """A start that catches its cancellation and returns late is a timeout, undone."""
    events: list[str] = []
    registry = Registry()

    async def stubborn() -> AsyncIterator[str]:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            pass
        yield "late"
        events.append("undone")

    registry.add("stubborn", stubborn, start_timeout=0.02)
    with anyio.fail_after(5), pytest.raises(StartTimeoutError) as info:
        async with registry.lifespan(concurrency=concurrency):
            pass  # pragma: no cover
    assert not info.value.blocked
    assert events == ["undone"]


async def test_teardown_that_swallows_its_timeout_is_reported(
    concurrency: int | None,
) -> None:
    """A teardown that catches its cancellation and returns is still a timeout."""
    registry = Registry()

    async def stubborn() -> AsyncIterator[str]:
        yield "value"
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            pass

    registry.add("stubborn", stubborn, stop_timeout=0.02)
    with anyio.fail_after(5), pytest.raises(ExceptionGroup) as info:
        async with registry.lifespan(concurrency=concurrency):
            pass
    (error,) = info.value.exceptions
    assert isinstance(error, StopTimeoutError)
    assert error.resource_name == "stubborn"


def test_start_overrun_follows_the_event_loop_clock() -> None:
    """Under a virtual clock, wall time spent in a start is not an overrun."""
    mock_clock = pytest.importorskip("trio.testing").MockClock

    registry = Registry()

    def slow_but_virtual() -> str:
        time.sleep(0.03)  # no virtual time passes
        return "ready"

    registry.add("thing", slow_but_virtual, start_timeout=0.02)

    async def main() -> object:
        async with registry.lifespan() as resources:
            return resources["thing"]

    result = anyio.run(
        main,
        backend="trio",
        backend_options={"clock": mock_clock(autojump_threshold=0)},
    )
    assert result == "ready"
