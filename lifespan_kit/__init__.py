"""Declare async resources once; start them in dependency order, stop them in reverse.

The same declaration runs as an ASGI lifespan, as a worker's startup and as
test fixtures. See the [Registry][lifespan_kit.Registry] to begin.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from lifespan_kit._bundle import ResourceMap
    from lifespan_kit._lifespan import Lifespan
    from lifespan_kit._models import Bundle, HealthReport, ResourceHealth
    from lifespan_kit._outcome import ResourceTiming, StartupReport
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

    __version__: str
    """The installed version, from the package metadata (added in 0.1)."""

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

# The public names are imported on first use: pytest imports the plugin
# module, and so this package, in every run where lifespan_kit is installed,
# and that must stay cheap until a project configures a registry. The pydantic
# models cost the most: creating one costs about as much as the rest of the
# import (see lifespan_kit._models).
_HOMES: Final = {
    "Bundle": "_models",
    "EventKind": "_report",
    "HealthReport": "_models",
    "Lifespan": "_lifespan",
    "LifespanEvent": "_report",
    "LifespanEventKind": "_report",
    "LifespanListener": "_report",
    "Listener": "_report",
    "Registry": "_registry",
    "Resource": "_resource",
    "ResourceEvent": "_report",
    "ResourceHealth": "_models",
    "ResourceMap": "_bundle",
    "ResourceTiming": "_outcome",
    "StartupReport": "_outcome",
    "run": "_runner",
}


# Hidden from type checkers, which see the imports above: a misspelt name
# stays an error for them.
if not TYPE_CHECKING:  # pragma: no branch  # type checkers read the other side

    def __getattr__(name: str) -> object:
        if name == "__version__":
            from importlib.metadata import version

            globals()["__version__"] = found = version("lifespan_kit")
            return found
        home = _HOMES.get(name)
        if home is None:
            message = f"module 'lifespan_kit' has no attribute {name!r}"
            raise AttributeError(message)
        value: object = getattr(importlib.import_module(f"lifespan_kit.{home}"), name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})
