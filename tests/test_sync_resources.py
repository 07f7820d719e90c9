"""Sync resources: context managers entered with `with`, and ``thread=True``."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import logging
import math
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import anyio
import pytest

from lifespan_kit import Registry
from lifespan_kit._sync import Entered, ResourceThread
from lifespan_kit.errors import (
    InvalidOptionError,
    MultipleYieldError,
    NoYieldError,
    ShutdownError,
    StartTimeoutError,
    StartupError,
    StopTimeoutError,
)
from tests.fakes import Recorder

if sys.version_info < (3, 11):  # pragma: no cover  # the backport, on 3.10 only
    from exceptiongroup import ExceptionGroup

THREAD_PARAMS = [
    pytest.param(False, id="on-loop"),
    pytest.param(True, id="thread"),
]


class Log:
    """Records events, and the thread each one ran in; safe from any thread."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.threads: dict[str, int] = {}

    def record(self, event: str) -> None:
        self.events.append(event)
        self.threads[event] = threading.get_ident()


def resource_threads() -> list[threading.Thread]:
    """Return the threads that resources registered with thread=True still run."""
    return [
        thread
        for thread in threading.enumerate()
        if thread.name.startswith("lifespan_kit resource ")
    ]


def join_resource_thread(resource_name: str) -> None:
    """Wait (bounded) for the thread of `resource_name` to end, if it still runs."""
    name = f"lifespan_kit resource '{resource_name}'"
    # The thread may already have ended: join whichever of them still runs.
    running = [thread for thread in resource_threads() if thread.name == name]
    list(map(functools.partial(threading.Thread.join, timeout=5), running))
    assert name not in {thread.name for thread in resource_threads()}


# --- the shapes users write ------------------------------------------------------


class Pool:
    """A class that enters as itself, like `httpx.Client`."""

    def __init__(self, log: Log, size: int = 1) -> None:
        self.log = log
        self.size = size

    def __enter__(self) -> Pool:
        self.log.record("enter")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.log.record("exit" if exc is None else f"exit with {exc!r}")


class Connector:
    """A class that enters as something else: the value is what `__enter__` returns."""

    def __init__(self, log: Log) -> None:
        self.log = log

    def __enter__(self) -> str:
        self.log.record("enter")
        return "connection"

    def __exit__(self, *exc_info: object) -> Literal[False]:
        self.log.record("exit" if exc_info == (None, None, None) else "exit with exc")
        return False


@dataclass
class Session:
    """A dataclass context manager."""

    log: Log

    def __enter__(self) -> Session:
        self.log.record("enter")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.log.record("exit")


class Closable:
    """Opened when created, closed by `close()`: what `contextlib.closing` wraps."""

    def __init__(self, log: Log) -> None:
        self.log = log
        log.record("enter")

    def close(self) -> None:
        self.log.record("exit")


Check = Callable[[object], bool]


def register_class(registry: Registry, thread: bool) -> Check:
    registry.add("resource", Pool, thread=thread)
    return lambda value: isinstance(value, Pool)


def register_class_entering_as_another_value(registry: Registry, thread: bool) -> Check:
    registry.add("resource", Connector, thread=thread)
    return lambda value: value == "connection"


def register_dataclass(registry: Registry, thread: bool) -> Check:
    registry.add("resource", Session, thread=thread)
    return lambda value: isinstance(value, Session)


def register_partial(registry: Registry, thread: bool) -> Check:
    registry.add("resource", functools.partial(Pool, size=3), thread=thread)
    return lambda value: isinstance(value, Pool) and value.size == 3


def register_function_returning_one(registry: Registry, thread: bool) -> Check:
    @registry.resource(name="resource", thread=thread)
    def make_pool(log: Log) -> Pool:
        return Pool(log)

    return lambda value: isinstance(value, Pool)


def register_contextmanager(registry: Registry, thread: bool) -> Check:
    @registry.resource(thread=thread)
    @contextlib.contextmanager
    def resource(log: Log) -> Iterator[str]:
        log.record("enter")
        yield "value"
        log.record("exit")

    return lambda value: value == "value"


def register_closing(registry: Registry, thread: bool) -> Check:
    registry.add(
        "resource", lambda log: contextlib.closing(Closable(log)), thread=thread
    )
    return lambda value: isinstance(value, Closable)


