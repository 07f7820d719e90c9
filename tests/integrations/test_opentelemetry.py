"""lifespan_kit.opentelemetry: the spans and metrics of lifespans, from every place.

Spans go to the SDK's in-memory exporter and metrics to its in-memory reader;
each test renders the spans as a tree of lines, children sorted by name, so
that both run modes give the same tree.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

import anyio
import anyio.lowlevel
import pytest
from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode

import lifespan_kit
import lifespan_kit.opentelemetry
from lifespan_kit import Bundle, Registry, ResourceEvent
from lifespan_kit.errors import BackgroundTaskError, StartupError
from lifespan_kit.opentelemetry import Telemetry
from lifespan_kit.replicas import Locks, MemoryLocks, leadership
from tests.integrations.imports import import_with_blocked

if sys.version_info < (3, 11):  # pragma: no cover  # the backport, on 3.10 only
    from exceptiongroup import ExceptionGroup

pytest_plugins = ["pytester"]

Backend = Literal["asyncio", "trio"]


class Tracking(SpanProcessor):
    """Counts the spans started and ended, to prove that every span ends."""

    def __init__(self) -> None:
        self.started: set[int] = set()
        self.ended: set[int] = set()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.started.add(span.context.span_id)

    def on_end(self, span: ReadableSpan) -> None:
        assert span.context is not None
        self.ended.add(span.context.span_id)


@dataclass
class Collected:
    """A Telemetry listener wired to in-memory exporters."""

    telemetry: Telemetry
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracking: Tracking
    tracer_provider: TracerProvider

    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()

    def tree(self) -> list[str]:
        """Render the spans: one line each, children indented under their parent."""
        spans = self.spans()
        names = {_span_id(span): span.name for span in spans}
        children: dict[int, list[ReadableSpan]] = {}
        roots: list[ReadableSpan] = []
        for span in spans:
            parent = span.parent
            if parent is None or parent.span_id not in names:
                roots.append(span)
            else:
                children.setdefault(parent.span_id, []).append(span)
        lines: list[str] = []

        def walk(span: ReadableSpan, depth: int) -> None:
            lines.append("  " * depth + _describe(span, names))
            for child in sorted(children.get(_span_id(span), []), key=_name):
                walk(child, depth + 1)

        for root in sorted(roots, key=lambda span: span.start_time or 0):
            walk(root, 0)
        return lines

    def span(self, name: str) -> ReadableSpan:
        [found] = [span for span in self.spans() if span.name == name]
        return found

    def points(self, metric: str) -> dict[tuple[tuple[str, object], ...], float]:
        """Each data point of `metric`: its value, or its count for a histogram."""
        data = self.reader.get_metrics_data()
        found: dict[tuple[tuple[str, object], ...], float] = {}
        assert data is not None
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for entry in scope_metrics.metrics:
                    if entry.name != metric:
                        continue
                    for point in entry.data.data_points:
                        key = tuple(sorted((point.attributes or {}).items()))
                        if isinstance(point, HistogramDataPoint):
                            found[key] = point.count
                        else:
                            assert isinstance(point, NumberDataPoint)
                            found[key] = point.value
        return found

    def assert_all_ended(self) -> None:
        assert self.tracking.started
        assert self.tracking.started == self.tracking.ended


def _span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    span_id: int = span.context.span_id
    return span_id


def _name(span: ReadableSpan) -> str:
    return span.name


def _describe(span: ReadableSpan, names: Mapping[int, str]) -> str:
    """`name [ERROR] key=value ... links=... exception=Type`, short and stable."""
    parts = [span.name]
    if span.status.status_code is StatusCode.ERROR:
        parts.append("ERROR")
    for key, value in sorted((span.attributes or {}).items()):
        if key == "lifespan_kit.resource.name":
            assert span.name.endswith(" " + str(value))
            continue
        text = ",".join(value) if isinstance(value, tuple) else str(value)
        parts.append(f"{key.removeprefix('lifespan_kit.')}={text}")
    links = sorted(names.get(link.context.span_id, "?") for link in span.links)
    if links:
        parts.append(f"links={','.join(links)}")
    parts.extend(
        "exception=" + str((event.attributes or {})["exception.type"])
        for event in span.events
    )
    return " ".join(parts)


@pytest.fixture
def otel() -> Iterator[Collected]:
    """A Telemetry listener whose spans and metrics stay in memory."""
    exporter = InMemorySpanExporter()
    tracking = Tracking()
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(tracking)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    telemetry = Telemetry(
        tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    yield Collected(telemetry, exporter, reader, tracking, tracer_provider)
    tracer_provider.shutdown()
    meter_provider.shutdown()


# --- graphs ----------------------------------------------------------------------


def chain_registry() -> Registry:
    """settings -> db -> api, and cache beside them: api is the last to start."""
    registry = Registry()

    @registry.resource
    def settings() -> dict[str, str]:
        return {"dsn": "sqlite://"}

    @registry.resource
    async def db(settings: dict[str, str]) -> AsyncIterator[str]:
        yield f"db({settings['dsn']})"

    @registry.resource
    async def cache() -> AsyncIterator[str]:
        yield "cache"

    @registry.resource
    async def api(db: str) -> AsyncIterator[str]:
        yield f"api({db})"

    return registry


def failing_registry() -> Registry:
    """api fails to start; the rollback then finds db's teardown stuck."""
    registry = Registry()

    @registry.resource
    def settings() -> dict[str, str]:
        return {"dsn": "sqlite://"}

    @registry.resource(stop_timeout=0.02)
    async def db(settings: dict[str, str]) -> AsyncIterator[str]:
        yield "db"
        await anyio.sleep_forever()

    @registry.resource
    async def cache(settings: dict[str, str]) -> AsyncIterator[str]:
        yield "cache"

    @registry.resource
    async def api(db: str, cache: str) -> AsyncIterator[str]:
        if db:  # always: the upstream is down
            raise ConnectionRefusedError("the upstream API refused the connection")
        yield "api"  # pragma: no cover  # never reached: the start fails

    return registry


