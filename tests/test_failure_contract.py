"""The failure contract in both run modes: cancellation, other tasks, crashes, blocking.

Each test runs on asyncio and trio and, through the `concurrency` fixture, in
the sequential mode and the concurrent mode, which must behave identically.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import anyio
import anyio.lowlevel
import pytest

from lifespan_kit import Bundle, Registry, ResourceEvent, ResourceMap
from lifespan_kit.errors import (
    BundleTypeError,
    NotRunningError,
    ResourceFailedError,
    ShutdownError,
    StartCancelledError,
    StartTimeoutError,
    StartupError,
    StopTimeoutError,
)

if sys.version_info < (3, 11):  # pragma: no cover  # the backport, on 3.10 only
    from exceptiongroup import ExceptionGroup


class CrashError(Exception):
    """Raised by a task inside a resource's task group."""


def events_of(registry: Registry) -> list[str]:
    """Record every event of `registry` as "kind name"."""
    events: list[str] = []
    registry.add_listener(lambda e: events.append(f"{e.kind} {e.resource_name}"))
    return events


def task_group_registry(log: list[str], crash: anyio.Event | None = None) -> Registry:
    """'db', then 'consumer' (a task group across its yield), then 'api' on both."""
    registry = Registry(stop_timeout=5)

    @registry.resource
    async def db() -> AsyncIterator[str]:
        log.append("start db")
        yield "db"
        await anyio.lowlevel.checkpoint()
        log.append("stop db")

    @registry.resource
    async def consumer(db: str) -> AsyncIterator[str]:
        async def work() -> None:
            try:
                if crash is None:
                    await anyio.sleep_forever()
                else:
                    await crash.wait()
                    raise CrashError("the consumer loop died")
            finally:
                log.append("work ended")

        log.append("start consumer")
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(work)
                yield "consumer"
                await anyio.lowlevel.checkpoint()  # the teardown awaits
                log.append("consumer teardown")
                tg.cancel_scope.cancel()
        finally:
            await anyio.lowlevel.checkpoint()
            log.append("stop consumer")

    @registry.resource
    async def api(db: str, consumer: str) -> AsyncIterator[str]:
        log.append("start api")
        yield "api"
        await anyio.lowlevel.checkpoint()
        log.append("stop api")

    return registry


async def test_outer_cancellation_never_cuts_a_teardown(
    concurrency: int | None,
) -> None:
    """Cancelling the caller during the body stops everything fully, in reverse."""
    log: list[str] = []
    registry = task_group_registry(log)
    events = events_of(registry)
    with anyio.fail_after(5), anyio.CancelScope() as outer:
        async with registry.lifespan(concurrency=concurrency):
            outer.cancel()
            await anyio.sleep_forever()
    assert outer.cancelled_caught
    assert log == [
        "start db",
        "start consumer",
        "start api",
        "stop api",
        "consumer teardown",
        "work ended",
        "stop consumer",
        "stop db",
    ]
    assert events.count("stopped consumer") == 1
    assert [e for e in events if e.startswith("stop_failed")] == []


async def test_background_task_stops_before_its_dependency_when_cancelled(
    concurrency: int | None,
) -> None:
    """An outer cancellation stops a background task before what it depends on."""
    log: list[str] = []
    registry = Registry()

    @registry.resource
    async def queue() -> AsyncIterator[str]:
        yield "queue"
        log.append("stop queue")

    @registry.background
    async def worker(queue: str) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            log.append("stop worker")

    with anyio.fail_after(5), anyio.CancelScope() as outer:
        async with registry.lifespan(concurrency=concurrency):
            outer.cancel()
            await anyio.sleep_forever()
    assert log == ["stop worker", "stop queue"]


async def test_lifespan_entered_and_exited_in_different_tasks(
    concurrency: int | None,
) -> None:
    """Entering in one task and exiting in another stops everything, in reverse."""
    log: list[str] = []
    registry = task_group_registry(log)
    lifespan = registry.lifespan(concurrency=concurrency)
    entered = anyio.Event()
    values: list[ResourceMap] = []

    async def enter() -> None:
        values.append(await lifespan.__aenter__())
        entered.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(enter)
            await entered.wait()
        assert values[0]["api"] == "api"
        await lifespan.__aexit__(None, None, None)
    assert log[-5:] == [
        "stop api",
        "consumer teardown",
        "work ended",
        "stop consumer",
        "stop db",
    ]


