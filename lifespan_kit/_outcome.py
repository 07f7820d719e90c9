"""What a run of a lifespan found: the startup report, its timings and critical path."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


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