STARTUP = [
    "lifespan_kit startup critical_path=settings,db,api"
    " resources=settings,db,cache,api",
    "  start api on_critical_path=True resource.dependencies=db links=start db",
    "  start cache on_critical_path=False resource.dependencies=",
    "  start db on_critical_path=True resource.dependencies=settings"
    " links=start settings",
    "  start settings on_critical_path=True resource.dependencies=",
]
TEARDOWN = [
    "lifespan_kit teardown",
    "  stop api resource.dependencies=db",
    "  stop cache resource.dependencies=",
    "  stop db resource.dependencies=settings links=stop api",
    "  stop settings resource.dependencies= links=stop db",
]


# --- traces ------------------------------------------------------------------------


async def test_a_startup_and_a_teardown_are_one_trace_each(
    otel: Collected, concurrency: int | None
) -> None:
    """A root span per phase, a child per resource, the critical path marked."""
    registry = chain_registry()
    async with registry.lifespan(concurrency=concurrency, listeners=[otel.telemetry]):
        assert otel.tree() == STARTUP
    assert otel.tree() == STARTUP + TEARDOWN
    startup, teardown = (
        otel.span("lifespan_kit startup"),
        otel.span("lifespan_kit teardown"),
    )
    assert startup.context is not None
    assert teardown.context is not None
    assert startup.context.trace_id != teardown.context.trace_id
    otel.assert_all_ended()