@pytest.mark.parametrize(
    "concurrency",
    [pytest.param(1, id="sequential"), pytest.param(None, id="concurrent")],
)
def test_lifespan_steps_in_separate_asyncio_tasks(concurrency: int | None) -> None:
    """Each step in its own `run_until_complete`, as some test runners do, works."""
    log: list[str] = []
    registry = task_group_registry(log)
    lifespan = registry.lifespan(concurrency=concurrency)
    loop = asyncio.new_event_loop()
    try:
        resources = loop.run_until_complete(lifespan.__aenter__())
        assert resources["consumer"] == "consumer"
        loop.run_until_complete(lifespan.__aexit__(None, None, None))
    # On Python 3.11, coverage loses this frame's trace once the loop has run an
    # async generator that holds a task group: these lines run, unrecorded.
    finally:  # pragma: no cover
        loop.close()
    assert log[-1] == "stop db"  # pragma: no cover
    assert log.count("work ended") == 1  # pragma: no cover


async def test_task_group_crash_is_reported_while_running(
    concurrency: int | None, caplog: pytest.LogCaptureFixture
) -> None:
    """A crash inside a resource's task group is reported at once; the body goes on."""
    log: list[str] = []
    crash = anyio.Event()
    registry = task_group_registry(log, crash)
    events = events_of(registry)
    lifespan = registry.lifespan(concurrency=concurrency)
    seen: list[ResourceFailedError] = []

    async def body() -> None:
        async with lifespan:
            crash.set()
            seen.append(await lifespan.wait_failed())
            assert seen[0].resource_name == "consumer"
            assert "failed consumer" in events
            assert "Resource 'consumer' failed while" in caplog.text
            # The body is not cancelled: it keeps running until it leaves.
            await anyio.sleep(0.01)
            log.append("body done")

    with (
        anyio.fail_after(5),
        caplog.at_level(logging.ERROR, logger="lifespan_kit"),
        pytest.raises(ResourceFailedError) as info,
    ):
        await body()
    assert info.value is seen[0]
    assert isinstance(info.value.__cause__, CrashError)
    assert info.value.code == "resource-failed"
    assert log[-5:] == [
        "work ended",
        "body done",
        "stop api",
        "stop consumer",
        "stop db",
    ]
    assert "stop_failed consumer" in events
    assert [e for e in events if e.startswith("stop_failed")] == [
        "stop_failed consumer"
    ]


async def test_task_group_crash_reported_with_the_cause_when_it_stops(
    concurrency: int | None, caplog: pytest.LogCaptureFixture
) -> None:
    """When the crashed resource stops, the task's exception is logged as its cause."""
    crash = anyio.Event()
    registry = task_group_registry([], crash)
    lifespan = registry.lifespan(concurrency=concurrency)

    async def body() -> None:
        async with lifespan:
            crash.set()
            await lifespan.wait_failed()

    with (
        anyio.fail_after(5),
        caplog.at_level(logging.ERROR, logger="lifespan_kit"),
        pytest.raises(ResourceFailedError, match="'consumer' failed while"),
    ):
        await body()
    assert "cause: CrashError: the consumer loop died" in caplog.text


async def test_crash_of_one_resource_leaves_an_unrelated_one_running(
    concurrency: int | None,
) -> None:
    """A crash in one resource's task group cancels nothing of another resource."""
    crash = anyio.Event()
    registry = task_group_registry([], crash)
    ticked = anyio.Event()
    ticks: list[int] = []

    @registry.resource
    async def ticker() -> AsyncIterator[list[int]]:
        async def tick() -> None:
            while True:
                await crash.wait()
                ticks.append(len(ticks))
                if len(ticks) == 3:
                    ticked.set()
                await anyio.sleep(0.001)

        async with anyio.create_task_group() as tg:
            tg.start_soon(tick)
            yield ticks
            tg.cancel_scope.cancel()

    lifespan = registry.lifespan(concurrency=concurrency)

    async def body() -> None:
        async with lifespan:
            crash.set()
            await lifespan.wait_failed()
            await ticked.wait()  # the ticker's task still runs

    with anyio.fail_after(5), pytest.raises(ResourceFailedError):
        await body()
    assert len(ticks) >= 3


async def test_start_that_swallows_its_timeout_is_undone_with_its_stop_timeout(
    concurrency: int | None,
) -> None:
    """A start that yields after swallowing its cancellation gets a full teardown."""
    log: list[str] = []
    registry = Registry()
    events = events_of(registry)

    @registry.resource(start_timeout=0.01, stop_timeout=5)
    async def stubborn() -> AsyncIterator[str]:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            pass
        yield "late"
        await anyio.sleep(0.01)  # a real teardown that waits
        log.append("torn down")

    with anyio.fail_after(5), pytest.raises(StartTimeoutError) as info:
        async with registry.lifespan(concurrency=concurrency):
            pass  # pragma: no cover
    assert info.value.resource_name == "stubborn"
    assert log == ["torn down"]
    assert events == [
        "starting stubborn",
        "start_failed stubborn",
        "stopping stubborn",
        "stopped stubborn",
    ]


