"""Options for resources and registries, validated by pydantic."""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lifespan_kit.errors import InvalidOptionError

DEFAULT_START_TIMEOUT: Final = 60.0
DEFAULT_STOP_TIMEOUT: Final = 5.0
DEFAULT_HEALTH_TIMEOUT: Final = 5.0

Seconds = Annotated[float, Field(gt=0)]


class Timeouts(BaseModel):
    """Time limits for one resource, in seconds; ``None`` inherits the registry's.

    Use `math.inf` for no limit.
    """

    model_config: ClassVar[ConfigDict] = ConfigDict(
        frozen=True, extra="forbid", defer_build=True
    )

    start_timeout: Seconds | None = None
    stop_timeout: Seconds | None = None
    health_timeout: Seconds | None = None

    def resolve(self, defaults: Timeouts) -> tuple[float, float, float]:
        """Return (start, stop, health) limits, filling gaps from `defaults`."""
        return (
            _pick(self.start_timeout, defaults.start_timeout, DEFAULT_START_TIMEOUT),
            _pick(self.stop_timeout, defaults.stop_timeout, DEFAULT_STOP_TIMEOUT),
            _pick(self.health_timeout, defaults.health_timeout, DEFAULT_HEALTH_TIMEOUT),
        )


def _pick(own: float | None, default: float | None, fallback: float) -> float:
    if own is not None:
        return own
    return fallback if default is None else default


def create_timeouts(
    resource_name: str | None,
    *,
    start_timeout: float | None,
    stop_timeout: float | None,
    health_timeout: float | None,
) -> Timeouts:
    """Validate timeouts, raising `InvalidOptionError` that names the resource."""
    try:
        return Timeouts(
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
            health_timeout=health_timeout,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidOptionError(
            resource_name,
            option=str(first["loc"][0]),
            problem=f"{first['msg']} (seconds; use math.inf for no limit)",
        ) from None


def validate_concurrency(concurrency: int | None) -> float:
    """Return the start concurrency limit as a number (`math.inf` if unlimited)."""
    if concurrency is None:
        return math.inf
    if isinstance(concurrency, bool) or not isinstance(concurrency, int):  # pyright: ignore[reportUnnecessaryIsInstance]  # untyped callers
        raise InvalidOptionError(
            None, option="concurrency", problem="it must be an int or None"
        )
    if concurrency < 1:
        raise InvalidOptionError(
            None,
            option="concurrency",
            problem="it must be at least 1 (1 starts resources one at a time)",
        )
    return concurrency
