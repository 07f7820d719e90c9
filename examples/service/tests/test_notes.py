"""The notes API, tested with the resources the plugin provides."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from examples.service.cache import Cache
from examples.service.database import Database, open_sqlite


# --8<-- [start:use]
async def test_notes_round_trip(client: httpx.AsyncClient, cache: Cache) -> None:
    created = await client.post("/notes", json={"body": "from the plugin"})
    assert created.status_code == 201
    note_id = created.json()["id"]
    first = await client.get(f"/notes/{note_id}")
    assert (first.headers["x-cache"], first.json()["body"]) == (
        "miss",
        "from the plugin",
    )
    # The test's `cache` fixture is the very cache the app used.
    assert await cache.get(f"note:{note_id}") is not None


async def test_client_and_db_share_one_database(
    client: httpx.AsyncClient, db: Database
) -> None:
    before = len(await db.list_notes())
    await client.post("/notes", json={"body": "seen by the db fixture"})
    notes = await db.list_notes()
    assert len(notes) == before + 1
    assert notes[-1].body == "seen by the db fixture"


# --8<-- [end:use]


# --8<-- [start:override]
async def empty_database() -> AsyncIterator[Database]:
    async with open_sqlite(":memory:") as database:
        yield database


@pytest.mark.lifespan_kit(db=empty_database)
async def test_override_gives_one_test_its_own_database(
    client: httpx.AsyncClient, db: Database
) -> None:
    # The session's database has notes from the tests above; this one is new,
    # and the client was started again on it, for this test only.
    assert await db.list_notes() == []
    await client.post("/notes", json={"body": "only here"})
    assert [note.body for note in await db.list_notes()] == ["only here"]


# --8<-- [end:override]


async def test_the_session_database_is_back_after_the_override(
    db: Database,
) -> None:
    bodies = [note.body for note in await db.list_notes()]
    assert "only here" not in bodies
    assert "seen by the db fixture" in bodies