async def test_coroutine_that_swallows_its_timeout_reports_no_stop_failure(
    concurrency: int | None, caplog: pytest.LogCaptureFixture
) -> None:
    """An async function with no teardown that overran logs no teardown failure."""
    registry = Registry()

    @registry.resource(start_timeout=0.01)
    async def stubborn() -> str:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            pass
        return "late"

    with (
        anyio.fail_after(5),
        caplog.at_level(logging.WARNING, logger="lifespan_kit"),
        pytest.raises(StartTimeoutError),
    ):
        async with registry.lifespan(concurrency=concurrency):
            pass  # pragma: no cover
    assert "stopping" not in caplog.text
    assert "StopTimeoutError" not in caplog.text


async def test_aborted_task_group_factory_is_a_named_startup_error() -> None:
    """A factory whose task group fails while a sibling's failure aborts it is named."""
    registry = Registry()
    started = anyio.Event()

    @registry.resource
    async def owner() -> AsyncIterator[str]:
        async def child() -> None:
            try:
                await anyio.sleep_forever()
            finally:
                raise CrashError("child failed while cancelled")

        async with anyio.create_task_group() as tg:
            tg.start_soon(child)
            started.set()
            await anyio.sleep(3600)
            yield "never"  # pragma: no cover

    @registry.resource
    async def breaker() -> str:
        await started.wait()
        raise OSError("breaker failed")

    events = events_of(registry)
    with anyio.fail_after(5), pytest.raises(ExceptionGroup) as info:
        async with registry.lifespan():
            pass  # pragma: no cover
    errors = info.value.exceptions
    assert all(isinstance(e, StartupError) for e in errors)
    assert {e.resource_name for e in errors if isinstance(e, StartupError)} == {
        "owner",
        "breaker",
    }
    assert sorted(e for e in events if e.startswith("start_failed")) == [
        "start_failed breaker",
        "start_failed owner",
    ]


@pytest.mark.parametrize("concurrency", [None, 2])
async def test_aborted_starts_close_their_starting_event(
    concurrency: int | None,
) -> None:
    """A start cancelled by a sibling's failure gets a start_failed event too."""
    registry = Registry()
    errors: list[BaseException | None] = []
    kinds: list[str] = []

    def listen(event: ResourceEvent) -> None:
        kinds.append(f"{event.kind} {event.resource_name}")
        if event.kind == "start_failed":
            errors.append(event.error)

    registry.add_listener(listen)
    failing = anyio.Event()

    @registry.resource
    async def slow() -> AsyncIterator[str]:
        failing.set()
        await anyio.sleep(3600)
        yield "never"  # pragma: no cover

    @registry.resource
    async def broken() -> str:
        await failing.wait()
        raise OSError("broken")

    with anyio.fail_after(5), pytest.raises(StartupError):
        async with registry.lifespan(concurrency=concurrency):
            pass  # pragma: no cover
    assert kinds.count("starting slow") == 1
    assert kinds.count("start_failed slow") == 1
    cancelled = [e for e in errors if isinstance(e, StartCancelledError)]
    assert [e.resource_name for e in cancelled] == ["slow"]
    assert cancelled[0].code == "start-cancelled"


async def test_overrun_blocking_start_events_pair_up(concurrency: int | None) -> None:
    """A start that blocked past its timeout: starting, start_failed, then its undo."""
    registry = Registry()
    events = events_of(registry)

    @registry.resource(start_timeout=0.01)
    def blocking() -> Iterator[str]:
        time.sleep(0.03)
        yield "value"

    with pytest.raises(StartTimeoutError, match="blocked the event loop") as info:
        async with registry.lifespan(concurrency=concurrency):
            pass  # pragma: no cover
    assert info.value.blocked
    assert events == [
        "starting blocking",
        "start_failed blocking",
        "stopping blocking",
        "stopped blocking",
    ]


@pytest.mark.parametrize("shape", ["sync", "async"])
async def test_teardown_that_blocks_the_loop_is_a_stop_timeout(
    concurrency: int | None, shape: str
) -> None:
    """A teardown that blocks the event loop past its stop_timeout is reported."""
    registry = Registry()

    if shape == "sync":

        def blocking() -> Iterator[str]:
            yield "value"
            time.sleep(0.05)

        registry.add("blocking", blocking, stop_timeout=0.01)
    else:

        async def blocking_async() -> AsyncIterator[str]:
            yield "value"
            await anyio.lowlevel.checkpoint()
            time.sleep(0.05)  # noqa: ASYNC251  # blocks the loop on purpose

        registry.add("blocking", blocking_async, stop_timeout=0.01)
    with pytest.raises(ExceptionGroup) as info:
        async with registry.lifespan(concurrency=concurrency):
            pass
    (error,) = info.value.exceptions
    assert isinstance(error, StopTimeoutError)
    assert error.resource_name == "blocking"
    assert error.blocked
    assert "blocked the event loop" in str(error)