def register_exit_stack(registry: Registry, thread: bool) -> Check:
    @registry.resource(thread=thread)
    def resource(log: Log) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        log.record("enter")
        stack.callback(log.record, "exit")
        return stack

    return lambda value: isinstance(value, contextlib.ExitStack)


def register_generator(registry: Registry, thread: bool) -> Check:
    @registry.resource(thread=thread)
    def resource(log: Log) -> Iterator[str]:
        log.record("enter")
        yield "value"
        log.record("exit")

    return lambda value: value == "value"


SHAPES = [
    pytest.param(register_class, id="class"),
    pytest.param(register_class_entering_as_another_value, id="class-enter-value"),
    pytest.param(register_dataclass, id="dataclass"),
    pytest.param(register_partial, id="partial"),
    pytest.param(register_function_returning_one, id="function"),
    pytest.param(register_contextmanager, id="contextmanager"),
    pytest.param(register_closing, id="closing-lambda"),
    pytest.param(register_exit_stack, id="exit-stack"),
    pytest.param(register_generator, id="generator"),
]


@pytest.mark.parametrize("thread", THREAD_PARAMS)
@pytest.mark.parametrize("register", SHAPES)
async def test_sync_context_manager_is_entered_and_exited(
    register: Callable[[Registry, bool], Check],
    thread: bool,
    concurrency: int | None,
) -> None:
    """Each sync shape is entered at start and exited cleanly at teardown."""
    log = Log()
    registry = Registry()
    registry.add("log", log)
    check = register(registry, thread)
    async with registry.lifespan(concurrency=concurrency) as resources:
        log.record("body")
        assert check(resources["resource"])
    assert log.events == ["enter", "body", "exit"]
    loop_thread = log.threads["body"]
    assert log.threads["enter"] == log.threads["exit"]
    assert (log.threads["enter"] != loop_thread) is thread
    assert resource_threads() == []


@pytest.mark.parametrize("thread", THREAD_PARAMS)
async def test_thread_pool_executor_is_shut_down_at_teardown(
    thread: bool, concurrency: int | None
) -> None:
    """A ThreadPoolExecutor is shut down at teardown, its worker threads joined."""
    registry = Registry()
    registry.add(
        "executor",
        functools.partial(ThreadPoolExecutor, thread_name_prefix="test-pool"),
        thread=thread,
    )
    async with registry.lifespan(concurrency=concurrency) as resources:
        executor = resources["executor"]
        assert isinstance(executor, ThreadPoolExecutor)
        future = executor.submit(sum, [1, 2])
        assert await anyio.to_thread.run_sync(future.result, 5) == 3
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(sum, [])
    assert [t for t in threading.enumerate() if t.name.startswith("test-pool")] == []
    assert resource_threads() == []


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param("body", id="body-raises"),
        pytest.param("sibling", id="sibling-fails"),
    ],
)
async def test_exit_never_receives_another_resources_exception(
    fault: str, concurrency: int | None
) -> None:
    """`__exit__` gets (None, None, None) after the body raised or a sibling failed."""
    log = Log()
    registry = Registry()
    registry.add("log", log)
    registry.add("pool", Pool)

    async def sibling(pool: Pool) -> str:
        await anyio.lowlevel.checkpoint()
        raise OSError("sibling failed")

    expected: type[Exception] = KeyError
    if fault == "sibling":
        registry.add("sibling", sibling)
        expected = StartupError
    with pytest.raises(expected):
        async with registry.lifespan(concurrency=concurrency):
            raise KeyError("body")
    assert log.events == ["enter", "exit"]


async def test_plain_value_is_never_entered() -> None:
    """A context manager registered as a value is handed out as it is."""
    lock = threading.Lock()
    registry = Registry()
    registry.add("lock", lock)
    async with registry.lifespan() as resources:
        assert resources["lock"] is lock
        assert not lock.locked()


async def test_context_manager_handed_out_unentered_on_purpose() -> None:
    """A generator or an async def hands out a context manager unentered."""
    registry = Registry()

    @registry.resource
    def lock() -> Iterator[threading.Lock]:
        yield threading.Lock()

    @registry.resource
    async def executor() -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=1)

    registry.add("pool_class", lambda: Pool)  # a class is never a context manager
    async with registry.lifespan() as resources:
        assert not resources[lock].locked()
        assert resources["pool_class"] is Pool
        pool = resources[executor]
        assert pool.submit(sum, [1]).result(5) == 1
    pool.shutdown()


