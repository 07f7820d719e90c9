"""Options for resources and registries: checked where declared, kept frozen.

Plain frozen dataclasses, not pydantic models: `check_seconds` checks every
value where it is declared, with an error that names the resource, and a
model class would cost the import of pydantic's model machinery.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Final

from lifespan_kit.errors import InvalidOptionError

DEFAULT_START_TIMEOUT: Final = 60.0
DEFAULT_STOP_TIMEOUT: Final = 5.0
DEFAULT_HEALTH_TIMEOUT: Final = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """Time limits for one resource, in seconds; ``None`` inherits the registry's.

    Each is greater than 0 (`create_timeouts` checks); `math.inf` is no limit.
    """

    start_timeout: float | None = None
    stop_timeout: float | None = None
    health_timeout: float | None = None

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
    return Timeouts(
        start_timeout=_seconds_or_none(resource_name, "start_timeout", start_timeout),
        stop_timeout=_seconds_or_none(resource_name, "stop_timeout", stop_timeout),
        health_timeout=_seconds_or_none(
            resource_name, "health_timeout", health_timeout
        ),
    )


def _seconds_or_none(
    resource_name: str | None, option: str, value: float | None
) -> float | None:
    return None if value is None else check_seconds(resource_name, option, value)


def check_seconds(
    resource_name: str | None, option: str, value: object, *, owner: str | None = None
) -> float:
    """Return `value` as seconds, or raise `InvalidOptionError` naming `option`.

    Any real number greater than 0 is accepted (an int, a float, `math.inf`);
    a string or a bool is never converted, so a typo cannot pass as a limit.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidOptionError(
            resource_name,
            option=option,
            problem=f"it must be a number of seconds, not {_type_name(value)}",
            remedy=_SECONDS_REMEDY,
            owner=owner,
        )
    seconds = float(value)
    if not seconds > 0:  # NaN is not greater than 0 either
        raise InvalidOptionError(
            resource_name,
            option=option,
            problem="it must be greater than 0 seconds",
            remedy=_SECONDS_REMEDY,
            owner=owner,
        )
    return seconds


_SECONDS_REMEDY: Final = (
    "pass a number of seconds greater than 0, such as 5 or 0.5 (an int or a "
    "float), or math.inf for no limit."
)


def validate_concurrency(concurrency: int | None) -> float:
    """Return the start concurrency limit as a number (`math.inf` if unlimited)."""
    if concurrency is None:
        return math.inf
    if isinstance(concurrency, bool) or not isinstance(concurrency, int):  # pyright: ignore[reportUnnecessaryIsInstance]  # untyped callers
        raise InvalidOptionError(
            None,
            option="concurrency",
            problem=f"it must be an int or None, not {_type_name(concurrency)}",
            remedy=_CONCURRENCY_REMEDY,
            owner="the lifespan",
        )
    if concurrency < 1:
        raise InvalidOptionError(
            None,
            option="concurrency",
            problem="it must be at least 1",
            remedy=_CONCURRENCY_REMEDY,
            owner="the lifespan",
        )
    return concurrency


_CONCURRENCY_REMEDY: Final = (
    "pass an int of at least 1 (1 starts resources one at a time, in a fixed "
    "order), or None for no limit."
)


def _type_name(value: object) -> str:
    return type(value).__qualname__