async def test_a_start_that_waited_is_not_blamed_for_another_blocking() -> None:
    """Only the resource that blocked the loop is blamed; one that waited is not."""
    registry = Registry()
    gate = anyio.Event()

    @registry.resource(start_timeout=0.02)
    async def patient() -> AsyncIterator[str]:
        await gate.wait()
        yield "patient"

    @registry.resource(start_timeout=0.02)
    async def blocker() -> AsyncIterator[str]:
        await anyio.lowlevel.checkpoint()
        gate.set()
        time.sleep(0.05)  # noqa: ASYNC251  # blocks the loop on purpose
        yield "blocker"

    with pytest.raises((StartTimeoutError, ExceptionGroup)) as info:
        async with registry.lifespan():
            pass  # pragma: no cover
    errors = (
        list(info.value.exceptions)
        if isinstance(info.value, ExceptionGroup)
        else [info.value]
    )
    blamed = {
        e.resource_name
        for e in errors
        if isinstance(e, StartTimeoutError) and e.blocked
    }
    assert blamed == {"blocker"}


class Interrupt(BaseException):
    """Stands in for KeyboardInterrupt or SystemExit raised by a factory."""


@pytest.mark.parametrize("listening", [True, False])
async def test_base_exception_from_a_start_propagates_after_the_rollback(
    concurrency: int | None, listening: bool
) -> None:
    """A non-Exception raised by a start stops what started, then propagates."""
    log: list[str] = []
    registry = Registry()
    events = events_of(registry) if listening else ["start_failed api"]

    @registry.resource
    async def db() -> AsyncIterator[str]:
        yield "db"
        log.append("stop db")

    @registry.resource
    async def api(db: str) -> str:
        raise Interrupt

    with anyio.fail_after(5), pytest.raises(Interrupt):
        async with registry.lifespan(concurrency=concurrency):
            pass  # pragma: no cover
    assert log == ["stop db"]
    assert "start_failed api" in events


@pytest.mark.parametrize(
    "backend", [pytest.param("asyncio", id="asyncio"), pytest.param("trio", id="trio")]
)
@pytest.mark.parametrize(
    "concurrency",
    [pytest.param(1, id="sequential"), pytest.param(None, id="concurrent")],
)
def test_event_loop_ending_with_the_lifespan_open_stops_it(
    backend: str, concurrency: int | None, caplog: pytest.LogCaptureFixture
) -> None:
    """An event loop that ends with a lifespan never exited stops it, in reverse."""
    log: list[str] = []
    registry = task_group_registry(log)
    lifespans: list[object] = []

    async def main() -> None:
        lifespan = registry.lifespan(concurrency=concurrency)
        lifespans.append(lifespan)
        await lifespan.__aenter__()

    with caplog.at_level(logging.ERROR, logger="lifespan_kit"):
        anyio.run(main, backend=backend)
    # asyncio's end cancels every task, the consumer's own worker among them.
    stops = [line for line in log if line.startswith("stop")]
    assert stops == ["stop api", "stop consumer", "stop db"]
    assert log.count("work ended") == 1
    assert "failed while" not in caplog.text  # the loop's end is no crash
    with pytest.warns(ResourceWarning, match="stopped only because its event loop"):
        lifespans.clear()


def test_asyncio_loop_ending_during_startup_stops_what_started() -> None:
    """An asyncio loop that ends while a start waits stops what already started."""
    log: list[str] = []
    registry = Registry()
    started = asyncio.Event()

    @registry.resource
    async def db() -> AsyncIterator[str]:
        yield "db"
        log.append("stop db")

    @registry.resource
    async def slow(db: str) -> AsyncIterator[str]:
        started.set()
        await anyio.sleep(3600)
        yield "never"  # pragma: no cover

    async def enter() -> None:
        await registry.lifespan().__aenter__()

    async def main() -> None:
        asyncio.get_running_loop().create_task(enter())
        await started.wait()

    asyncio.run(main())
    # Unrecorded on Python 3.11, as in test_lifespan_steps_in_separate_asyncio_tasks.
    assert log == ["stop db"]  # pragma: no cover


