"""What a lifespan tells the outside: events, listeners and log lines."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol, cast

import anyio

import lifespan_kit
from lifespan_kit._outcome import StartupReport
from lifespan_kit._resource import Resource
from lifespan_kit.errors import (
    LifespanKitError,
    ResourceFailedError,
    StartCancelledError,
)

logger: Final = logging.getLogger("lifespan_kit")

# Each start of a lifespan takes the next number: events carry it as `run_id`.
_RUN_IDS: Final = itertools.count(1)

EventKind = Literal[
    "starting",
    "started",
    "start_failed",
    "failed",
    "stopping",
    "stopped",
    "stop_failed",
    "status",
]
"""The moments of a resource's life that listeners are told about ("failed": a
resource, such as a background task, stopped working while the lifespan was
running; "status": a running resource reported a change of its status, in
`detail`, such as a replica becoming the leader of a background task).

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
        detail: The status reported, for "status" events.
        run_id: Which run of a lifespan (one ``async with``) the event belongs
            to: the same for every event of the run, including its
            [LifespanEvent][lifespan_kit.LifespanEvent]s, and different for
            each run in the process. It tells apart the events of lifespans
            that run at the same time with one listener.

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
    run_id: int = 0
    detail: str | None = None


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


LifespanEventKind = Literal[
    "starting",
    "started",
    "start_failed",
    "stopping",
    "stopped",
    "stop_failed",
    "checked",
]
"""The moments of a whole lifespan that lifespan listeners are told about.

"starting" is followed by exactly one "started" or "start_failed" (after the
rollback of what had started), "stopping" by exactly one "stopped" or
"stop_failed"; "checked" ends each call of
[Lifespan.health][lifespan_kit.Lifespan.health].

Example:
    ```python
    def on_lifespan_event(event: LifespanEvent) -> None:
        kind: LifespanEventKind = event.kind
        if kind == "started" and event.report is not None:
            print(event.report.critical_path)
    ```
"""


@dataclass(frozen=True, slots=True)
class LifespanEvent:
    """One moment in the life of a whole lifespan, as passed to lifespan listeners.

    Attributes:
        kind: What happened.
        run_id: The run it belongs to, as
            [ResourceEvent.run_id][lifespan_kit.ResourceEvent]: the resource
            events between this run's "starting" and its "stopped" carry it too.
        resources: The resources the lifespan starts, in sequential start
            order (the plain values among them have no events).
        duration: Seconds the startup, the teardown or the health checks took
            (None for "starting" and "stopping").
        error: What the startup raised ("start_failed"), or the teardown's
            failures ("stop_failed": a
            [ShutdownError][lifespan_kit.errors.ShutdownError], or an
            `ExceptionGroup` of them).
        report: The [StartupReport][lifespan_kit.StartupReport], on "started".
        health: The [HealthReport][lifespan_kit.HealthReport], on "checked".

    Example:
        ```python
        def on_lifespan_event(event: LifespanEvent) -> None:
            if event.kind == "start_failed":
                names = [resource.name for resource in event.resources]
                print(f"startup of {names} failed: {event.error!r}")
        ```

    Added in 0.1.
    """

    kind: LifespanEventKind
    run_id: int
    resources: tuple[Resource[object], ...]
    duration: float | None = None
    error: BaseException | None = None
    report: StartupReport | None = None
    health: lifespan_kit.HealthReport | None = None


class LifespanListener(Protocol):
    """A listener that also hears about each lifespan as a whole.

    Pass it wherever a [Listener][lifespan_kit.Listener] goes (it is one): it
    gets every [ResourceEvent][lifespan_kit.ResourceEvent] through
    ``__call__`` and, through ``on_lifespan_event``, a
    [LifespanEvent][lifespan_kit.LifespanEvent] when a startup or a teardown
    begins and ends and when health checks end. Both run synchronously and
    must not block; one that raises is logged and never stops the lifespan.
    Tracing fits here: a root span per startup and teardown, a child span per
    resource (see [lifespan_kit.opentelemetry][lifespan_kit.opentelemetry]).

    Example:
        ```python
        class StartupTimer:
            def __call__(self, event: ResourceEvent) -> None:
                pass

            def on_lifespan_event(self, event: LifespanEvent) -> None:
                if event.kind == "started" and event.duration is not None:
                    print(f"started in {event.duration:.3f} s")


        registry.add_listener(StartupTimer())
        ```

    Added in 0.1.
    """

    def __call__(self, event: ResourceEvent, /) -> None:
        """Be told about one moment of one resource's life."""

    def on_lifespan_event(self, event: LifespanEvent, /) -> None:
        """Be told about one moment of the whole lifespan's life."""


