"""A cache of serialised notes: in memory, or in Redis."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import redis.asyncio


# --8<-- [start:memory]
class MemoryCache:
    """Entries in a dictionary, each dropped once its time to live has passed."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, str]] = {}

    async def get(self, key: str) -> str | None:
        """Return the value, unless it is missing or expired."""
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            self._entries.pop(key, None)
            return None
        return entry[1]

    async def set(self, key: str, value: str, *, ttl: float) -> None:
        """Store `value` for `ttl` seconds."""
        self._entries[key] = (time.monotonic() + ttl, value)

    async def delete(self, key: str) -> None:
        """Drop the entry, if any."""
        self._entries.pop(key, None)

    async def ping(self) -> None:
        """Always answers: the cache lives in this process."""


# --8<-- [end:memory]


class RedisCache:
    """Entries in Redis, which expires them itself."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._client = client

    async def get(self, key: str) -> str | None:
        """Return the value, unless it is missing or expired."""
        # decode_responses=True: Redis replies are str.
        return cast("str | None", await self._client.get(key))

    async def set(self, key: str, value: str, *, ttl: float) -> None:
        """Store `value` for `ttl` seconds."""
        await self._client.set(key, value, px=max(1, round(ttl * 1000)))

    async def delete(self, key: str) -> None:
        """Drop the entry, if any."""
        await self._client.delete(key)

    async def ping(self) -> None:
        """Fail unless Redis answers."""
        await self._client.ping()


Cache = MemoryCache | RedisCache


@asynccontextmanager
async def open_redis(url: str, *, app_name: str) -> AsyncIterator[RedisCache]:
    """Connect to Redis and check it answers; close every connection on exit."""
    client = redis.asyncio.Redis.from_url(
        url, client_name=app_name, decode_responses=True
    )
    try:
        cache = RedisCache(client)
        await cache.ping()
        yield cache
    finally:
        await client.aclose()