async def test_crashed_resource_whose_teardown_handles_the_crash(
    concurrency: int | None,
) -> None:
    """A crashed resource that catches the task's error in its teardown still fails."""
    registry = Registry()
    events = events_of(registry)
    crash = anyio.Event()

    @registry.resource
    async def consumer() -> AsyncIterator[str]:
        async def work() -> None:
            await crash.wait()
            raise CrashError("lost")

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(work)
                yield "consumer"
        except ExceptionGroup:
            pass  # handled here: the teardown itself ends without an error

    lifespan = registry.lifespan(concurrency=concurrency)

    async def body() -> None:
        async with lifespan:
            crash.set()
            await lifespan.wait_failed()

    with anyio.fail_after(5), pytest.raises(ResourceFailedError) as info:
        await body()
    assert isinstance(info.value.__cause__, CrashError)  # read from the task group
    assert events[-3:] == [
        "failed consumer",
        "stopping consumer",
        "stop_failed consumer",
    ]


async def test_two_crashed_tasks_are_the_cause_together(
    concurrency: int | None,
) -> None:
    """When two tasks of a resource crash, their group is the failure's cause."""
    registry = Registry()
    crash = anyio.Event()

    @registry.resource
    async def consumer() -> AsyncIterator[str]:
        async def first() -> None:
            await crash.wait()
            raise CrashError("first")

        async def second() -> None:
            try:
                await anyio.sleep_forever()
            finally:
                raise CrashError("second")  # when the first one's crash cancels it

        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            tg.start_soon(second)
            yield "consumer"

    lifespan = registry.lifespan(concurrency=concurrency)

    async def body() -> None:
        async with lifespan:
            crash.set()
            await lifespan.wait_failed()

    with anyio.fail_after(5), pytest.raises(ResourceFailedError) as info:
        await body()
    cause = info.value.__cause__
    assert isinstance(cause, ExceptionGroup)
    assert sorted(str(e) for e in cause.exceptions) == ["first", "second"]


async def test_teardown_whose_task_group_fails_when_cut_is_a_stop_timeout(
    concurrency: int | None,
) -> None:
    """A teardown cut by its stop_timeout whose task group also fails is named."""
    registry = Registry()

    @registry.resource(stop_timeout=0.01)
    async def stubborn() -> AsyncIterator[str]:
        yield "value"

        async def child() -> None:
            try:
                await anyio.sleep_forever()
            finally:
                raise CrashError("child failed while cancelled")

        async with anyio.create_task_group() as tg:
            tg.start_soon(child)
            await anyio.sleep_forever()

    with anyio.fail_after(5), pytest.raises(ExceptionGroup) as info:
        async with registry.lifespan(concurrency=concurrency):
            pass
    (error,) = info.value.exceptions
    assert isinstance(error, StopTimeoutError)
    assert error.resource_name == "stubborn"
    cause = error.__cause__
    assert isinstance(cause, ExceptionGroup)
    assert any(isinstance(e, CrashError) for e in cause.exceptions)


async def test_swallowed_start_holding_a_task_group_is_closed(
    concurrency: int | None,
) -> None:
    """A start that holds a task group and swallows its timeout is still closed."""
    log: list[str] = []
    registry = Registry()

    @registry.resource(start_timeout=0.01)
    async def stubborn() -> AsyncIterator[str]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep_forever)
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                pass
            yield "late"
            log.append("teardown begins")
            await anyio.lowlevel.checkpoint()  # cancelled with the start
            log.append("never")  # pragma: no cover
        log.append("never either")  # pragma: no cover

    with anyio.fail_after(5), pytest.raises(StartTimeoutError):
        async with registry.lifespan(concurrency=concurrency):
            pass  # pragma: no cover
    assert log == ["teardown begins"]


async def test_swallowed_start_holding_a_task_group_whose_teardown_raises(
    concurrency: int | None,
) -> None:
    """Its teardown's own error is reported with the start's timeout."""
    registry = Registry()

    @registry.resource(start_timeout=0.01)
    async def stubborn() -> AsyncIterator[str]:
        async with anyio.create_task_group():
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                pass
            yield "late"
            raise OSError("could not close")

    with anyio.fail_after(5), pytest.raises(ExceptionGroup) as info:
        async with registry.lifespan(concurrency=concurrency):
            pass  # pragma: no cover
    timeout, stop = info.value.exceptions
    assert isinstance(timeout, StartTimeoutError)
    assert isinstance(stop, ShutdownError)
    assert not isinstance(stop, StopTimeoutError)
    assert isinstance(stop.__cause__, ExceptionGroup)
    assert "OSError: could not close" in str(stop)  # the group's content is shown


