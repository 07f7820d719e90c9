"""The pydantic models of the API: `Bundle` and the health reports.

Creating any pydantic model class imports a good part of pydantic, about as
much as `import lifespan_kit` costs without it. So this module is imported on
first use only: ``lifespan_kit.Bundle`` (the package's `__getattr__`), a
health check, or an integration. Annotations elsewhere name these classes as
``lifespan_kit.Bundle``, which resolves at runtime through the same lazy
lookup.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict


class Bundle(BaseModel):
    """The typed set of resources a lifespan yields: one field per resource.

    A field's name (or its alias) is the resource's name; its annotation is the
    type the resource's value is checked against before your code runs.
    Entering ``registry.lifespan(Resources)`` starts exactly the resources the
    fields need, plus their dependencies.

    Example:
        ```python
        class Resources(Bundle):
            db: Database
            cache: Cache

        async with registry.lifespan(Resources) as resources:
            await resources.db.execute("select 1")
        ```

    Added in 0.1.
    """

    model_config: ClassVar[ConfigDict] = ConfigDict(
        frozen=True,
        arbitrary_types_allowed=True,
        strict=True,
        extra="forbid",
        # Built on first use: importing a module of bundles stays cheap.
        defer_build=True,
    )


HealthStatus = Literal["healthy", "unhealthy"]


class ResourceHealth(BaseModel):
    """The outcome of one resource's health check.

    Attributes:
        status: "healthy" or "unhealthy".
        duration: Seconds the check took.
        error: Why it is unhealthy, as text.
        detail: What a passing check returned, when it returned text (a lock
            backend's check says which replica leads what).

    Example:
        ```python
        lifespan = registry.lifespan(Resources)
        async with lifespan:
            report = await lifespan.health()
            for name, health in report.resources.items():
                duration = f"{health.duration * 1000:.1f} ms"
                print(name, health.status, duration, health.error)
        ```

    Added in 0.1.
    """

    model_config: ClassVar[ConfigDict] = ConfigDict(
        frozen=True, extra="forbid", defer_build=True
    )

    status: HealthStatus
    duration: float
    error: str | None = None
    detail: str | None = None


class HealthReport(BaseModel):
    """The health of every resource that declares a check.

    Attributes:
        resources: Each checked resource's outcome, by name.

    Example:
        ```python
        lifespan = registry.lifespan(Resources)
        async with lifespan:
            report = await lifespan.health()
            if not report.is_healthy:
                print(report.model_dump_json())
        ```

    Added in 0.1.
    """

    model_config: ClassVar[ConfigDict] = ConfigDict(
        frozen=True, extra="forbid", defer_build=True
    )

    resources: dict[str, ResourceHealth]

    @property
    def is_healthy(self) -> bool:
        """True when every check passed."""
        return all(r.status == "healthy" for r in self.resources.values())
