"""A small service's resources, declared once and run in dependency order.

Run it with ``python3 tasks.py quickstart`` (or ``python
examples/quickstart/app.py``): it starts settings, an SQLite database, an
in-memory cache and a background janitor, prints the startup report and a
health report, uses the resources, then stops everything in reverse order.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import time
from collections.abc import AsyncIterator

import anyio
import anyio.to_thread
from pydantic import BaseModel

from lifespan_kit import Bundle, Registry


class Settings(BaseModel):
    """Configuration; a real service would read it from the environment."""

    database_path: str = ":memory:"
    cache_ttl: float = 60.0
    janitor_interval: float = 0.5


class Database:
    """A tiny async facade over sqlite3, running each call in a worker thread."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self._lock = anyio.Lock()
        self.is_closed = False

    async def execute(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        """Run one statement and return its rows."""
        async with self._lock:
            return await anyio.to_thread.run_sync(self._execute, sql, params)

    def _execute(
        self, sql: str, params: tuple[object, ...]
    ) -> list[tuple[object, ...]]:
        with self._connection:
            return self._connection.execute(sql, params).fetchall()

    async def aclose(self) -> None:
        """Close the connection."""
        async with self._lock:
            await anyio.to_thread.run_sync(self._connection.close)
        self.is_closed = True


class MemoryCache:
    """An in-memory cache whose entries expire after a time to live."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, str]] = {}

    def set(self, key: str, value: str) -> None:
        """Store `value` until the time to live passes."""
        self._entries[key] = (time.monotonic() + self.ttl, value)

    def get(self, key: str) -> str | None:
        """Return the value if it has not expired."""
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def evict_expired(self) -> int:
        """Drop expired entries and return how many went."""
        now = time.monotonic()
        expired = [
            key for key, (deadline, _) in self._entries.items() if deadline < now
        ]
        for key in expired:
            del self._entries[key]
        return len(expired)


registry = Registry(stop_timeout=5)


@registry.resource
def settings() -> Settings:
    return Settings()


async def ping(database: Database) -> None:
    await database.execute("select 1")


@registry.resource(start_timeout=10, health=ping)
async def db(settings: Settings) -> AsyncIterator[Database]:
    connection = await anyio.to_thread.run_sync(
        lambda: sqlite3.connect(settings.database_path, check_same_thread=False)
    )
    database = Database(connection)
    try:
        await database.execute(
            "create table if not exists notes (id integer primary key, body text)"
        )
        yield database
    finally:
        await database.aclose()


@registry.resource
def cache(settings: Settings) -> MemoryCache:
    return MemoryCache(settings.cache_ttl)


@registry.resource
async def janitor(settings: Settings, cache: MemoryCache) -> AsyncIterator[None]:
    """Evict expired cache entries in the background for the app's lifetime."""

    async def sweep() -> None:
        while True:
            await anyio.sleep(settings.janitor_interval)
            cache.evict_expired()

    async with anyio.create_task_group() as tg:
        tg.start_soon(sweep)
        yield None
        tg.cancel_scope.cancel()


class Resources(Bundle):
    """What the service's code uses."""

    db: Database
    cache: MemoryCache
    janitor: None


async def main() -> list[str]:
    """Start the resources, use them, and stop them; return the notes read."""
    lifespan = registry.lifespan(Resources)
    async with lifespan as resources:
        print(lifespan.report, end="\n\n")
        print("health:", (await lifespan.health()).model_dump_json(), end="\n\n")
        await resources.db.execute("insert into notes (body) values (?)", "hello")
        rows = await resources.db.execute("select body from notes")
        notes = [str(body) for (body,) in rows]
        resources.cache.set("notes", ",".join(notes))
        print("notes:", resources.cache.get("notes"), end="\n\n")
    return notes


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.WARNING, format="%(name)s %(levelname)s %(message)s"
    )
    logging.getLogger("lifespan_kit").setLevel(logging.DEBUG)
    backend = sys.argv[1] if len(sys.argv) > 1 else "asyncio"
    anyio.run(main, backend=backend)