async def test_bundle_whose_own_code_raises_stops_what_started(
    concurrency: int | None,
) -> None:
    """A bundle validator that raises leaves nothing running; its error propagates."""
    from pydantic import model_validator

    log: list[str] = []
    registry = Registry()

    @registry.resource
    async def db() -> AsyncIterator[str]:
        yield "db"
        log.append("stop db")

    class Strict(Bundle):
        db: str

        @model_validator(mode="after")
        def refuse(self) -> Strict:
            raise RuntimeError("the bundle's own check failed")

    with pytest.raises(RuntimeError, match="own check failed"):
        async with registry.lifespan(Strict, concurrency=concurrency):
            pass  # pragma: no cover
    assert log == ["stop db"]


async def test_bundle_whose_post_init_raises_stops_what_started() -> None:
    """A bundle's model_post_init that raises: its error, after the rollback."""
    log: list[str] = []
    registry = Registry()

    @registry.resource
    async def db() -> AsyncIterator[str]:
        yield "db"
        log.append("stop db")

    class Checked(Bundle):
        db: str

        def model_post_init(self, context: object, /) -> None:
            raise RuntimeError("post-init refused")

    with pytest.raises(RuntimeError, match="post-init refused"):
        async with registry.lifespan(Checked):
            pass  # pragma: no cover
    assert log == ["stop db"]


class ThreadedClient:
    """A sync client that opens and closes slowly, recording both."""

    def __init__(self, log: list[str], pool: str) -> None:
        self.log = log

    def __enter__(self) -> str:
        time.sleep(0.02)
        self.log.append("open client")
        return "client"

    def __exit__(self, *exc_info: object) -> None:
        self.log.append("close client")


@pytest.mark.parametrize("concurrency", [None, 2])
@pytest.mark.parametrize("form", ["generator", "class"])
async def test_threaded_start_aborted_by_a_sibling_stops_before_its_dependency(
    concurrency: int | None, form: str
) -> None:
    """A threaded start aborted by a failure is closed before what it depends on."""
    log: list[str] = []
    registry = Registry()
    events = events_of(registry)

    @registry.resource
    async def pool() -> AsyncIterator[str]:
        yield "pool"
        log.append("close pool")

    if form == "generator":

        def client(pool: str) -> Iterator[str]:
            with ThreadedClient(log, pool) as value:
                yield value

        registry.add("client", client, thread=True)
    else:
        registry.add("client", functools.partial(ThreadedClient, log), thread=True)

    @registry.resource
    async def broken(pool: str) -> str:
        await anyio.lowlevel.checkpoint()
        raise OSError("broken")

    with anyio.fail_after(5), pytest.raises(StartupError) as info:
        async with registry.lifespan(concurrency=concurrency):
            pass  # pragma: no cover
    assert info.value.resource_name == "broken"
    assert log == ["open client", "close client", "close pool"]
    client_events = [e for e in events if e.endswith(" client")]
    assert client_events == [
        "starting client",
        "start_failed client",
        "stopping client",
        "stopped client",
    ]


async def test_each_teardown_that_blocks_the_loop_is_reported(
    concurrency: int | None,
) -> None:
    """Teardowns that each block the loop past their limit are all reported."""
    registry = Registry()

    def blocking(name: str) -> None:
        async def teardown_blocks() -> AsyncIterator[str]:
            await anyio.lowlevel.checkpoint()  # each in a host task of its own
            yield name
            await anyio.lowlevel.checkpoint()
            time.sleep(0.05)  # noqa: ASYNC251  # blocks the loop on purpose

        registry.add(name, teardown_blocks, stop_timeout=0.01)

    blocking("first")
    blocking("second")
    with pytest.raises(ExceptionGroup) as info:
        async with registry.lifespan(concurrency=concurrency):
            pass
    errors = [e for e in info.value.exceptions if isinstance(e, StopTimeoutError)]
    assert len(errors) == len(info.value.exceptions)
    assert all(e.blocked for e in errors)
    assert sorted(str(e.resource_name) for e in errors) == ["first", "second"]


async def rendezvous(arrived: list[anyio.Event], index: int) -> AsyncIterator[int]:
    """A resource whose start waits, and whose teardown waits for all the others."""
    await anyio.lowlevel.checkpoint()
    yield index
    arrived[index].set()
    for event in arrived:
        await event.wait()


async def test_independent_teardowns_run_at_the_same_time() -> None:
    """Independent resources whose starts waited stop concurrently, every run."""
    for _ in range(10):  # the event loop's scheduling order varies from run to run
        registry = Registry(stop_timeout=1)
        arrived = [anyio.Event() for _ in range(4)]

        for index in range(len(arrived)):
            registry.add(f"r{index}", functools.partial(rendezvous, arrived, index))
        with anyio.fail_after(5):
            async with registry.lifespan():
                pass


