"""Background tasks: run for the lifespan's lifetime; a crash is reported, not lost."""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel
import pytest

from lifespan_kit import Lifespan, Registry, ResourceEvent
from lifespan_kit._lifespan import shorten_teardown
from lifespan_kit.errors import (
    BackgroundTaskError,
    DuplicateResourceError,
    InvalidFactoryError,
    InvalidOptionError,
    NotRunningError,
    ResourceFailedError,
    ShutdownError,
    StopTimeoutError,
)
from tests.fakes import Recorder

if sys.version_info < (3, 11):  # pragma: no cover  # the backport, on 3.10 only
    from exceptiongroup import ExceptionGroup


def consumer_registry(
    recorder: Recorder, *, crash: bool = False, running: anyio.Event | None = None
) -> Registry:
    """db <- consumer, a background task that records its life."""
    registry = Registry()
    registry.add("db", recorder.generator("db"))

    @registry.background
    async def consumer(db: str) -> None:
        recorder.events.append(f"consume from {db}")
        if running is not None:
            running.set()
        try:
            if crash:
                raise ConnectionError("the queue went away")
            await anyio.sleep_forever()
        finally:
            recorder.events.append("consumer done")

    return registry


async def run_until_failed(lifespan: Lifespan[object]) -> ResourceFailedError:
    """Enter the lifespan and leave it once a background task failed."""
    async with lifespan:
        with anyio.fail_after(5):
            return await lifespan.wait_failed()


async def test_runs_while_the_lifespan_runs_and_stops_before_its_dependencies(
    concurrency: int | None,
) -> None:
    """The task runs during the body, and is cancelled before 'db' stops."""
    recorder = Recorder()
    running = anyio.Event()
    registry = consumer_registry(recorder, running=running)
    async with registry.lifespan(concurrency=concurrency) as res:
        with anyio.fail_after(5):
            await running.wait()
        recorder.events.append("body")
        assert res["consumer"] is None
    assert recorder.events == [
        "start db",
        "consume from db",
        "body",
        "consumer done",
        "stop db",
    ]


async def test_a_crash_is_returned_by_wait_failed_and_raised_on_exit(
    concurrency: int | None,
) -> None:
    """wait_failed returns the error at once; leaving the block stops and raises it."""
    recorder = Recorder()
    lifespan = consumer_registry(recorder, crash=True).lifespan(concurrency=concurrency)
    seen: list[ResourceFailedError] = []

    async def body() -> None:
        async with lifespan:
            with anyio.fail_after(5):
                seen.append(await lifespan.wait_failed())
            seen.append(await lifespan.wait_failed())
            recorder.events.append("body sees the failure")

    with pytest.raises(BackgroundTaskError, match="'consumer' failed") as info:
        await body()
    assert seen == [info.value, info.value]
    assert info.value.code == "background-failed"
    assert info.value.phase == "running"
    assert info.value.resource_name == "consumer"
    assert info.value.dependency_path == ("consumer",)
    assert info.value.returned is False
    assert isinstance(info.value.__cause__, ConnectionError)
    assert "cause: ConnectionError: the queue went away" in str(info.value)
    assert recorder.events == [
        "start db",
        "consume from db",
        "consumer done",
        "body sees the failure",
        "stop db",
    ]


async def test_a_return_while_running_is_a_failure() -> None:
    """A task that returns on its own leaves a dead service: it fails as 'returned'."""
    registry = Registry()

    @registry.background
    async def heartbeat() -> None:
        return

    with pytest.raises(BackgroundTaskError, match="'heartbeat' returned") as info:
        await run_until_failed(registry.lifespan())
    assert info.value.returned is True
    assert info.value.__cause__ is None
    assert "fix: keep the task running until it is cancelled" in str(info.value)


async def test_a_return_forced_by_an_outer_cancellation_is_no_failure() -> None:
    """A task that swallows a cancellation from outside and returns is not failed."""
    registry = Registry()
    events: list[ResourceEvent] = []

    @registry.background
    async def quiet() -> None:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            return

    with anyio.CancelScope() as scope:
        # Sequential mode: the task lives in this task's scopes, so the
        # cancellation of `scope` reaches it before its teardown does.
        async with registry.lifespan(concurrency=1, listeners=[events.append]):
            await anyio.lowlevel.checkpoint()
            scope.cancel()
            await anyio.sleep_forever()
    assert [e.kind for e in events] == ["starting", "started", "stopping", "stopped"]