async def test_a_failed_start_traces_its_rollback_and_a_stop_timeout(
    otel: Collected, concurrency: int | None
) -> None:
    """The startup's trace holds the failed start, the rollback and its timeout."""
    registry = failing_registry()
    with pytest.raises(ExceptionGroup) as info:
        async with registry.lifespan(
            concurrency=concurrency, listeners=[otel.telemetry]
        ):
            pass  # pragma: no cover  # never entered: the startup fails
    assert otel.tree() == [
        "lifespan_kit startup ERROR error.type=ExceptionGroup"
        " resources=settings,db,cache,api exception=ExceptionGroup",
        "  start api ERROR error.type=lifespan_kit.errors.StartupError"
        " error.code=startup-failed resource.dependencies=db,cache"
        " links=start cache,start db exception=lifespan_kit.errors.StartupError",
        "  start cache resource.dependencies=settings links=start settings",
        "  start db resource.dependencies=settings links=start settings",
        "  start settings resource.dependencies=",
        "  stop cache resource.dependencies=settings",
        "  stop db ERROR error.type=lifespan_kit.errors.StopTimeoutError"
        " error.code=stop-timeout resource.dependencies=settings"
        " exception=lifespan_kit.errors.StopTimeoutError",
        "  stop settings resource.dependencies= links=stop cache,stop db",
    ]
    assert otel.span("start api").status.description == (
        "Resource 'api' failed during startup."
    )
    assert (
        otel.span("lifespan_kit startup").status.description
        == str(info.value).partition("\n")[0]
    )
    otel.assert_all_ended()


async def test_a_start_cancelled_by_a_failure_is_a_failed_span(otel: Collected) -> None:
    """A start cut short because another one failed is marked start-cancelled."""
    entered = anyio.Event()
    registry = Registry()

    @registry.resource
    async def slow() -> AsyncIterator[None]:
        entered.set()
        await anyio.sleep_forever()
        yield  # pragma: no cover  # never reached: cancelled while starting

    @registry.resource
    async def bad() -> AsyncIterator[None]:
        await entered.wait()
        if entered.is_set():  # always: it fails once slow is starting
            raise OSError("no disk")
        yield  # pragma: no cover  # never reached: the start fails

    with anyio.fail_after(5), pytest.raises(StartupError):
        async with registry.lifespan(listeners=[otel.telemetry]):
            pass  # pragma: no cover  # never entered: the startup fails
    assert otel.tree()[1:] == [
        "  start bad ERROR error.type=lifespan_kit.errors.StartupError"
        " error.code=startup-failed resource.dependencies="
        " exception=lifespan_kit.errors.StartupError",
        "  start slow ERROR error.type=lifespan_kit.errors.StartCancelledError"
        " error.code=start-cancelled resource.dependencies="
        " exception=lifespan_kit.errors.StartCancelledError",
    ]
    otel.assert_all_ended()


async def test_spans_made_while_starting_or_stopping_are_its_children(
    otel: Collected, concurrency: int | None, caplog: pytest.LogCaptureFixture
) -> None:
    """A factory's own spans nest under its start and stop; a background task's not."""
    tracer = otel.tracer_provider.get_tracer("the application")
    beat = anyio.Event()
    registry = Registry()

    @registry.resource
    async def db() -> AsyncIterator[str]:
        with tracer.start_as_current_span("connect"):
            await anyio.lowlevel.checkpoint()
        yield "db"
        with tracer.start_as_current_span("close"):
            await anyio.lowlevel.checkpoint()

    @registry.background
    async def heartbeat(db: str) -> None:
        with tracer.start_as_current_span("beat"):
            beat.set()
        await anyio.sleep_forever()

    with caplog.at_level(logging.WARNING):
        async with registry.lifespan(
            concurrency=concurrency, listeners=[otel.telemetry]
        ):
            await beat.wait()
    assert otel.tree() == [
        "lifespan_kit startup critical_path=db,heartbeat resources=db,heartbeat",
        "  start db on_critical_path=True resource.dependencies=",
        "    connect",
        "  start heartbeat on_critical_path=True resource.dependencies=db"
        " links=start db",
        "beat",
        "lifespan_kit teardown",
        "  stop db resource.dependencies= links=stop heartbeat",
        "    close",
        "  stop heartbeat resource.dependencies=db",
    ]
    # Every context made current was restored, in the task that made it.
    assert caplog.records == []
    assert trace.get_current_span() is trace.INVALID_SPAN


