"""The notes service: its resources, declared once, and its HTTP API.

Run it with ``python3 tasks.py demo`` (or ``python -m examples.service``), or
under any ASGI server as ``examples.service.app:app``.

Input limits: a request body larger than `MAX_REQUEST_BYTES` (16 KiB) is
answered 413; a note id outside 1 .. 2**63 - 1 (what both databases can
store) and a note body with the NUL character (which PostgreSQL's text cannot
hold) are answered 422.
"""

# --8<-- [start:imports]
from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Final

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Response, status
from pydantic import BaseModel, Field, field_validator

from examples.service.cache import Cache, MemoryCache, open_redis
from examples.service.database import Database, Note, open_postgres, open_sqlite
from examples.service.limits import BodySizeLimit
from examples.service.settings import Settings
from lifespan_kit import Bundle, Listener, Registry
from lifespan_kit.fastapi import resource, resources
from lifespan_kit.starlette import (
    AppLifespan,
    InnerLifespan,
    health_routes,
    lifespan,
)

# --8<-- [end:imports]

# --8<-- [start:resources]
registry = Registry(stop_timeout=5)


@registry.resource
def settings() -> Settings:
    return Settings()


async def ping_database(database: Database) -> None:
    await database.ping()


@registry.resource(start_timeout=10, health=ping_database)
async def db(settings: Settings) -> AsyncIterator[Database]:
    database: AbstractAsyncContextManager[Database]
    if settings.uses_postgres:
        database = open_postgres(
            settings.database_url.get_secret_value(),
            app_name=settings.app_name,
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size,
        )
    else:
        database = open_sqlite(settings.sqlite_path)
    async with database as opened:
        yield opened


async def ping_cache(cache: Cache) -> None:
    await cache.ping()


@registry.resource(start_timeout=10, health=ping_cache)
async def cache(settings: Settings) -> AsyncIterator[Cache]:
    if settings.redis_url is None:
        yield MemoryCache()
        return
    url = settings.redis_url.get_secret_value()
    async with open_redis(url, app_name=settings.app_name) as redis_cache:
        yield redis_cache


# --8<-- [end:resources]


# --8<-- [start:bundle]
class Resources(Bundle):
    """What the handlers use."""

    settings: Settings
    db: Database
    cache: Cache


# Handlers take the whole bundle, or one resource at a time.
Res = Annotated[Resources, Depends(resources)]
Db = Annotated[Database, Depends(resource(db))]
# --8<-- [end:bundle]


# --8<-- [start:handlers]
MAX_REQUEST_BYTES: Final = 16 * 1024
MAX_NOTE_ID: Final = 2**63 - 1  # a 64-bit id, in SQLite and in PostgreSQL


class NewNote(BaseModel):
    """The body of a POST /notes request."""

    body: str = Field(description="The note's text, without NUL characters.")

    @field_validator("body")
    @classmethod
    def has_no_nul(cls, body: str) -> str:
        if "\x00" in body:
            message = "a note cannot contain the NUL character (\\u0000)"
            raise ValueError(message)
        return body


NoteId = Annotated[int, Path(ge=1, le=MAX_NOTE_ID)]
router = APIRouter()


@router.post(
    "/notes",
    status_code=status.HTTP_201_CREATED,
    responses={413: {"description": f"The body is over {MAX_REQUEST_BYTES} bytes."}},
)
async def create_note(new: NewNote, database: Db) -> Note:
    """Store a note."""
    return await database.add_note(new.body)


@router.get("/notes")
async def list_notes(database: Db) -> list[Note]:
    """List every note, oldest first."""
    return await database.list_notes()


@router.get("/notes/{note_id}")
async def read_note(note_id: NoteId, res: Res, response: Response) -> Note:
    """Read a note, from the cache when it is there (see the X-Cache header)."""
    key = f"note:{note_id}"
    cached = await res.cache.get(key)
    if cached is not None:
        response.headers["x-cache"] = "hit"
        return Note.model_validate_json(cached)
    note = await res.db.get_note(note_id)
    if note is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No note has this id.")
    await res.cache.set(key, note.model_dump_json(), ttl=res.settings.cache_ttl)
    response.headers["x-cache"] = "miss"
    return note


@router.delete(
    "/notes/{note_id}", status_code=status.HTTP_204_NO_CONTENT, response_model=None
)
async def delete_note(note_id: NoteId, res: Res) -> None:
    """Delete a note and its cache entry."""
    if not await res.db.delete_note(note_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No note has this id.")
    await res.cache.delete(f"note:{note_id}")


# --8<-- [end:handlers]


# --8<-- [start:app]
def create_app(
    app_registry: Registry = registry,
    *,
    inner: InnerLifespan[FastAPI, Resources] | None = None,
    concurrency: int | None = None,
    listeners: Sequence[Listener] = (),
) -> FastAPI:
    """Build the app; tests pass a registry with overrides, or listeners."""
    app_lifespan: AppLifespan[Resources, FastAPI]
    if inner is None:
        app_lifespan = lifespan(
            app_registry, Resources, concurrency=concurrency, listeners=listeners
        )
    else:
        app_lifespan = lifespan(
            app_registry,
            Resources,
            inner=inner,
            concurrency=concurrency,
            listeners=listeners,
        )
    app = FastAPI(title="Notes", lifespan=app_lifespan, routes=health_routes())
    app.include_router(router)
    app.add_middleware(BodySizeLimit, max_bytes=MAX_REQUEST_BYTES)
    return app


app = create_app()
# --8<-- [end:app]
