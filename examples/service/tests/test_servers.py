"""The same tests' resources on PostgreSQL and Redis, swapped in by settings."""

from __future__ import annotations

from collections.abc import Mapping

import httpx
import pytest
from pydantic import SecretStr

from examples.service.cache import Cache, RedisCache
from examples.service.database import Database, PostgresDatabase
from examples.service.settings import Settings


# --8<-- [start:overrides-fixture]
@pytest.fixture
def lifespan_kit_overrides(postgres_dsn: str, redis_url: str) -> Mapping[str, object]:
    """Replace the settings, so the db and the cache open real servers."""
    settings = Settings(
        database_url=SecretStr(postgres_dsn),
        redis_url=SecretStr(redis_url),
        app_name="lifespan-kit-plugin-test",
    )
    return {"settings": settings}


# --8<-- [end:overrides-fixture]


async def test_notes_on_postgres_and_redis(
    client: httpx.AsyncClient, db: Database, cache: Cache
) -> None:
    assert isinstance(db, PostgresDatabase)
    assert isinstance(cache, RedisCache)
    created = await client.post("/notes", json={"body": "on the servers"})
    note_id = created.json()["id"]
    assert (await client.get(f"/notes/{note_id}")).headers["x-cache"] == "miss"
    assert (await client.get(f"/notes/{note_id}")).headers["x-cache"] == "hit"
    assert await db.delete_note(note_id)
    await cache.delete(f"note:{note_id}")