async def test_health_checks_make_a_span_each(otel: Collected) -> None:
    """Each call of health() is a span with one child per check, failures marked."""

    def ping(value: str) -> None:
        raise ConnectionResetError("the server closed the connection")

    registry = Registry()
    registry.add("db", "db", health=ping)
    registry.add("cache", "cache", health=lambda value: value == "cache")
    lifespan = registry.lifespan(listeners=[otel.telemetry])
    async with lifespan:
        otel.exporter.clear()
        await lifespan.health()
        assert otel.tree() == [
            "lifespan_kit health ERROR error.type=unhealthy health.status=unhealthy",
            "  check cache health.status=healthy",
            "  check db ERROR error.type=unhealthy health.status=unhealthy",
        ]
    check = otel.span("check db")
    assert check.status.description == (
        "ConnectionResetError: the server closed the connection"
    )
    root = otel.span("lifespan_kit health")
    assert root.status.description == "unhealthy: db"
    assert root.start_time is not None
    assert root.end_time is not None
    assert check.start_time is not None
    assert check.end_time is not None
    assert root.start_time <= check.start_time <= check.end_time <= root.end_time


async def test_a_failure_while_running_is_a_span_linked_to_the_startup(
    otel: Collected,
) -> None:
    """A background task that fails makes its own trace, linked to the startup."""
    registry = Registry()

    @registry.background
    async def consumer() -> None:
        raise OSError("queue gone")

    lifespan = registry.lifespan(listeners=[otel.telemetry])
    with pytest.raises(BackgroundTaskError):
        async with lifespan:
            await lifespan.wait_failed()
    assert otel.tree() == [
        "lifespan_kit startup critical_path=consumer resources=consumer",
        "  start consumer on_critical_path=True resource.dependencies=",
        "failure consumer ERROR error.type=lifespan_kit.errors.BackgroundTaskError"
        " error.code=background-failed links=lifespan_kit startup"
        " exception=lifespan_kit.errors.BackgroundTaskError",
        "lifespan_kit teardown",
        "  stop consumer resource.dependencies=",
    ]
    otel.assert_all_ended()


async def test_a_status_reported_while_running_is_a_span_linked_to_the_startup(
    otel: Collected,
) -> None:
    """A replica that leads: a "status" event becomes an instant span of its own."""
    registry = Registry()
    registry.add("locks", MemoryLocks())
    leading = anyio.Event()

    @registry.background
    async def scheduler(locks: Locks) -> None:
        async with leadership(locks, "scheduler", holder="a"):
            leading.set()
            await anyio.sleep_forever()

    async with registry.lifespan(listeners=[otel.telemetry]):
        with anyio.fail_after(5):
            await leading.wait()
    status = [line for line in otel.tree() if line.startswith("status")]
    assert status == [
        f"status scheduler resource.status={detail} links=lifespan_kit startup"
        for detail in (
            "standby for 'scheduler'",
            "leading 'scheduler' (token 1)",
            "stepped down 'scheduler'",
        )
    ]
    otel.assert_all_ended()


async def test_lifespans_running_at_once_have_their_own_traces(
    otel: Collected,
) -> None:
    """Two runs of one registry, at the same time, do not mix their spans."""
    registry = chain_registry()
    async with (
        registry.lifespan(listeners=[otel.telemetry]),
        registry.lifespan(listeners=[otel.telemetry]),
    ):
        pass
    tree = otel.tree()
    assert tree.count(STARTUP[0]) == 2
    assert tree.count("lifespan_kit teardown") == 2
    assert sorted(tree) == sorted((STARTUP + TEARDOWN) * 2)
    otel.assert_all_ended()


# --- metrics -----------------------------------------------------------------------


def _resource_count(otel: Collected) -> dict[tuple[str, str], float]:
    return {
        (str(dict(key)["lifespan_kit.resource.name"]), str(dict(key)[STATE])): value
        for key, value in otel.points("lifespan_kit.resource.count").items()
    }


STATE = "lifespan_kit.resource.state"
NAME = "lifespan_kit.resource.name"
ERROR_TYPE = "error.type"