# --- failures ----------------------------------------------------------------------


class FailingExit:
    """Enters, then fails to exit."""

    def __init__(self, base: object, events: list[str]) -> None:
        self.events = events

    def __enter__(self) -> FailingExit:
        self.events.append("enter faulty")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.events.append("exit faulty")
        raise OSError("disk gone")


class FailingEnter:
    """Fails to enter."""

    def __init__(self, base: object, events: list[str]) -> None:
        self.events = events

    def __enter__(self) -> FailingEnter:
        raise ConnectionRefusedError("no server")

    def __exit__(self, *exc_info: object) -> None:  # pragma: no cover  # never entered
        self.events.append("exit faulty")


@pytest.mark.parametrize("thread", THREAD_PARAMS)
async def test_exit_that_raises_is_a_shutdown_error_and_the_rest_still_stop(
    thread: bool, concurrency: int | None
) -> None:
    """An `__exit__` that raises is a ShutdownError; the other teardowns still run."""
    recorder = Recorder()
    registry = Registry()
    registry.add("events", lambda: recorder.events)
    registry.add("base", recorder.generator("base"))
    registry.add("faulty", FailingExit, thread=thread)
    registry.add("top", recorder.generator("top"), depends={"faulty": "faulty"})
    with anyio.fail_after(5), pytest.raises(ExceptionGroup) as info:
        async with registry.lifespan(concurrency=concurrency):
            recorder.events.append("body")
    (error,) = info.value.exceptions
    assert isinstance(error, ShutdownError)
    assert error.code == "shutdown-failed"
    assert error.resource_name == "faulty"
    assert "Resource 'faulty' failed during shutdown" in str(error)
    assert isinstance(error.__cause__, OSError)
    assert recorder.events == [
        "start base",
        "enter faulty",
        "start top",
        "body",
        "stop top",
        "exit faulty",
        "stop base",
    ]
    assert resource_threads() == []


@pytest.mark.parametrize("thread", THREAD_PARAMS)
async def test_enter_that_raises_is_a_startup_error_after_the_rest_stopped(
    thread: bool, concurrency: int | None
) -> None:
    """An `__enter__` that raises is a StartupError, raised once the rest stopped."""
    recorder = Recorder()
    registry = Registry()
    registry.add("events", lambda: recorder.events)
    registry.add("base", recorder.generator("base"))
    registry.add("faulty", FailingEnter, thread=thread)
    with (
        anyio.fail_after(5),
        pytest.raises(
            StartupError, match="Resource 'faulty' failed during startup"
        ) as info,
    ):
        async with registry.lifespan(concurrency=concurrency):
            pass  # pragma: no cover
    error = info.value
    assert error.code == "startup-failed"
    assert error.resource_name == "faulty"
    assert error.dependency_path == ("faulty",)
    assert isinstance(error.__cause__, ConnectionRefusedError)
    assert recorder.events == ["start base", "stop base"]
    assert resource_threads() == []


@pytest.mark.parametrize("thread", THREAD_PARAMS)
async def test_sync_generator_that_does_not_yield_fails_startup(thread: bool) -> None:
    """A sync generator that returns without yielding is a NoYieldError."""
    registry = Registry()

    @registry.resource(thread=thread)
    def empty() -> Iterator[None]:
        return
        yield  # pragma: no cover

    with pytest.raises(NoYieldError, match="returned without yielding") as info:
        async with registry.lifespan():
            pass  # pragma: no cover
    assert info.value.code == "no-yield"
    assert info.value.resource_name == "empty"
    assert resource_threads() == []


@pytest.mark.parametrize("thread", THREAD_PARAMS)
async def test_sync_generator_that_yields_twice_is_closed_and_reported(
    thread: bool,
) -> None:
    """A sync generator that yields again is closed there and reported at shutdown."""
    events: list[str] = []
    registry = Registry()

    @registry.resource(thread=thread)
    def twice() -> Iterator[int]:
        try:
            yield 1
            yield 2
        finally:
            events.append("closed")

    with pytest.raises(ExceptionGroup) as info:
        async with registry.lifespan():
            pass
    (error,) = info.value.exceptions
    assert isinstance(error, MultipleYieldError)
    assert error.code == "multiple-yields"
    assert error.resource_name == "twice"
    assert "yielded a second time" in str(error)
    assert events == ["closed"]
    assert resource_threads() == []


