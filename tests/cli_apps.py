"""Objects for the command line tests to load by ``module:attribute``."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import AsyncIterator

import anyio
import anyio.to_thread

from lifespan_kit import Bundle, Registry

registry = Registry(stop_timeout=2)
registry.add("settings", {"dsn": "sqlite://"})


@registry.resource(start_timeout=10)
async def db(settings: dict[str, str]) -> AsyncIterator[str]:
    """A resource with its own start timeout."""
    yield settings["dsn"]


# A resource without a stop limit, never started by the tests.
registry.add("cache", lambda settings: "cache", stop_timeout=math.inf)


@registry.background
async def consumer(db: str, cache: str) -> None:
    """A background task in a third wave: drawn by the tests, never started."""


class Resources(Bundle):
    """Only the database."""

    db: str


async def main(resources: Resources) -> None:
    """Use the database, then return."""


def sync_main(resources: Resources) -> None:
    """Not async: `run` refuses it."""


class Holder:
    """A registry reached through a dotted attribute path."""

    registry = registry


broken = Registry()
broken.add("api", lambda db, cahce: (db, cahce))  # neither is registered
broken.add("db_pool", "pool")

tangled = Registry()
tangled.add("api", lambda repo, cache: (repo, cache))  # 'cache' is not registered
tangled.add("repo", lambda api: api)  # a cycle with 'api'
tangled.add("db", lambda db: db)  # a cycle of one


class Tangled(Bundle):
    """Asks for 'api' and for a name that is not registered."""

    api: object
    queue: object


TICK_SEEN = threading.Event()
"""Replaced by the live display test: set once the display redrew by itself."""

slow = Registry()


@slow.resource
async def warming_up() -> AsyncIterator[str]:
    """Starts only once the live display has redrawn itself while waiting."""
    assert await anyio.to_thread.run_sync(TICK_SEEN.wait, 10)
    logging.getLogger(__name__).info("warm")
    yield "warm"


async def slow_main() -> None:
    """Return at once."""
