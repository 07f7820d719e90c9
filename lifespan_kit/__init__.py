"""Declare async resources once; start them in dependency order, stop them in reverse.

The same declaration runs as an ASGI lifespan, as a worker's startup and as
test fixtures. See the [Registry][lifespan_kit.Registry] to begin.
"""

from __future__ import annotations

from lifespan_kit._bundle import Bundle, ResourceMap
from lifespan_kit._lifespan import Lifespan
from lifespan_kit._outcome import (
    HealthReport,
    ResourceHealth,
    ResourceTiming,
    StartupReport,
)
from lifespan_kit._registry import Registry
from lifespan_kit._report import (
    EventKind,
    LifespanEvent,
    LifespanEventKind,
    LifespanListener,
    Listener,
    ResourceEvent,
)
from lifespan_kit._resource import Resource
from lifespan_kit._runner import run

__all__ = [
    "Bundle",
    "EventKind",
    "HealthReport",
    "Lifespan",
    "LifespanEvent",
    "LifespanEventKind",
    "LifespanListener",
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
