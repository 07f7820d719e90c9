"""Lifespan listeners: the startup, teardown and health checks as events; log fields."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator

import anyio
import pytest

from lifespan_kit import (
    LifespanEvent,
    LifespanListener,
    Listener,
    Registry,
    ResourceEvent,
)
from lifespan_kit.errors import (
    BackgroundTaskError,
    ResourceFailedError,
    ShutdownError,
    StartupError,
    StopTimeoutError,
)
from tests.fakes import Recorder

if sys.version_info < (3, 11):  # pragma: no cover  # the backport, on 3.10 only
    from exceptiongroup import ExceptionGroup

LOG_FIELDS = (
    "lifespan_kit_resource",
    "lifespan_kit_event",
    "lifespan_kit_duration",
    "lifespan_kit_error_code",
)


class Heard:
    """A lifespan listener that records every event it hears, in order."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.resource_events: list[ResourceEvent] = []
        self.lifespan_events: list[LifespanEvent] = []

    def __call__(self, event: ResourceEvent) -> None:
        self.resource_events.append(event)
        self.lines.append(f"{event.kind} {event.resource_name}")

    def on_lifespan_event(self, event: LifespanEvent) -> None:
        self.lifespan_events.append(event)
        self.lines.append(f"lifespan {event.kind}")

    def last(self, kind: str) -> LifespanEvent:
        return [e for e in self.lifespan_events if e.kind == kind][-1]


async def test_the_startup_and_teardown_enclose_the_resource_events(
    concurrency: int | None,
) -> None:
    """Lifespan events open and close the startup and the teardown around the rest."""
    heard = Heard()
    registry = Registry()
    registry.add("settings", {"debug": False})
    registry.add("db", Recorder().generator("db"))
    listener: LifespanListener = heard
    async with registry.lifespan(concurrency=concurrency, listeners=[listener]):
        pass
    assert heard.lines == [
        "lifespan starting",
        "starting db",
        "started db",
        "lifespan started",
        "lifespan stopping",
        "stopping db",
        "stopped db",
        "lifespan stopped",
    ]
    starting, started, stopping, stopped = heard.lifespan_events
    assert [r.name for r in starting.resources] == ["settings", "db"]
    assert started.report is not None
    assert started.report.critical_path == ("db",)
    assert starting.duration is None
    assert stopping.duration is None
    assert started.duration is not None
    assert stopped.duration is not None
    assert stopped.error is None


async def test_a_failed_startup_ends_after_its_rollback(
    concurrency: int | None,
) -> None:
    """ "start_failed" comes after the rollback, with the error the startup raises."""
    heard = Heard()
    registry = Registry()
    registry.add("ok", Recorder().generator("ok"))
    registry.add("bad", Recorder().generator("bad", fail_start=OSError("down")))
    with pytest.raises(StartupError) as info:
        async with registry.lifespan(concurrency=concurrency, listeners=[heard]):
            pass  # pragma: no cover  # never entered: the startup fails
    assert heard.lines == [
        "lifespan starting",
        "starting ok",
        "started ok",
        "starting bad",
        "start_failed bad",
        "stopping ok",
        "stopped ok",
        "lifespan start_failed",
    ]
    assert heard.last("start_failed").error is info.value
    assert heard.last("start_failed").duration is not None


async def test_a_cancelled_startup_ends_with_start_failed() -> None:
    """A startup cancelled from outside is closed with the cancellation."""
    heard = Heard()
    entered = anyio.Event()

    async def hang() -> AsyncIterator[None]:
        entered.set()
        await anyio.sleep_forever()
        yield  # pragma: no cover  # never reached: cancelled while starting

    registry = Registry()
    registry.add("hang", hang)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def enter() -> None:
                async with registry.lifespan(listeners=[heard]):
                    pass  # pragma: no cover  # never entered: the startup fails

            tg.start_soon(enter)
            await entered.wait()
            tg.cancel_scope.cancel()
    assert heard.lines[-1] == "lifespan start_failed"
    assert isinstance(heard.last("start_failed").error, anyio.get_cancelled_exc_class())


@pytest.mark.parametrize("failing", [1, 2], ids=["one-failure", "two-failures"])
async def test_a_failed_teardown_ends_with_stop_failed(failing: int) -> None:
    """ "stop_failed" carries the failed teardown, or a group of them."""
    heard = Heard()
    registry = Registry()
    for index in range(failing):
        name = f"bad{index}"
        registry.add(name, Recorder().generator(name, fail_stop=OSError("disk")))
    with pytest.raises(ExceptionGroup):
        async with registry.lifespan(listeners=[heard]):
            pass
    error = heard.last("stop_failed").error
    if failing == 1:
        assert isinstance(error, ShutdownError)
    else:
        assert isinstance(error, ExceptionGroup)
        assert len(error.exceptions) == 2
    assert heard.lines[-1] == "lifespan stop_failed"


async def test_each_health_check_round_ends_with_checked() -> None:
    """A "checked" event carries the report `health()` returns."""
    heard = Heard()
    registry = Registry()
    registry.add("db", 1, health=lambda value: value == 1)
    lifespan = registry.lifespan(listeners=[heard])
    async with lifespan:
        report = await lifespan.health()
    checked = heard.last("checked")
    assert checked.health is report
    assert checked.duration is not None
    assert heard.lines[1:3] == ["lifespan started", "lifespan checked"]