# --- thread=True -------------------------------------------------------------------


async def test_sqlite3_connection_opens_and_closes_in_its_own_thread(
    concurrency: int | None,
) -> None:
    """A sqlite3 connection, bound to its thread, opens and closes in one thread."""
    events: list[str] = []
    registry = Registry()

    @registry.resource(thread=True)
    def db() -> Iterator[sqlite3.Connection]:
        connection = sqlite3.connect(":memory:")
        try:
            connection.execute("create table notes (body text)")
            yield connection
        finally:
            connection.execute("insert into notes values ('closing')")
            connection.close()
            events.append("closed")

    async with registry.lifespan(concurrency=concurrency) as resources:
        connection = resources[db]
        with pytest.raises(sqlite3.ProgrammingError, match="same thread"):
            connection.execute("select 1")  # the event loop's thread is another
    assert events == ["closed"]
    assert resource_threads() == []


async def test_sqlite3_closing_wrapper_closes_in_its_own_thread() -> None:
    """`contextlib.closing(sqlite3.connect(...))` with thread=True closes cleanly."""
    registry = Registry()
    registry.add(
        "db", lambda: contextlib.closing(sqlite3.connect(":memory:")), thread=True
    )
    async with registry.lifespan() as resources:
        assert isinstance(resources["db"], sqlite3.Connection)
    assert resource_threads() == []


async def test_threaded_start_does_not_block_the_event_loop() -> None:
    """While a threaded start blocks, the event loop runs other tasks."""
    started = threading.Event()
    release = threading.Event()
    registry = Registry()

    @registry.resource(thread=True)
    def slow() -> bool:
        started.set()
        return release.wait(5)  # False if the event loop never released it

    async def release_once_started() -> None:
        await anyio.to_thread.run_sync(started.wait, 5)
        release.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(release_once_started)
        async with registry.lifespan() as resources:
            assert resources[slow] is True


async def test_threaded_factory_gets_dependencies_and_context_variables(
    concurrency: int | None,
) -> None:
    """A threaded factory receives its dependencies and the caller's context."""
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
    request_id.set("r-1")
    registry = Registry()
    registry.add("prefix", "db")

    @registry.resource(thread=True)
    def name(prefix: str) -> str:
        return f"{prefix}:{request_id.get()}"

    async with registry.lifespan(concurrency=concurrency) as resources:
        assert resources[name] == "db:r-1"
        assert resource_threads() == []  # nothing to leave: it ended at once


async def test_threaded_factory_returning_an_async_context_manager() -> None:
    """thread=True builds an async context manager in its thread; the loop enters it."""
    log = Log()
    registry = Registry()
    registry.add("log", log)

    class Client:
        def __init__(self, log: Log) -> None:
            self.log = log
            log.record("create")

        async def __aenter__(self) -> Client:
            self.log.record("enter")
            return self

        async def __aexit__(self, *exc_info: object) -> None:
            self.log.record("exit")

    registry.add("client", Client, thread=True)
    async with registry.lifespan() as resources:
        log.record("body")
        assert isinstance(resources["client"], Client)
        assert resource_threads() == []
    assert log.events == ["create", "enter", "body", "exit"]
    loop_thread = log.threads["body"]
    assert log.threads["create"] != loop_thread
    assert log.threads["enter"] == log.threads["exit"] == loop_thread


async def test_threaded_factory_returning_a_coroutine_is_awaited() -> None:
    """With thread=True, a coroutine a sync factory returns is awaited on the loop."""
    registry = Registry()

    async def real() -> int:
        await anyio.lowlevel.checkpoint()
        return 1

    registry.add("wrapped", lambda: real(), thread=True)
    async with registry.lifespan() as resources:
        assert resources["wrapped"] == 1