async def test_metrics_count_durations_states_and_outcomes(
    otel: Collected, concurrency: int | None
) -> None:
    """Durations per resource and phase, states while running, every outcome."""
    registry = chain_registry()
    lifespan = registry.lifespan(concurrency=concurrency, listeners=[otel.telemetry])
    async with lifespan:
        running = {
            (name, state): value
            for (name, state), value in _resource_count(otel).items()
            if value
        }
        assert running == {
            (name, "running"): 1 for name in ("settings", "db", "cache", "api")
        }
    assert set(_resource_count(otel).values()) == {0}
    names = ["api", "cache", "db", "settings"]
    for metric in (
        "lifespan_kit.resource.start.duration",
        "lifespan_kit.resource.stop.duration",
    ):
        assert otel.points(metric) == {((NAME, name),): 1 for name in names}
    assert otel.points("lifespan_kit.startup.duration") == {(): 1}
    assert otel.points("lifespan_kit.teardown.duration") == {(): 1}
    with pytest.raises(ExceptionGroup):
        async with failing_registry().lifespan(listeners=[otel.telemetry]):
            pass  # pragma: no cover  # never entered: the startup fails
    starts = otel.points("lifespan_kit.resource.start.duration")
    assert starts[((ERROR_TYPE, "lifespan_kit.errors.StartupError"), (NAME, "api"))]
    stops = otel.points("lifespan_kit.resource.stop.duration")
    timeout = ((ERROR_TYPE, "lifespan_kit.errors.StopTimeoutError"), (NAME, "db"))
    assert stops[timeout] == 1
    assert otel.points("lifespan_kit.startup.duration") == {
        (): 1,
        ((ERROR_TYPE, "ExceptionGroup"),): 1,
    }
    assert set(_resource_count(otel).values()) == {0}


async def test_metrics_count_health_checks_and_failures(otel: Collected) -> None:
    """Health checks are counted by outcome, failures while running by type."""
    registry = Registry()
    registry.add("db", "db", health=lambda value: False)

    @registry.background
    async def consumer() -> None:
        raise OSError("queue gone")

    lifespan = registry.lifespan(listeners=[otel.telemetry])
    failed: dict[tuple[str, str], float] = {}

    async def check_twice_then_fail() -> None:
        async with lifespan:
            await lifespan.health()
            await lifespan.health()
            await lifespan.wait_failed()
            failed.update(_resource_count(otel))

    with pytest.raises(BackgroundTaskError):
        await check_twice_then_fail()
    assert failed[("consumer", "failed")] == 1
    assert otel.points("lifespan_kit.health_checks") == {
        (("lifespan_kit.health.status", "unhealthy"), (NAME, "db")): 2
    }
    assert otel.points("lifespan_kit.resource.failures") == {
        ((ERROR_TYPE, "lifespan_kit.errors.BackgroundTaskError"), (NAME, "consumer")): 1
    }
    assert set(_resource_count(otel).values()) == {0}


# --- never changes what the lifespan does ------------------------------------------


class RaisingProcessor(SpanProcessor):
    """A span processor that fails when a span starts, or when it ends."""

    def __init__(self, when: Literal["start", "end"]) -> None:
        self.when = when

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self.when == "start":
            raise RuntimeError("the processor is broken")

    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("the exporter is down")