async def rendezvous_after_sync_start(
    arrived: list[anyio.Event], index: int
) -> AsyncIterator[int]:
    """As `rendezvous`, with a start that never suspends."""
    yield index
    arrived[index].set()
    for event in arrived:
        await event.wait()


@pytest.mark.xfail(
    reason="resources whose starts never suspend share a host task, so their "
    "teardowns run one after the other (issue 12)",
    strict=True,
)
async def test_independent_teardowns_after_sync_starts_run_at_the_same_time() -> None:
    """Independent resources whose starts never waited stop concurrently."""
    registry = Registry(stop_timeout=0.5)
    arrived = [anyio.Event() for _ in range(2)]
    for index in range(len(arrived)):
        registry.add(
            f"r{index}", functools.partial(rendezvous_after_sync_start, arrived, index)
        )
    with anyio.fail_after(5):
        async with registry.lifespan():
            pass


@pytest.mark.parametrize(
    "concurrency",
    [pytest.param(1, id="sequential"), pytest.param(None, id="concurrent")],
)
@pytest.mark.parametrize("how", ["wait_for", "task.cancel"])
def test_asyncio_cancellation_during_teardown_waits_for_it(
    concurrency: int | None, how: str
) -> None:
    """asyncio's own cancellation in a teardown (wait_for, Ctrl+C) does not cut it."""
    log: list[str] = []
    registry = Registry(stop_timeout=5)
    events = events_of(registry)
    stopping = asyncio.Event()

    @registry.resource
    async def db() -> AsyncIterator[str]:
        yield "db"
        stopping.set()
        await anyio.sleep(0.05)
        log.append("db closed")

    async def serve() -> None:
        async with registry.lifespan(concurrency=concurrency):
            pass

    async def main() -> None:
        if how == "wait_for":
            task = asyncio.ensure_future(asyncio.wait_for(serve(), 5))
        else:
            task = asyncio.ensure_future(serve())
        await stopping.wait()
        task.cancel()  # lands while 'db' stops, as a deadline or Ctrl+C would
        with pytest.raises(asyncio.CancelledError):
            await task
        log.append("caller saw the cancellation")

    asyncio.run(main())
    assert log == ["db closed", "caller saw the cancellation"]
    assert events[-2:] == ["stopping db", "stopped db"]


async def test_bundle_holds_the_resources_themselves(concurrency: int | None) -> None:
    """A bundle field is the resource's own object: no copy, no conversion."""
    registry = Registry()

    @registry.resource
    def metrics() -> list[float]:
        return []

    @registry.resource
    def exporter(metrics: list[float]) -> list[float]:
        return metrics

    @registry.resource
    def retries() -> int:
        return 3

    class Resources(Bundle):
        metrics: list[float]
        exporter: list[float]
        retries: float

    async with registry.lifespan(Resources, concurrency=concurrency) as res:
        assert res.metrics is res.exporter
        res.metrics.append(1.5)
        assert res.exporter == [1.5]
        assert type(res.retries) is int


@pytest.mark.parametrize(
    ("annotation", "value", "expected", "problem"),
    [
        pytest.param(
            "Annotated[int, Field(ge=1024)]", 80, "int", "greater than or equal to 1024"
        ),
        pytest.param("list[int]", ["1", "2"], "list[int]", "a valid integer"),
        pytest.param("Optional[str]", 3, "Optional[str]", "a valid string"),
    ],
)
async def test_bundle_type_error_says_what_the_check_found(
    annotation: str, value: object, expected: str, problem: str
) -> None:
    """A field's error names its type as written and the check's own reason, once."""
    from typing import Annotated, Optional  # noqa: F401  # for the annotation

    from pydantic import Field  # noqa: F401  # for the annotation

    registry = Registry()
    registry.add("field", lambda: value)
    bundle = type(
        "Resources", (Bundle,), {"__annotations__": {"field": eval(annotation)}}
    )
    with pytest.raises(BundleTypeError) as info:
        async with registry.lifespan(bundle):
            pass  # pragma: no cover
    assert info.value.expected == expected
    assert info.value.problem is not None
    assert problem in info.value.problem
    assert f"problem: {info.value.problem}" in str(info.value)


async def test_wait_failed_ends_when_the_lifespan_stops_first(
    concurrency: int | None,
) -> None:
    """A task waiting for a failure is told when the lifespan stops without one."""
    registry = Registry()
    registry.add("db", "db")
    lifespan = registry.lifespan(concurrency=concurrency)
    outcome: list[str] = []
    waiting = anyio.Event()

    async def watch() -> None:
        waiting.set()  # no checkpoint before wait_failed() begins to wait
        with pytest.raises(NotRunningError, match="once it stopped"):
            await lifespan.wait_failed()
        outcome.append("told")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg, lifespan:
            tg.start_soon(watch)
            await waiting.wait()
    assert outcome == ["told"]


