"""What a lifespan tells the outside: events, log lines, the startup report, health."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import anyio

from lifespan_kit.errors import ResourceFailedError, StartCancelledError

logger: Final = logging.getLogger("lifespan_kit")

EventKind = Literal[
    "starting",
    "started",
    "start_failed",
    "failed",
    "stopping",
    "stopped",
    "stop_failed",
]
"""The moments of a resource's life that listeners are told about ("failed": a
resource, such as a background task, stopped working while the lifespan was
running).

Every "starting" is followed by exactly one "started" or "start_failed", and
every "stopping" by exactly one "stopped" or "stop_failed", whatever fails.

Example:
    ```python
    def on_event(event: ResourceEvent) -> None:
        kind: EventKind = event.kind
        if kind in ("start_failed", "stop_failed", "failed"):
            print(f"{event.resource_name}: {kind}: {event.error!r}")
    ```
"""


@dataclass(frozen=True, slots=True)
class ResourceEvent:
    """One moment in a resource's life, as passed to listeners.

    Attributes:
        resource_name: The resource.
        kind: What happened.
        duration: Seconds the start or stop took (None for "starting"/"stopping").
        error: The failure, for "start_failed", "failed" and "stop_failed".

    Example:
        ```python
        events: list[str] = []
        registry = Registry()
        registry.add_listener(lambda e: events.append(f"{e.kind} {e.resource_name}"))
        ```

    Added in 0.1.
    """

    resource_name: str
    kind: EventKind
    duration: float | None = None
    error: BaseException | None = None


Listener = Callable[[ResourceEvent], None]
"""A callable told about every `ResourceEvent`; it must not block.

Example:
    ```python
    durations: dict[str, float] = {}


    def record(event: ResourceEvent) -> None:
        if event.kind == "started" and event.duration is not None:
            durations[event.resource_name] = event.duration


    listener: Listener = record
    registry.add_listener(listener)
    ```
"""


class Monitor:
    """Sends events to listeners and to the ``lifespan_kit`` logger.

    It also collects the failures of resources while the lifespan runs.
    """

    __slots__ = ("failed", "failures", "is_active", "is_logging", "listeners")

    def __init__(self, listeners: Sequence[Listener]) -> None:
        self.listeners = tuple(listeners)
        self.is_logging = logger.isEnabledFor(logging.DEBUG)
        self.is_active = bool(self.listeners) or self.is_logging
        self.failures: list[ResourceFailedError] = []
        self.failed = anyio.Event()

    def fail(self, error: ResourceFailedError) -> None:
        """Record a resource's failure while running, log it and tell the listeners."""
        self.failures.append(error)
        logger.error(
            "%s",
            error,
            exc_info=error,
            extra={
                "lifespan_kit_resource": error.resource_name,
                "lifespan_kit_event": "failed",
            },
        )
        if self.is_active:
            self.emit(ResourceEvent(str(error.resource_name), "failed", error=error))
        self.failed.set()

    def emit(self, event: ResourceEvent) -> None:
        """Log `event` and pass it to each listener; a failing listener is logged."""
        if self.is_logging:
            _log(event)
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # noqa: PERF203  # a listener's bug never stops a lifespan
                logger.exception(
                    "Event listener %r failed on %s of resource '%s'.",
                    listener,
                    event.kind,
                    event.resource_name,
                )


_EVENT_WORDS: Final[dict[EventKind, str]] = {
    "starting": "starting",
    "started": "started",
    "start_failed": "failed to start",
    "failed": "failed while running",
    "stopping": "stopping",
    "stopped": "stopped",
    "stop_failed": "failed to stop",
}


def describe_event(event: ResourceEvent) -> str:
    """Say what happened in words: "started", "failed to start", ...

    A start cancelled because another one failed is "cancelled while
    starting": not the resource's own failure.
    """
    if isinstance(event.error, StartCancelledError):
        return "cancelled while starting"
    return _EVENT_WORDS[event.kind]


def _log(event: ResourceEvent) -> None:
    extra = {
        "lifespan_kit_resource": event.resource_name,
        "lifespan_kit_event": event.kind,
        "lifespan_kit_duration": event.duration,
    }
    words = describe_event(event)
    if event.duration is None:
        logger.debug("Resource '%s' %s.", event.resource_name, words, extra=extra)
    else:
        logger.debug(
            "Resource '%s' %s %s %.1f ms.",
            event.resource_name,
            words,
            "in" if event.kind in ("started", "stopped") else "after",
            event.duration * 1000,
            extra=extra,
        )


def log_stop_failure(error: BaseException) -> None:
    """Log a teardown failure at WARNING; it is also reported to the caller."""
    logger.warning("%s", error, extra={"lifespan_kit_event": "stop_failed"})


@dataclass(frozen=True, slots=True)
class ResourceTiming:
    """When a resource started, relative to the lifespan's start, in seconds.

    Attributes:
        resource_name: The resource.
        began: When its factory was called.
        duration: How long its start took.

    Example:
        ```python
        lifespan = registry.lifespan(Resources)
        async with lifespan:
            for timing in lifespan.report.timings.values():
                print(timing.resource_name, timing.began, timing.ended)
        ```
    """

    resource_name: str
    began: float
    duration: float

    @property
    def ended(self) -> float:
        """When its value was ready."""
        return self.began + self.duration


@dataclass(frozen=True, slots=True)
class StartupReport:
    """Per-resource start timings and the critical path of one startup.

    Attributes:
        timings: Each started resource's timing, in start order.
        total: Seconds from the first start to the last value ready.
        critical_path: The chain of dependencies that set the total, first to last.

    Example:
        ```python
        lifespan = registry.lifespan(Resources)
        async with lifespan:
            print(lifespan.report)  # a table, then the critical path
            print(lifespan.report.critical_path)  # ('settings', 'db')
        ```

    Added in 0.1.
    """

    timings: Mapping[str, ResourceTiming]
    total: float
    critical_path: tuple[str, ...]

    def __str__(self) -> str:
        width = max((len(name) for name in self.timings), default=8)
        lines = [f"{'resource':<{width}}  {'began':>9}  {'duration':>9}"]
        lines.extend(
            f"{t.resource_name:<{width}}  {t.began * 1000:>6.1f} ms"
            f"  {t.duration * 1000:>6.1f} ms"
            for t in self.timings.values()
        )
        path = " -> ".join(self.critical_path) or "(none)"
        lines.append(f"total {self.total * 1000:.1f} ms; critical path: {path}")
        return "\n".join(lines)


def create_report(
    names: Sequence[str],
    dependencies: Sequence[Sequence[int]],
    began: Sequence[float],
    durations: Sequence[float | None],
) -> StartupReport:
    """Build the report from raw per-position timings (None: not started)."""
    started = [i for i, duration in enumerate(durations) if duration is not None]
    timings = {
        names[i]: ResourceTiming(names[i], began[i], durations[i] or 0.0)
        for i in started
    }
    if not started:
        return StartupReport(timings={}, total=0.0, critical_path=())
    ended = {i: began[i] + (durations[i] or 0.0) for i in started}
    last = max(started, key=ended.__getitem__)
    path = [last]
    while deps := [d for d in dependencies[path[-1]] if d in ended]:
        path.append(max(deps, key=ended.__getitem__))
    return StartupReport(
        timings=timings,
        total=ended[last],
        critical_path=tuple(names[i] for i in reversed(path)),
    )