class RaisingExporter(InMemorySpanExporter):
    """An exporter that fails on every export."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        raise RuntimeError("the collector is unreachable")


class RaisingTracerProvider(trace.TracerProvider):
    """A tracer provider whose tracers raise on every call."""

    def get_tracer(self, *args: object, **kwargs: object) -> trace.Tracer:
        return RaisingTracer()


class RaisingTracer(trace.Tracer):
    def start_span(self, *args: object, **kwargs: object) -> trace.Span:
        raise RuntimeError("the tracer is broken")

    def start_as_current_span(  # type: ignore[override]  # never called
        self, *args: object, **kwargs: object
    ) -> Iterator[trace.Span]:
        raise NotImplementedError  # pragma: no cover


class RaisingMeterProvider(metrics.MeterProvider):
    """A meter provider whose instruments raise when they record."""

    def get_meter(self, *args: object, **kwargs: object) -> metrics.Meter:
        return RaisingMeter("raising")


class RaisingMeter(metrics.NoOpMeter):
    def create_histogram(self, *args: object, **kwargs: object) -> metrics.Histogram:
        return RaisingHistogram("raising")


class RaisingHistogram(metrics.NoOpHistogram):
    def record(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("the meter is broken")


def _with_processor(processor: SpanProcessor) -> Telemetry:
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    return Telemetry(tracer_provider=provider)


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(
            lambda: _with_processor(RaisingProcessor("start")), id="processor-start"
        ),
        pytest.param(
            lambda: _with_processor(RaisingProcessor("end")), id="processor-end"
        ),
        pytest.param(
            lambda: _with_processor(SimpleSpanProcessor(RaisingExporter())),
            id="exporter",
        ),
        pytest.param(
            lambda: Telemetry(tracer_provider=RaisingTracerProvider()), id="tracer"
        ),
        pytest.param(
            lambda: Telemetry(meter_provider=RaisingMeterProvider()), id="meter"
        ),
    ],
)
async def test_a_broken_tracer_or_exporter_changes_nothing(
    broken: object, concurrency: int | None, caplog: pytest.LogCaptureFixture
) -> None:
    """Startup, rollback and teardown run as without it; its errors are logged."""
    assert callable(broken)

    async def run(listeners: Sequence[object]) -> list[str]:
        events: list[str] = []
        registry = failing_registry()
        registry.add_listener(lambda e: events.append(f"{e.kind} {e.resource_name}"))
        for listener in listeners:
            assert callable(listener)
            registry.add_listener(listener)
        with pytest.raises(ExceptionGroup) as info:
            async with registry.lifespan(concurrency=concurrency):
                pass  # pragma: no cover  # never entered: the startup fails
        events.append(f"raised {[type(e).__name__ for e in info.value.exceptions]}")
        chain = chain_registry()
        chain.add_listener(lambda e: events.append(f"{e.kind} {e.resource_name}"))
        for listener in listeners:
            assert callable(listener)
            chain.add_listener(listener)
        lifespan = chain.lifespan(concurrency=concurrency)
        async with lifespan as resources:
            events.append(f"running with {sorted(resources)}")
            await lifespan.health()
        return events

    expected = await run([])
    with caplog.at_level(logging.ERROR, logger="lifespan_kit"):
        assert await run([broken()]) == expected
    # Logged by the lifespan (a listener that raised) or by the SDK (an export).
    assert [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_without_an_sdk_nothing_is_recorded_and_nothing_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the API's no-op providers, the listener runs and records nothing."""
    telemetry = Telemetry(
        tracer_provider=trace.NoOpTracerProvider(),
        meter_provider=metrics.NoOpMeterProvider(),
    )
    with caplog.at_level(logging.DEBUG, logger="lifespan_kit"):
        with pytest.raises(ExceptionGroup):
            async with failing_registry().lifespan(listeners=[telemetry]):
                pass  # pragma: no cover  # never entered: the startup fails
        lifespan = chain_registry().lifespan(listeners=[telemetry])
        async with lifespan:
            await lifespan.health()
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_events_from_an_unknown_run_still_make_spans(otel: Collected) -> None:
    """Events without their lifespan's (sent by hand) make spans without a root."""
    telemetry = otel.telemetry
    telemetry(ResourceEvent("db", "starting", run_id=-1))
    telemetry(ResourceEvent("db", "started", duration=0.5, run_id=-1))
    telemetry(ResourceEvent("db", "stopping", run_id=-1))
    telemetry(ResourceEvent("db", "stop_failed", duration=0.1, run_id=-1))
    telemetry(ResourceEvent("db", "failed", run_id=-1))
    assert otel.tree() == [
        "start db resource.dependencies=",
        "stop db ERROR error.type=_OTHER resource.dependencies=",
        "failure db ERROR error.type=_OTHER",
    ]
    otel.assert_all_ended()