async def test_health_check_that_blocks_the_loop_is_unhealthy() -> None:
    """A synchronous check that blocks past its health_timeout is unhealthy."""
    registry = Registry()

    def slow_check(value: object) -> bool:
        time.sleep(0.05)
        return True

    registry.add("db", "db", health=slow_check)
    registry_with_timeout = Registry(health_timeout=0.01)
    registry_with_timeout.include(registry)
    lifespan = registry_with_timeout.lifespan()
    async with lifespan:
        report = await lifespan.health()
    health = report.resources["db"]
    assert health.status == "unhealthy"
    assert health.error is not None
    assert "blocked the event loop" in health.error


def test_late_deadline_after_a_teardown_finished_is_no_timeout() -> None:
    """A deadline that fires after the teardown finished (loop blocked) cuts nothing."""
    registry = Registry()
    log: list[str] = []

    @registry.resource(stop_timeout=0.05)
    async def waiter() -> AsyncIterator[str]:
        yield "waiter"
        await anyio.sleep(0.01)
        log.append("waiter closed")

    @registry.resource(stop_timeout=1)
    async def blocker() -> AsyncIterator[str]:
        yield "blocker"
        await anyio.lowlevel.checkpoint()
        time.sleep(0.1)  # noqa: ASYNC251  # blocks the loop on purpose

    async def main() -> None:
        async with registry.lifespan():
            pass

    asyncio.run(main())  # asyncio wakes the finished sleep before the deadline
    assert log == ["waiter closed"]  # pragma: no cover  # see the note above


async def test_crash_cause_is_known_when_it_happens(concurrency: int | None) -> None:
    """The task's exception is the failure's cause from the moment it is reported."""
    crash = anyio.Event()
    registry = task_group_registry([], crash)
    lifespan = registry.lifespan(concurrency=concurrency)
    causes: list[BaseException | None] = []

    async def body() -> None:
        async with lifespan:
            crash.set()
            causes.append((await lifespan.wait_failed()).__cause__)

    with anyio.fail_after(5), pytest.raises(ResourceFailedError):
        await body()
    assert isinstance(causes[0], CrashError)


async def test_a_task_group_cancelled_by_its_own_resource_fails_without_cause(
    concurrency: int | None,
) -> None:
    """A resource that cancels its own task group while running has failed too."""
    registry = Registry()
    stop_now = anyio.Event()

    @registry.resource
    async def consumer() -> AsyncIterator[str]:
        async with anyio.create_task_group() as tg:

            async def give_up() -> None:
                await stop_now.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(give_up)
            yield "consumer"

    lifespan = registry.lifespan(concurrency=concurrency)
    seen: list[ResourceFailedError] = []

    async def body() -> None:
        async with lifespan:
            stop_now.set()
            seen.append(await lifespan.wait_failed())

    with anyio.fail_after(5), pytest.raises(ResourceFailedError):
        await body()
    assert seen[0].__cause__ is None
    assert "the exception is reported when the resource stops" in str(seen[0])


async def test_crash_in_a_context_manager_resource_learns_its_cause_at_the_end(
    concurrency: int | None,
) -> None:
    """Out of reach while running, the task's exception is the cause once stopped."""
    registry = Registry()
    crash = anyio.Event()

    @asynccontextmanager
    async def consumer() -> AsyncIterator[str]:
        async def work() -> None:
            await crash.wait()
            raise CrashError("lost")

        async with anyio.create_task_group() as tg:
            tg.start_soon(work)
            yield "consumer"

    registry.add("consumer", consumer)
    lifespan = registry.lifespan(concurrency=concurrency)
    causes: list[BaseException | None] = []

    async def body() -> None:
        async with lifespan:
            crash.set()
            causes.append((await lifespan.wait_failed()).__cause__)

    with anyio.fail_after(5), pytest.raises(ResourceFailedError) as info:
        await body()
    assert causes == [None]
    assert isinstance(info.value.__cause__, CrashError)


async def test_a_bundle_with_its_own_validator_keeps_what_it_made() -> None:
    """A bundle whose validator passes holds what its validation made of the values."""
    from pydantic import field_validator

    registry = Registry()
    registry.add("name", lambda: " db ")

    class Resources(Bundle):
        name: str

        @field_validator("name")
        @classmethod
        def strip(cls, value: str) -> str:
            return value.strip()

    async with registry.lifespan(Resources) as res:
        assert res.name == "db"
