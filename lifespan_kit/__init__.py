"""Declare async resources once; start them in dependency order, stop them in reverse.

The same declaration runs as an ASGI lifespan, as a worker's startup and as
test fixtures. See the [Registry][lifespan_kit.Registry] to begin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lifespan_kit._bundle import Bundle, ResourceMap
from lifespan_kit._lifespan import Lifespan
from lifespan_kit._registry import Registry
from lifespan_kit._report import (
    EventKind,
    HealthReport,
    Listener,
    ResourceEvent,
    ResourceHealth,
    ResourceTiming,
    StartupReport,
)
from lifespan_kit._resource import Resource
from lifespan_kit._runner import run

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

if TYPE_CHECKING:
    __version__: str
    """The installed version, from the package metadata (added in 0.1)."""
else:

    def __getattr__(name: str) -> object:
        # Read on first use, not at import: `import lifespan_kit` stays cheap.
        if name != "__version__":
            message = f"module 'lifespan_kit' has no attribute {name!r}"
            raise AttributeError(message)
        from importlib.metadata import version

        globals()["__version__"] = found = version("lifespan_kit")
        return found