class Blocked:
    """A threaded factory that blocks until released, then records its close."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.closed = threading.Event()
        self.threads: dict[str, int] = {}

    def begin(self) -> None:
        self.threads["start"] = threading.get_ident()
        self.started.set()
        assert self.release.wait(5)

    def close(self) -> None:
        self.threads["close"] = threading.get_ident()
        self.closed.set()

    def generator(self) -> Iterator[str]:
        self.begin()
        yield "late"
        self.close()

    def context_manager(self) -> contextlib.closing[Blocked]:
        self.begin()
        return contextlib.closing(self)


@pytest.mark.parametrize(
    "form",
    [
        pytest.param("generator", id="generator"),
        pytest.param("context_manager", id="cm"),
    ],
)
async def test_threaded_start_past_its_timeout_is_closed_in_its_thread(
    form: str, concurrency: int | None
) -> None:
    """A threaded start past its timeout fails; its late value closes in its thread."""
    blocked = Blocked()
    recorder = Recorder()
    registry = Registry()
    registry.add("base", recorder.generator("base"))
    registry.add(
        "slow",
        getattr(blocked, form),
        start_timeout=0.05,
        thread=True,
    )
    with (
        anyio.fail_after(5),
        pytest.raises(StartTimeoutError, match="was still starting after") as info,
    ):
        async with registry.lifespan(concurrency=concurrency):
            pass  # pragma: no cover
    error = info.value
    assert error.code == "start-timeout"
    assert error.resource_name == "slow"
    assert not error.blocked
    assert recorder.events == ["start base", "stop base"]
    assert not blocked.closed.is_set()
    blocked.release.set()
    assert await anyio.to_thread.run_sync(blocked.closed.wait, 5)
    assert blocked.threads["close"] == blocked.threads["start"]
    assert blocked.threads["start"] != threading.get_ident()
    await anyio.to_thread.run_sync(join_resource_thread, "slow")


async def test_threaded_start_aborted_by_a_sibling_is_closed_in_its_thread() -> None:
    """A threaded start aborted, then past its timeout, is closed once it returns."""
    blocked = Blocked()
    registry = Registry()
    registry.add("slow", blocked.generator, start_timeout=0.05, thread=True)

    @registry.resource
    async def broken() -> str:
        await anyio.to_thread.run_sync(blocked.started.wait, 5)
        raise OSError("broken")

    with anyio.fail_after(5), pytest.raises(StartupError) as info:
        async with registry.lifespan():
            pass  # pragma: no cover
    assert info.value.resource_name == "broken"
    blocked.release.set()
    assert await anyio.to_thread.run_sync(blocked.closed.wait, 5)
    assert blocked.threads["close"] == blocked.threads["start"]
    await anyio.to_thread.run_sync(join_resource_thread, "slow")


@pytest.mark.parametrize(
    "returns_coroutine",
    [pytest.param(False, id="function"), pytest.param(True, id="coroutine")],
)
async def test_threaded_start_given_up_with_nothing_to_close_ends_its_thread(
    returns_coroutine: bool,
) -> None:
    """A timed-out threaded start with nothing to leave ends its thread all the same."""
    blocked = Blocked()
    coroutines: list[Coroutine[Any, Any, int]] = []

    async def never_awaited() -> int:  # pragma: no cover  # closed, never run
        return 1

    def function() -> object:
        blocked.begin()
        if returns_coroutine:
            coroutines.append(never_awaited())
            return coroutines[-1]
        return "late"

    registry = Registry()
    registry.add("slow", function, start_timeout=0.05, thread=True)
    with (
        anyio.fail_after(5),
        pytest.raises(StartTimeoutError, match="was still starting after"),
    ):
        async with registry.lifespan():
            pass  # pragma: no cover
    blocked.release.set()
    await anyio.to_thread.run_sync(join_resource_thread, "slow")
    states = [inspect.getcoroutinestate(c) for c in coroutines]
    assert states == ([inspect.CORO_CLOSED] if returns_coroutine else [])


async def test_failure_closing_a_start_given_up_on_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When a timed-out threaded start fails to close, the failure is logged."""
    blocked = Blocked()

    def fails_to_close() -> Iterator[str]:
        blocked.begin()
        yield "late"
        raise OSError("close failed")

    registry = Registry()
    registry.add("slow", fails_to_close, start_timeout=0.05, thread=True)
    with (
        caplog.at_level(logging.WARNING, logger="lifespan_kit"),
        anyio.fail_after(5),
        pytest.raises(StartTimeoutError),
    ):
        async with registry.lifespan():
            pass  # pragma: no cover
    blocked.release.set()
    await anyio.to_thread.run_sync(join_resource_thread, "slow")
    assert "Resource 'slow' failed during shutdown." in caplog.text


