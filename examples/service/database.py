"""Where the notes live: SQLite through aiosqlite, or PostgreSQL through asyncpg."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiosqlite
import asyncpg
from pydantic import BaseModel


class Note(BaseModel):
    """A note as stored and as served."""

    id: int
    body: str


class SqliteDatabase:
    """Notes in SQLite, on one aiosqlite connection."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._connection = connection

    async def add_note(self, body: str) -> Note:
        """Store a note and return it with its id."""
        cursor = await self._connection.execute(
            "insert into notes (body) values (?) returning id", (body,)
        )
        row = await cursor.fetchone()
        await self._connection.commit()
        assert row is not None
        return Note(id=row[0], body=body)

    async def get_note(self, note_id: int) -> Note | None:
        """Return the note, or None when there is none with that id."""
        cursor = await self._connection.execute(
            "select id, body from notes where id = ?", (note_id,)
        )
        row = await cursor.fetchone()
        return None if row is None else Note(id=row[0], body=row[1])

    async def list_notes(self) -> list[Note]:
        """Return every note, oldest first."""
        cursor = await self._connection.execute(
            "select id, body from notes order by id"
        )
        return [Note(id=row[0], body=row[1]) for row in await cursor.fetchall()]

    async def delete_note(self, note_id: int) -> bool:
        """Delete the note; return False when there was none."""
        cursor = await self._connection.execute(
            "delete from notes where id = ?", (note_id,)
        )
        await self._connection.commit()
        return cursor.rowcount > 0

    async def ping(self) -> None:
        """Fail unless the database answers."""
        await self._connection.execute("select 1")


class PostgresDatabase:
    """Notes in PostgreSQL, through an asyncpg connection pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def add_note(self, body: str) -> Note:
        """Store a note and return it with its id."""
        note_id: int = await self._pool.fetchval(
            "insert into notes (body) values ($1) returning id", body
        )
        return Note(id=note_id, body=body)

    async def get_note(self, note_id: int) -> Note | None:
        """Return the note, or None when there is none with that id."""
        row = await self._pool.fetchrow(
            "select id, body from notes where id = $1", note_id
        )
        return None if row is None else Note(id=row["id"], body=row["body"])

    async def list_notes(self) -> list[Note]:
        """Return every note, oldest first."""
        rows = await self._pool.fetch("select id, body from notes order by id")
        return [Note(id=row["id"], body=row["body"]) for row in rows]

    async def delete_note(self, note_id: int) -> bool:
        """Delete the note; return False when there was none."""
        status: str = await self._pool.execute(
            "delete from notes where id = $1", note_id
        )
        return status != "DELETE 0"

    async def ping(self) -> None:
        """Fail unless the database answers."""
        await self._pool.fetchval("select 1")


Database = SqliteDatabase | PostgresDatabase


# --8<-- [start:open_sqlite]
@asynccontextmanager
async def open_sqlite(path: str) -> AsyncIterator[SqliteDatabase]:
    """Open the SQLite database at `path`, creating the table; close it on exit."""
    async with aiosqlite.connect(path) as connection:
        await connection.execute(
            "create table if not exists notes"
            " (id integer primary key autoincrement, body text not null)"
        )
        yield SqliteDatabase(connection)


# --8<-- [end:open_sqlite]


@asynccontextmanager
async def open_postgres(
    dsn: str, *, app_name: str, min_size: int, max_size: int
) -> AsyncIterator[PostgresDatabase]:
    """Open a connection pool, creating the table; close every connection on exit."""
    async with asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings={"application_name": app_name},
    ) as pool:
        await pool.execute(
            "create table if not exists notes"
            " (id bigserial primary key, body text not null)"
        )
        yield PostgresDatabase(pool)