async def test_events_of_one_run_share_an_id_that_no_other_run_has() -> None:
    """Each run has its own id, also for lifespans running at once or entered again."""
    heard = Heard()
    registry = Registry()
    registry.add("db", Recorder().generator("db"))
    first = registry.lifespan(listeners=[heard])
    async with first, registry.lifespan(listeners=[heard]):
        pass
    async with first:
        pass
    runs = [e.run_id for e in heard.lifespan_events]
    resource_runs = [e.run_id for e in heard.resource_events]
    assert len(set(runs)) == 3
    assert set(resource_runs) == set(runs)
    for run_id in runs:
        lines = [e.kind for e in heard.lifespan_events if e.run_id == run_id]
        assert lines == ["starting", "started", "stopping", "stopped"]
        kinds = [e.kind for e in heard.resource_events if e.run_id == run_id]
        assert kinds == ["starting", "started", "stopping", "stopped"]


async def test_a_plain_listener_hears_no_lifespan_event() -> None:
    """Only listeners with `on_lifespan_event` hear about the lifespan as a whole."""
    heard: list[ResourceEvent] = []
    plain: Listener = heard.append
    registry = Registry()
    registry.add("db", Recorder().generator("db"))
    async with registry.lifespan(listeners=[plain]):
        pass
    assert [e.kind for e in heard] == ["starting", "started", "stopping", "stopped"]


async def test_a_failing_lifespan_listener_is_logged_and_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A lifespan listener that raises is logged; the lifespan carries on."""

    class Broken(Heard):
        def on_lifespan_event(self, event: LifespanEvent) -> None:
            raise RuntimeError("listener bug")

    registry = Registry()
    registry.add("db", Recorder().generator("db"))
    with caplog.at_level(logging.ERROR, logger="lifespan_kit"):
        async with registry.lifespan(listeners=[Broken()]) as resources:
            assert resources["db"] == "db"
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 4
    assert messages[0].endswith("failed on starting of the lifespan.")
    assert caplog.records[0].__dict__["lifespan_kit_event"] == "listener_failed"


# --- structured log fields -----------------------------------------------------


async def _stop_timeout() -> None:
    registry = Registry()

    async def stuck() -> AsyncIterator[None]:
        yield
        await anyio.sleep_forever()

    registry.add("stuck", stuck, stop_timeout=0.01)
    with pytest.raises(ExceptionGroup):
        async with registry.lifespan():
            pass


async def _background_crash() -> None:
    registry = Registry()

    @registry.background
    async def consumer() -> None:
        raise OSError("queue gone")

    lifespan = registry.lifespan()
    with pytest.raises(BackgroundTaskError):
        async with lifespan:
            await lifespan.wait_failed()


async def _task_group_crash() -> None:
    registry = Registry()

    async def pool() -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_crash)
            yield

    registry.add("pool", pool)
    lifespan = registry.lifespan()
    with pytest.raises(ResourceFailedError, match="failed while the lifespan"):
        async with lifespan:
            await lifespan.wait_failed()


async def _crash() -> None:
    raise OSError("connection reset")


async def _failing_listener() -> None:
    registry = Registry()
    registry.add("db", Recorder().generator("db"))

    def broken(event: ResourceEvent) -> None:
        raise RuntimeError("listener bug")

    async with registry.lifespan(listeners=[broken]):
        pass


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        pytest.param(
            _stop_timeout, ("stuck", "stop_failed", "stop-timeout"), id="stop-timeout"
        ),
        pytest.param(
            _background_crash,
            ("consumer", "failed", "background-failed"),
            id="background-crash",
        ),
        pytest.param(
            _task_group_crash,
            ("pool", "stop_failed", "resource-failed"),
            id="task-group-crash",
        ),
        pytest.param(
            _failing_listener, ("db", "listener_failed", None), id="failing-listener"
        ),
    ],
)
async def test_every_log_record_carries_the_structured_fields(
    caplog: pytest.LogCaptureFixture,
    scenario: object,
    expected: tuple[str, str, str | None],
) -> None:
    """Each record has the resource, the event, the duration and the error code."""
    assert callable(scenario)
    with caplog.at_level(logging.DEBUG, logger="lifespan_kit"):
        await scenario()
    records = [r for r in caplog.records if r.name == "lifespan_kit"]
    assert records
    for record in records:
        assert all(name in record.__dict__ for name in LOG_FIELDS), record
    fields = {
        tuple(record.__dict__[name] for name in LOG_FIELDS[:2] + LOG_FIELDS[3:])
        for record in records
    }
    assert expected in fields
    timed = [r for r in records if r.__dict__["lifespan_kit_event"] == "started"]
    assert all(isinstance(r.__dict__["lifespan_kit_duration"], float) for r in timed)


async def test_a_stop_timeout_log_record_names_its_code(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The WARNING of a teardown that timed out carries the error code."""
    with caplog.at_level(logging.WARNING, logger="lifespan_kit"):
        await _stop_timeout()
    [record] = caplog.records
    assert record.__dict__["lifespan_kit_error_code"] == StopTimeoutError.code
    assert record.__dict__["lifespan_kit_resource"] == "stuck"