class Monitor:
    """Sends events to listeners and to the ``lifespan_kit`` logger.

    One monitor serves one run of a lifespan. It also collects the failures of
    resources while the lifespan runs.
    """

    __slots__ = (
        "failed",
        "failures",
        "is_active",
        "is_logging",
        "listeners",
        "observers",
        "run_id",
    )

    def __init__(self, listeners: Sequence[Listener]) -> None:
        self.listeners = tuple(listeners)
        # The listeners that also hear about the lifespan as a whole.
        self.observers = (
            tuple(
                cast("LifespanListener", listener)  # it has on_lifespan_event
                for listener in self.listeners
                if callable(getattr(listener, "on_lifespan_event", None))
            )
            if self.listeners
            else ()
        )
        self.is_logging = logger.isEnabledFor(logging.DEBUG)
        self.is_active = bool(self.listeners) or self.is_logging
        self.run_id = next(_RUN_IDS)
        self.failures: list[ResourceFailedError] = []
        self.failed = anyio.Event()

    def fail(self, error: ResourceFailedError) -> None:
        """Record a resource's failure while running, log it and tell the listeners."""
        self.failures.append(error)
        resource_name = str(error.resource_name)
        logger.error(
            "%s",
            error,
            exc_info=error,
            extra=log_fields("failed", error=error),
        )
        if self.is_active:
            self.emit(resource_name, "failed", error=error)
        self.failed.set()

    def emit(
        self,
        resource_name: str,
        kind: EventKind,
        *,
        duration: float | None = None,
        error: BaseException | None = None,
        detail: str | None = None,
    ) -> None:
        """Log the event and pass it to each listener; a failing listener is logged."""
        event = ResourceEvent(resource_name, kind, duration, error, self.run_id, detail)
        if self.is_logging:
            _log(event)
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # noqa: PERF203  # a listener's bug never stops a lifespan
                _log_listener_failure(listener, kind, resource_name)

    def tell(self, event: LifespanEvent) -> None:
        """Pass a lifespan event to each lifespan listener; a failing one is logged."""
        for observer in self.observers:
            try:
                observer.on_lifespan_event(event)
            except Exception:  # noqa: PERF203  # a listener's bug never stops a lifespan
                _log_listener_failure(observer, event.kind, None)


def _log_listener_failure(
    listener: object, kind: str, resource_name: str | None
) -> None:
    what = "the lifespan" if resource_name is None else f"resource '{resource_name}'"
    logger.exception(
        "Event listener %r failed on %s of %s.",
        listener,
        kind,
        what,
        extra=log_fields("listener_failed", resource_name=resource_name),
    )


def log_fields(
    event: str,
    *,
    resource_name: str | None = None,
    duration: float | None = None,
    error: BaseException | None = None,
) -> dict[str, object]:
    """Return the ``extra`` fields that every lifespan_kit log record carries.

    The resource is `error`'s when `resource_name` is not given.
    """
    if isinstance(error, LifespanKitError):
        code: str | None = error.code
        if resource_name is None:
            resource_name = error.resource_name
    else:
        code = None
    return {
        "lifespan_kit_resource": resource_name,
        "lifespan_kit_event": event,
        "lifespan_kit_duration": duration,
        "lifespan_kit_error_code": code,
    }


_EVENT_WORDS: Final[dict[EventKind, str]] = {
    "starting": "starting",
    "started": "started",
    "start_failed": "failed to start",
    "failed": "failed while running",
    "stopping": "stopping",
    "stopped": "stopped",
    "stop_failed": "failed to stop",
    "status": "reported its status",
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
    extra = log_fields(
        event.kind,
        resource_name=event.resource_name,
        duration=event.duration,
        error=event.error,
    )
    words = describe_event(event)
    if event.detail is not None:
        logger.debug(
            "Resource '%s' %s: %s.",
            event.resource_name,
            words,
            event.detail,
            extra=extra,
        )
    elif event.duration is None:
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
    logger.warning("%s", error, extra=log_fields("stop_failed", error=error))