async def test_threaded_stop_past_its_timeout_is_reported_and_left_to_its_thread(
    concurrency: int | None,
) -> None:
    """A threaded stop past stop_timeout is a StopTimeoutError; its thread is left."""
    release = threading.Event()
    finished = threading.Event()
    recorder = Recorder()
    registry = Registry()
    registry.add("base", recorder.generator("base"))

    @registry.resource(stop_timeout=0.05, thread=True)
    def slow(base: object) -> Iterator[str]:
        yield "value"
        assert release.wait(5)
        finished.set()

    with anyio.fail_after(5), pytest.raises(ExceptionGroup) as info:
        async with registry.lifespan(concurrency=concurrency):
            pass
    (error,) = info.value.exceptions
    assert isinstance(error, StopTimeoutError)
    assert error.code == "stop-timeout"
    assert error.resource_name == "slow"
    assert recorder.events == ["start base", "stop base"]
    (thread,) = resource_threads()
    assert thread.daemon
    release.set()
    assert await anyio.to_thread.run_sync(finished.wait, 5)
    await anyio.to_thread.run_sync(join_resource_thread, "slow")


# --- the thread, on its own --------------------------------------------------------


async def test_start_given_up_on_just_as_it_finished_is_closed_in_its_thread() -> None:
    """A start whose outcome arrives as its waiter is cancelled is still closed."""
    log = Log()
    thread = ResourceThread("racing")
    schedule = thread._schedule

    with anyio.CancelScope() as scope:

        def cancel_then_deliver(callback: Callable[[], object]) -> None:
            schedule(scope.cancel)  # the waiter is cancelled first
            schedule(callback)

        thread._schedule = cancel_then_deliver
        await thread.start(
            lambda: Entered("value", lambda: log.record("exit"), False),
            deadline=-math.inf,  # given up on at once
        )
    assert scope.cancelled_caught
    await anyio.to_thread.run_sync(join_resource_thread, "racing")
    assert log.events == ["exit"]


async def test_start_is_closed_in_its_thread_when_the_event_loop_is_gone() -> None:
    """When the event loop cannot be told a start finished, the thread closes it."""
    log = Log()
    exited = threading.Event()
    thread = ResourceThread("orphan")

    def leave() -> None:
        log.record("exit")
        exited.set()

    def closed_loop(callback: Callable[[], object]) -> None:
        raise RuntimeError("Event loop is closed")

    thread._schedule = closed_loop
    with anyio.move_on_after(5) as scope:
        async with anyio.create_task_group() as tg:

            async def cancel_once_exited() -> None:
                await anyio.to_thread.run_sync(exited.wait, 5)
                scope.cancel()

            tg.start_soon(cancel_once_exited)
            await thread.start(
                lambda: Entered("value", leave, False), deadline=-math.inf
            )
    await anyio.to_thread.run_sync(join_resource_thread, "orphan")
    assert log.events == ["exit"]  # once: the event loop's cancellation adds none


# --- declaration -------------------------------------------------------------------


async def _agen() -> AsyncIterator[int]:  # pragma: no cover  # declared, never run
    yield 1


async def _coroutine() -> int:  # pragma: no cover  # declared, never run
    return 1


@pytest.mark.parametrize(
    ("register", "problem"),
    [
        pytest.param(
            lambda r: r.resource(thread=True)(_agen),
            "this factory is async",
            id="async-generator",
        ),
        pytest.param(
            lambda r: r.add("_coroutine", _coroutine, thread=True),
            "this factory is async",
            id="async-function",
        ),
        pytest.param(
            lambda r: r.add("_coroutine", 42, thread=True),
            "a plain value has nothing to run",
            id="value",
        ),
        pytest.param(
            lambda r: r.add("_coroutine", sum, thread="yes"),
            "must be True or False",
            id="not-a-bool",
        ),
    ],
)
def test_thread_option_is_rejected_where_it_cannot_apply(
    register: Callable[[Registry], object], problem: str
) -> None:
    """thread=True on an async factory or a value, or a non-bool, fails at once."""
    registry = Registry()
    with pytest.raises(InvalidOptionError, match="Option 'thread' of resource") as info:
        register(registry)
    error = info.value
    assert error.code == "invalid-option"
    assert error.option == "thread"
    assert error.resource_name in ("_agen", "_coroutine")
    assert problem in error.problem
    assert len(registry) == 0