def test_the_instrumentation_scope_is_lifespan_kit(
    otel: Collected, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spans name the library and its version; a copy not installed has none."""
    otel.telemetry(ResourceEvent("db", "starting", run_id=-1))
    otel.telemetry(ResourceEvent("db", "started", duration=0.5, run_id=-1))
    scope = otel.span("start db").instrumentation_scope
    assert scope is not None
    assert scope.name == "lifespan_kit"
    assert scope.version == metadata.version("lifespan_kit")

    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    assert lifespan_kit.opentelemetry._installed_version() is None  # pyright: ignore[reportPrivateUsage]


# --- the other places it runs ------------------------------------------------------


class ChainResources(Bundle):
    """What the worker of the runner test uses."""

    api: str
    cache: str


def test_the_worker_runner_traces_its_startup_and_teardown(
    otel: Collected, anyio_backend: Backend
) -> None:
    """`lifespan_kit.run(..., listeners=[...])` makes the same two traces."""
    seen: list[str] = []

    async def main(resources: ChainResources) -> None:
        seen.append(resources.api)

    status = lifespan_kit.run(
        main, chain_registry(), backend=anyio_backend, listeners=[otel.telemetry]
    )
    assert (status, seen) == (0, ["api(db(sqlite://))"])
    assert otel.tree() == STARTUP + TEARDOWN
    otel.assert_all_ended()


PLUGIN_APP = """
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from lifespan_kit import Registry
from lifespan_kit.opentelemetry import Telemetry

LOG = Path(__file__).with_name("spans.log")


class FileExporter(SpanExporter):
    def export(self, spans):
        with LOG.open("a") as file:
            for span in spans:
                parent = span.parent.span_id if span.parent else 0
                file.write(f"{span.context.span_id} {parent} {span.name}\\n")
        return SpanExportResult.SUCCESS


provider = TracerProvider(shutdown_on_exit=False)
provider.add_span_processor(SimpleSpanProcessor(FileExporter()))
registry = Registry()
registry.add_listener(Telemetry(tracer_provider=provider))


@registry.resource
def settings() -> Iterator[str]:
    yield "settings"


@registry.resource
async def db(settings: str) -> AsyncIterator[str]:
    yield f"db({settings})"
"""

PLUGIN_TESTS = """
import pytest


@pytest.fixture(params=["asyncio", "trio"], scope="module")
def anyio_backend(request):
    return request.param


@pytest.mark.anyio
async def test_db(db):
    assert db == "db(settings)"
"""


def test_the_pytest_plugin_traces_each_resource_it_starts(
    pytester: pytest.Pytester,
) -> None:
    """A registry listener sees the plugin's starts and stops, one trace each."""
    pytester.makepyfile(sample_app=PLUGIN_APP, test_sample=PLUGIN_TESTS)
    pytester.makeini(
        "[pytest]\npythonpath = .\nlifespan_kit_registry = sample_app:registry\n"
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "anyio", "-p", "no:asyncio"
    )
    result.assert_outcomes(passed=2)
    lines = Path(pytester.path, "spans.log").read_text().splitlines()
    spans = {span_id: (parent, name) for span_id, parent, name in map(_split, lines)}
    pairs = sorted(
        f"{spans[parent][1]} > {name}" if parent in spans else name
        for parent, name in spans.values()
    )
    # One run per backend (asyncio, trio), each resource in a lifespan of its own.
    assert pairs == sorted(
        [
            "lifespan_kit startup",
            "lifespan_kit startup > start settings",
            "lifespan_kit startup",
            "lifespan_kit startup > start db",
            "lifespan_kit teardown",
            "lifespan_kit teardown > stop db",
            "lifespan_kit teardown",
            "lifespan_kit teardown > stop settings",
        ]
        * 2
    )


def _split(line: str) -> tuple[str, str, str]:
    span_id, parent, name = line.split(" ", 2)
    return span_id, parent, name


# --- the module ----------------------------------------------------------------------


def test_import_without_opentelemetry_names_the_extra() -> None:
    """Without the OpenTelemetry API, importing the module says which extra to add."""
    result = import_with_blocked("opentelemetry", "lifespan_kit.opentelemetry")
    assert result.returncode == 1
    assert 'pip install "lifespan_kit[opentelemetry]"' in result.stderr
    assert "ImportError" in result.stderr


def test_all_lists_the_public_names() -> None:
    """__all__ lists the one public class."""
    assert lifespan_kit.opentelemetry.__all__ == ["Telemetry"]