async def test_listeners_get_a_failed_event_and_the_log_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The failure is logged at ERROR with its traceback and passed to listeners."""
    recorder = Recorder()
    events: list[ResourceEvent] = []
    registry = consumer_registry(recorder, crash=True)
    lifespan = registry.lifespan(listeners=[events.append])
    with (
        caplog.at_level(logging.ERROR, logger="lifespan_kit"),
        pytest.raises(BackgroundTaskError),
    ):
        await run_until_failed(lifespan)
    failed = [e for e in events if e.kind == "failed"]
    assert [(e.resource_name, type(e.error)) for e in failed] == [
        ("consumer", BackgroundTaskError)
    ]
    [record] = caplog.records
    assert record.getMessage().startswith("Background task 'consumer' failed")
    assert record.exc_info is not None
    assert record.__dict__["lifespan_kit_resource"] == "consumer"


async def test_a_failure_and_a_teardown_failure_are_raised_together() -> None:
    """With a teardown failure as well, both come in one ExceptionGroup."""
    recorder = Recorder()
    registry = Registry()
    registry.add("db", recorder.generator("db", fail_stop=OSError("disk")))

    @registry.background
    async def consumer(db: str) -> None:
        raise ValueError(db)

    with pytest.raises(ExceptionGroup, match=r"1 resource.s. failed while") as info:
        await run_until_failed(registry.lifespan())
    assert [type(e) for e in info.value.exceptions] == [
        BackgroundTaskError,
        ShutdownError,
    ]
    assert "Then 1 resource(s) failed during shutdown." in str(info.value)


@pytest.mark.parametrize(
    ("crash", "fail_stop", "notes"),
    [
        pytest.param(True, False, ["1 resource(s) failed while running"], id="failure"),
        pytest.param(
            False, True, ["1 resource(s) failed during shutdown"], id="teardown"
        ),
        pytest.param(
            True,
            True,
            [
                "1 resource(s) failed while running",
                "1 resource(s) failed during shutdown",
            ],
            id="both",
        ),
    ],
)
async def test_the_body_exception_carries_the_failures_as_notes(
    crash: bool, fail_stop: bool, notes: list[str]
) -> None:
    """When the body raises, its exception propagates and lists each failure."""
    registry = Registry()
    registry.add(
        "db",
        Recorder().generator("db", fail_stop=OSError("disk") if fail_stop else None),
    )

    @registry.background
    async def consumer(db: str) -> None:
        if crash:
            raise ValueError(db)
        await anyio.sleep_forever()

    lifespan = registry.lifespan()

    async def body() -> None:
        async with lifespan:
            if crash:
                await lifespan.wait_failed()
            raise KeyError("body")

    with pytest.raises(KeyError) as info:
        await body()
    found: list[str] = getattr(info.value, "__notes__", [])
    headings = [note for note in found if not note.startswith("  ")]
    assert [heading.split(":")[0] for heading in headings] == notes


async def test_a_cancelled_body_does_not_raise_the_failure() -> None:
    """A cancelled body stays cancelled; the failure was logged and told."""
    recorder = Recorder()
    lifespan = consumer_registry(recorder, crash=True).lifespan()
    with anyio.CancelScope() as scope:
        async with lifespan:
            await lifespan.wait_failed()
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert recorder.events[-1] == "stop db"


async def test_an_error_raised_while_cancelled_is_a_teardown_failure() -> None:
    """A task that raises when the teardown cancels it fails its teardown."""
    registry = Registry()

    @registry.background
    async def flusher() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            raise OSError("flush failed")

    with pytest.raises(ExceptionGroup) as info:
        async with registry.lifespan():
            await anyio.lowlevel.checkpoint()
    [error] = info.value.exceptions
    assert isinstance(error, ShutdownError)
    assert error.resource_name == "flusher"
    assert isinstance(error.__cause__, OSError)


async def test_wait_failed_needs_a_running_lifespan() -> None:
    """Outside the block, wait_failed raises NotRunningError."""
    lifespan = consumer_registry(Recorder()).lifespan()
    with pytest.raises(NotRunningError, match="wait for a resource to fail"):
        await lifespan.wait_failed()


def test_a_synchronous_function_is_refused() -> None:
    """Only an async function can run as a background task."""
    registry = Registry()

    def poll() -> None:
        """Stand in for a loop someone forgot to make async."""

    with pytest.raises(InvalidFactoryError, match="is not an async function") as info:
        registry.background(poll)  # type: ignore[arg-type]  # the mistake tested
    assert info.value.resource_name == "poll"
    assert "declare the background task with `async def`" in str(info.value)


def test_an_object_without_a_name_is_refused() -> None:
    """A callable with no __name__ needs name=; the error shows what it was."""

    class Poller:
        async def __call__(self) -> None:
            """Run forever."""

    registry = Registry()
    with pytest.raises(InvalidFactoryError) as info:
        registry.background(Poller())
    assert info.value.resource_name is not None
    assert "Poller object" in info.value.resource_name
    resource = registry.background(name="poller")(Poller())
    assert resource.name == "poller"
    assert resource.kind == "background"


def test_options_name_dependencies_and_stop_timeout() -> None:
    """The decorator form takes a name, renamed dependencies and a stop_timeout."""
    registry = Registry()
    registry.add("database", 1)

    @registry.background(name="consumer", depends={"db": "database"}, stop_timeout=2)
    async def consume(db: int) -> None:
        """Registered, never started."""

    assert consume.name == "consumer"
    assert [d.resource_name for d in consume.dependencies] == ["database"]
    assert consume.timeouts.stop_timeout == 2
    with pytest.raises(DuplicateResourceError):
        registry.background(name="consumer")(consume.factory)  # type: ignore[arg-type]  # a Resource's factory is typed object


def test_registry_defaults_are_readable() -> None:
    """Registry.defaults gives the timeouts resources inherit."""
    registry = Registry(stop_timeout=3)
    answer = registry.add("answer", 42)
    assert answer.timeouts.resolve(registry.defaults) == (60.0, 3.0, 5.0)


# --- hurrying the teardown ---------------------------------------------------


def hanging_registry(recorder: Recorder) -> Registry:
    """db <- cache, whose teardowns wait until cancelled."""
    registry = Registry(stop_timeout=30)
    for name, depends in (("db", None), ("cache", {"db": "db"})):

        async def factory(name: str = name, **_: object) -> AsyncIterator[str]:
            yield name
            recorder.events.append(f"stop {name}")
            try:
                await anyio.sleep_forever()
            finally:
                recorder.events.append(f"cut {name}")

        registry.add(name, factory, depends=depends)
    return registry


async def test_shortening_cuts_running_and_coming_teardowns(
    concurrency: int | None,
) -> None:
    """Each teardown, running or still to come, gets at most the grace; all run."""
    recorder = Recorder()
    registry = hanging_registry(recorder)
    lifespan = registry.lifespan(concurrency=concurrency)

    def hurry(event: ResourceEvent) -> None:
        if event.kind == "stopping" and event.resource_name == "cache":
            shorten_teardown(lifespan, 0.01)

    registry.add_listener(hurry)
    lifespan = registry.lifespan(concurrency=concurrency)
    with anyio.fail_after(5), pytest.raises(ExceptionGroup) as info:
        async with lifespan:
            pass
    errors = info.value.exceptions
    assert [type(e) for e in errors] == [StopTimeoutError, StopTimeoutError]
    first = errors[0]
    assert isinstance(first, StopTimeoutError)
    assert first.shortened_to == 0.01
    assert "(the shutdown was hurried, leaving it 0.01s; stop_timeout=30s)" in str(
        first
    )
    assert "the shutdown was hurried" in str(first)
    assert recorder.events == ["stop cache", "cut cache", "stop db", "cut db"]


async def test_shortening_a_teardown_in_progress() -> None:
    """A teardown already running gets a new, earlier deadline."""
    recorder = Recorder()
    registry = Registry(stop_timeout=30)
    lifespan: Lifespan[object]

    async def slow() -> AsyncIterator[str]:
        yield "slow"
        shorten_teardown(lifespan, 0.01)
        shorten_teardown(lifespan, 10)  # later than the new deadline: no effect
        recorder.events.append("waiting")
        await anyio.sleep_forever()

    registry.add("slow", slow)
    lifespan = registry.lifespan()
    with anyio.fail_after(5), pytest.raises(ExceptionGroup) as info:
        async with lifespan:
            pass
    [error] = info.value.exceptions
    assert isinstance(error, StopTimeoutError)
    assert error.shortened_to == 0.01
    assert recorder.events == ["waiting"]


async def test_a_longer_grace_changes_nothing() -> None:
    """A grace longer than the stop_timeout leaves the teardown's limit alone."""
    registry = Registry(stop_timeout=0.01)

    async def stuck() -> AsyncIterator[None]:
        yield None
        await anyio.sleep_forever()

    registry.add("stuck", stuck)
    lifespan = registry.lifespan()
    shorten_teardown(lifespan, 1)  # before the start: nothing to shorten yet

    async def body() -> None:
        async with lifespan:
            shorten_teardown(lifespan, 1)
            shorten_teardown(lifespan, math.inf)

    with anyio.fail_after(5), pytest.raises(ExceptionGroup) as info:
        await body()
    [error] = info.value.exceptions
    assert isinstance(error, StopTimeoutError)
    assert error.shortened_to is None
    assert "hurried" not in str(error)


def test_a_negative_grace_is_refused() -> None:
    """The grace is 0 or more seconds."""
    lifespan = Registry().lifespan()
    with pytest.raises(InvalidOptionError, match="Option 'grace'"):
        shorten_teardown(lifespan, -1)


async def test_a_timeout_after_an_outer_cancellation_is_still_reported(
    concurrency: int | None,
) -> None:
    """A teardown past its stop_timeout in a cancelled body fails; nothing is lost."""
    registry = Registry(stop_timeout=0.01)
    events: list[ResourceEvent] = []

    async def stuck() -> AsyncIterator[None]:
        yield None
        await anyio.sleep_forever()

    registry.add("stuck", stuck)
    with anyio.fail_after(5), anyio.CancelScope() as outer:
        async with registry.lifespan(
            concurrency=concurrency, listeners=[events.append]
        ):
            outer.cancel()
            await anyio.sleep_forever()
    assert outer.cancelled_caught
    assert [(e.kind, type(e.error)) for e in events[2:]] == [
        ("stopping", type(None)),
        ("stop_failed", StopTimeoutError),
    ]
