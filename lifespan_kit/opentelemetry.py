"""Trace and measure every start, stop and health check with OpenTelemetry.

```python
from lifespan_kit.opentelemetry import Telemetry

registry.add_listener(Telemetry())
```

A [Telemetry][lifespan_kit.opentelemetry.Telemetry] listener makes a trace of
each startup (a root span, a child span per resource, the critical path
marked) and of each teardown, spans for health checks, and metrics: start and
stop durations, resource states, health-check outcomes and failures. It uses
the OpenTelemetry API only: with no SDK configured, it records nothing, and
the core of lifespan_kit never imports OpenTelemetry. The docs page
"OpenTelemetry" lists every span, attribute and metric.

Added in 0.1.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextvars import Token
from dataclasses import dataclass, field
from importlib import metadata
from typing import Final, final

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, trace
    from opentelemetry.context import Context
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.trace import Link, Span, SpanContext, Status, StatusCode
except ImportError as _missing:  # pragma: no cover  # checked in a subprocess
    _MESSAGE = (
        "lifespan_kit.opentelemetry needs the OpenTelemetry API, which is not "
        'installed; install it with: pip install "lifespan_kit[opentelemetry]"'
    )
    raise ImportError(_MESSAGE) from _missing

from lifespan_kit import LifespanEvent, ResourceEvent
from lifespan_kit.errors import LifespanKitError

__all__ = ["Telemetry"]

# The instrumentation scope of the tracer and the meter.
_SCOPE: Final = "lifespan_kit"

# Attribute names: OpenTelemetry's own where one applies, else under lifespan_kit.
_ERROR_TYPE: Final = "error.type"
_ERROR_CODE: Final = "lifespan_kit.error.code"
_RESOURCE_NAME: Final = "lifespan_kit.resource.name"
_DEPENDENCIES: Final = "lifespan_kit.resource.dependencies"
_RESOURCE_STATE: Final = "lifespan_kit.resource.state"
_RESOURCES: Final = "lifespan_kit.resources"
_CRITICAL_PATH: Final = "lifespan_kit.critical_path"
_ON_CRITICAL_PATH: Final = "lifespan_kit.on_critical_path"
_HEALTH_STATUS: Final = "lifespan_kit.health.status"
_STATUS: Final = "lifespan_kit.resource.status"

# Seconds: from a cached client (1 ms) to a slow migration (60 s).
_BUCKETS: Final = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


def _installed_version() -> str | None:
    """Return the installed version of lifespan_kit, if it is installed."""
    try:
        return metadata.version("lifespan_kit")
    except metadata.PackageNotFoundError:
        return None


@dataclass(eq=False, slots=True)
class _Step:
    """One start or stop of one resource: its span, and the context it made current."""

    span: Span
    began: float
    token: Token[Context] | None
    # When a start that succeeded ended: its span ends with the startup, so
    # that it can say whether it is on the critical path.
    ended: int | None = None


@dataclass(eq=False, slots=True)
class _Run:
    """What one run of a lifespan has open: its root span and resource spans."""

    dependencies: Mapping[str, Sequence[str]]
    dependents: Mapping[str, Sequence[str]]
    background: frozenset[str] = frozenset()
    root: Span | None = None
    parent: Context | None = None
    startup: SpanContext | None = None
    starts: dict[str, _Step] = field(default_factory=dict[str, _Step])
    stops: dict[str, _Step] = field(default_factory=dict[str, _Step])
    states: dict[str, str] = field(default_factory=dict[str, str])


@final
class Telemetry:
    """A listener that traces and measures lifespans with OpenTelemetry.

    Add it to a registry (``registry.add_listener(Telemetry())``), which also
    covers the pytest plugin, or pass it to one lifespan
    (``listeners=[Telemetry()]`` on
    [Registry.lifespan][lifespan_kit.Registry.lifespan],
    [lifespan_kit.run][lifespan_kit.run] or
    [lifespan_kit.starlette.lifespan][lifespan_kit.starlette.lifespan]).
    It makes:

    - a ``lifespan_kit startup`` span with a ``start <name>`` child span per
      resource (linked to its dependencies' start spans), and the stops of a
      rollback when a start fails; the critical path is marked on the root
      and on the start spans on it;
    - a ``lifespan_kit teardown`` span with a ``stop <name>`` child span per
      resource (linked to the stop spans of the resources it waited for);
    - a ``lifespan_kit health`` span with a ``check <name>`` child span per
      health check, at each call of
      [Lifespan.health][lifespan_kit.Lifespan.health];
    - a ``failure <name>`` span when a resource fails while running;
    - the metrics ``lifespan_kit.startup.duration``,
      ``lifespan_kit.teardown.duration``,
      ``lifespan_kit.resource.start.duration``,
      ``lifespan_kit.resource.stop.duration``, ``lifespan_kit.resource.count``,
      ``lifespan_kit.health_checks`` and ``lifespan_kit.resource.failures``.

    A failure sets the span's status to error, its ``error.type`` attribute
    and an ``exception`` event. While a resource starts or stops, its span is
    the current span of the task that runs it, so the spans its factory makes
    (a database driver's "connect") are its children; a background task (see
    [Registry.background][lifespan_kit.Registry.background]) is started
    outside it, so that its spans do not join the startup's trace. A tracer,
    meter or exporter that raises is logged and never changes what the
    lifespan does.

    Args:
        tracer_provider: Where the spans go; the global tracer provider by
            default (set later, it is still used).
        meter_provider: Where the metrics go; the global meter provider by
            default.

    Example:
        ```python
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )

        from lifespan_kit.opentelemetry import Telemetry

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        registry.add_listener(Telemetry(tracer_provider=provider))
        ```

    Added in 0.1.
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        version = _installed_version()
        self._tracer = trace.get_tracer(_SCOPE, version, tracer_provider)
        meter = metrics.get_meter(_SCOPE, version or "", meter_provider)
        self._startup_duration = meter.create_histogram(
            "lifespan_kit.startup.duration",
            unit="s",
            description="How long the startup of a lifespan took.",
            explicit_bucket_boundaries_advisory=_BUCKETS,
        )
        self._teardown_duration = meter.create_histogram(
            "lifespan_kit.teardown.duration",
            unit="s",
            description="How long the teardown of a lifespan took.",
            explicit_bucket_boundaries_advisory=_BUCKETS,
        )
        self._start_duration = meter.create_histogram(
            "lifespan_kit.resource.start.duration",
            unit="s",
            description="How long the start of a resource took.",
            explicit_bucket_boundaries_advisory=_BUCKETS,
        )
        self._stop_duration = meter.create_histogram(
            "lifespan_kit.resource.stop.duration",
            unit="s",
            description="How long the stop of a resource took.",
            explicit_bucket_boundaries_advisory=_BUCKETS,
        )
        # Observed when the metrics are collected: a start or stop only
        # updates a dictionary.
        meter.create_observable_up_down_counter(
            "lifespan_kit.resource.count",
            callbacks=[self._observe_states],
            unit="{resource}",
            description="Resources starting, running, failed or stopping.",
        )
        self._observed: set[tuple[str, str]] = set()
        self._health_checks = meter.create_counter(
            "lifespan_kit.health_checks",
            unit="{check}",
            description="Health checks run, by outcome.",
        )
        self._failures = meter.create_counter(
            "lifespan_kit.resource.failures",
            unit="{failure}",
            description="Resources that failed while their lifespan was running.",
        )
        self._runs: dict[int, _Run] = {}

    # --- resources -------------------------------------------------------------

    def __call__(self, event: ResourceEvent) -> None:
        """Open, close or record the span and the metrics of a resource event."""
        run = self._runs.get(event.run_id)
        if run is None:
            # Events of a run whose startup it did not see: spans without a root.
            run = self._runs[event.run_id] = _Run(dependencies={}, dependents={})
        kind = event.kind
        if kind == "starting":
            self._starting(run, event.resource_name)
        elif kind in ("started", "start_failed"):
            self._started(run, event)
        elif kind == "stopping":
            self._stopping(run, event.resource_name)
        elif kind == "failed":
            self._failed(run, event)
        elif kind == "status":
            self._status(run, event)
        else:
            self._stopped(run, event)

    def _starting(self, run: _Run, name: str) -> None:
        dependencies = run.dependencies.get(name, ())
        span = self._tracer.start_span(
            f"start {name}",
            context=run.parent,
            attributes={_RESOURCE_NAME: name, _DEPENDENCIES: dependencies},
            links=_links(run.starts, dependencies),
        )
        step = run.starts[name] = _Step(span, time.perf_counter(), None)
        # A background task is spawned during its start: it must not inherit
        # the span, or everything it ever traces would join the startup.
        if name not in run.background:
            step.token = otel_context.attach(trace.set_span_in_context(span))
        run.states[name] = "starting"

    def _started(self, run: _Run, event: ResourceEvent) -> None:
        name = event.resource_name
        step = run.starts[name]
        _detach(step)
        attributes: dict[str, str] = {_RESOURCE_NAME: name}
        if event.kind == "started":
            step.ended = time.time_ns()
            run.states[name] = "running"
            if run.root is None:
                step.span.end(step.ended)
        else:
            attributes[_ERROR_TYPE] = _error_type(event.error)
            del run.states[name]
            _record_error(step.span, event.error)
            step.span.end()
        self._start_duration.record(_duration(event, step), attributes)

    def _stopping(self, run: _Run, name: str) -> None:
        span = self._tracer.start_span(
            f"stop {name}",
            context=run.parent,
            attributes={
                _RESOURCE_NAME: name,
                _DEPENDENCIES: run.dependencies.get(name, ()),
            },
            links=_links(run.stops, run.dependents.get(name, ())),
        )
        step = run.stops[name] = _Step(span, time.perf_counter(), None)
        step.token = otel_context.attach(trace.set_span_in_context(span))
        run.states[name] = "stopping"

    def _stopped(self, run: _Run, event: ResourceEvent) -> None:
        name = event.resource_name
        step = run.stops[name]
        _detach(step)
        attributes: dict[str, str] = {_RESOURCE_NAME: name}
        del run.states[name]
        if event.kind == "stop_failed":
            attributes[_ERROR_TYPE] = _error_type(event.error)
            _record_error(step.span, event.error)
        step.span.end()
        self._stop_duration.record(_duration(event, step), attributes)

    def _failed(self, run: _Run, event: ResourceEvent) -> None:
        name = event.resource_name
        self._failures.add(
            1, {_RESOURCE_NAME: name, _ERROR_TYPE: _error_type(event.error)}
        )
        run.states[name] = "failed"
        # Its own trace, linked to the startup's: it happens long after.
        span = self._tracer.start_span(
            f"failure {name}",
            context=Context(),
            attributes={_RESOURCE_NAME: name},
            links=[] if run.startup is None else [Link(run.startup)],
        )
        _record_error(span, event.error)
        span.end()

    def _status(self, run: _Run, event: ResourceEvent) -> None:
        # A moment, in a trace of its own linked to the startup's, as a failure.
        name = event.resource_name
        span = self._tracer.start_span(
            f"status {name}",
            context=Context(),
            attributes={_RESOURCE_NAME: name, _STATUS: event.detail or ""},
            links=[] if run.startup is None else [Link(run.startup)],
        )
        span.end()

    def _observe_states(self, options: CallbackOptions) -> Iterator[Observation]:
        """Count the resources in each state, in every run; 0 for a state left."""
        counts: dict[tuple[str, str], int] = {}
        for run in list(self._runs.values()):
            for name, state in list(run.states.items()):
                counts[name, state] = counts.get((name, state), 0) + 1
        self._observed.update(counts)
        for name, state in sorted(self._observed):
            yield Observation(
                counts.get((name, state), 0),
                {_RESOURCE_NAME: name, _RESOURCE_STATE: state},
            )

    # --- the lifespan ----------------------------------------------------------

    def on_lifespan_event(self, event: LifespanEvent) -> None:
        """Open or close the root span of a startup or teardown; trace health checks."""
        kind = event.kind
        if kind == "starting":
            self._startup_began(event)
        elif kind == "started":
            self._startup_ended(event)
        elif kind == "start_failed":
            self._startup_ended(event)
            self._close(event)
        elif kind == "stopping":
            run = self._runs[event.run_id]
            self._open_root(run, "lifespan_kit teardown", {})
        elif kind == "checked":
            self._checked(event)
        else:
            self._close(event)

    def _startup_began(self, event: LifespanEvent) -> None:
        dependencies = {
            resource.name: tuple(d.resource_name for d in resource.dependencies)
            for resource in event.resources
        }
        dependents: dict[str, list[str]] = {}
        for name, names in dependencies.items():
            for dependency in names:
                dependents.setdefault(dependency, []).append(name)
        run = self._runs[event.run_id] = _Run(
            dependencies=dependencies,
            dependents=dependents,
            background=frozenset(
                r.name for r in event.resources if r.kind == "background"
            ),
        )
        root = self._open_root(
            run, "lifespan_kit startup", {_RESOURCES: tuple(dependencies)}
        )
        run.startup = root.get_span_context()

    def _open_root(
        self, run: _Run, name: str, attributes: Mapping[str, Sequence[str]]
    ) -> Span:
        root = run.root = self._tracer.start_span(name, attributes=attributes)
        run.parent = trace.set_span_in_context(root)
        return root

    def _startup_ended(self, event: LifespanEvent) -> None:
        """End the startup's root, and the start spans that waited for it."""
        run = self._runs[event.run_id]
        path = () if event.report is None else event.report.critical_path
        root = run.root
        assert root is not None  # the startup's, opened on "starting"
        run.root = run.parent = None
        if event.kind == "started":
            root.set_attribute(_CRITICAL_PATH, list(path))
        for name, step in run.starts.items():
            if step.ended is not None:
                if event.kind == "started":
                    step.span.set_attribute(_ON_CRITICAL_PATH, name in path)
                step.span.end(step.ended)
        self._end_root(root, event, self._startup_duration)

    def _close(self, event: LifespanEvent) -> None:
        """Forget the run; end its teardown's root (a failed startup has none)."""
        run = self._runs.pop(event.run_id)
        if run.root is not None:
            self._end_root(run.root, event, self._teardown_duration)

    def _end_root(
        self, root: Span, event: LifespanEvent, histogram: metrics.Histogram
    ) -> None:
        attributes: dict[str, str] = {}
        if event.kind.endswith("_failed"):
            attributes[_ERROR_TYPE] = _error_type(event.error)
            _record_error(root, event.error)
        root.end()
        histogram.record(event.duration or 0.0, attributes)

    def _checked(self, event: LifespanEvent) -> None:
        """Trace one call of `Lifespan.health()`: a span, and one per check."""
        health = event.health
        assert health is not None  # "checked" carries its report
        ended = time.time_ns()
        began = ended - _nanoseconds(event.duration or 0.0)
        status = "healthy" if health.is_healthy else "unhealthy"
        root = self._tracer.start_span(
            "lifespan_kit health", start_time=began, attributes={_HEALTH_STATUS: status}
        )
        parent = trace.set_span_in_context(root)
        failed: list[str] = []
        for name, outcome in health.resources.items():
            attributes = {_RESOURCE_NAME: name, _HEALTH_STATUS: outcome.status}
            self._health_checks.add(1, attributes)
            span = self._tracer.start_span(
                f"check {name}", context=parent, start_time=began, attributes=attributes
            )
            if outcome.error is not None:
                failed.append(name)
                span.set_status(Status(StatusCode.ERROR, outcome.error))
                span.set_attribute(_ERROR_TYPE, "unhealthy")
            span.end(began + _nanoseconds(outcome.duration))
        if failed:
            root.set_status(Status(StatusCode.ERROR, f"unhealthy: {', '.join(failed)}"))
            root.set_attribute(_ERROR_TYPE, "unhealthy")
        root.end(ended)


def _links(steps: Mapping[str, _Step], names: Iterable[str]) -> list[Link]:
    """Link to the spans of `names` that this run has (a plain value has none)."""
    return [
        Link(steps[name].span.get_span_context()) for name in names if name in steps
    ]


def _detach(step: _Step) -> None:
    if step.token is not None:
        otel_context.detach(step.token)
        step.token = None


def _duration(event: ResourceEvent, step: _Step) -> float:
    """The event's duration, or the step's own measure (a failed start has none)."""
    if event.duration is not None:
        return event.duration
    return time.perf_counter() - step.began


def _nanoseconds(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def _error_type(error: BaseException | None) -> str:
    """The class of `error`, fully qualified, as OpenTelemetry's error.type wants."""
    if error is None:
        return "_OTHER"  # OpenTelemetry's value for an error of no known type
    cls = type(error)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _record_error(span: Span, error: BaseException | None) -> None:
    """Mark `span` failed: status, error.type, the error code, an exception event."""
    summary = None if error is None else str(error).partition("\n")[0] or None
    span.set_status(Status(StatusCode.ERROR, summary))
    span.set_attribute(_ERROR_TYPE, _error_type(error))
    if isinstance(error, LifespanKitError):
        span.set_attribute(_ERROR_CODE, error.code)
    if error is not None:
        span.record_exception(error)
