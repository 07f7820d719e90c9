"""Declare async resources once; start them in dependency order, stop them in reverse.

The same declaration runs as an ASGI lifespan, as a worker's startup and as
test fixtures. See the [Registry][lifespan_kit.Registry] to begin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lifespan_kit._bundle import ResourceMap
from lifespan_kit._lifespan import Lifespan
from lifespan_kit._registry import Registry
from lifespan_kit._report import (
    EventKind,
    Listener,
    ResourceEvent,
    ResourceTiming,
    StartupReport,
)
from lifespan_kit._resource import Resource
from lifespan_kit._runner import run

if TYPE_CHECKING:
    from lifespan_kit._models import Bundle, HealthReport, ResourceHealth

__all__ = [
    "Bundle",
    "EventKind",
    "HealthReport",
    "Lifespan",
    "Listener",
    "Registry",
    "Resource",
    "ResourceEvent",
    "ResourceHealth",
    "ResourceMap",
    "ResourceTiming",
    "StartupReport",
    "run",
]

# The pydantic models are created on first use: creating one costs about as
# much as the rest of the import (see lifespan_kit._models).
_MODELS = frozenset({"Bundle", "HealthReport", "ResourceHealth"})


def __getattr__(name: str) -> object:
    if name in _MODELS:
        from lifespan_kit import _models

        model: object = getattr(_models, name)
        globals()[name] = model
        return model
    message = f"module 'lifespan_kit' has no attribute '{name}'"
    raise AttributeError(message)


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODELS})
