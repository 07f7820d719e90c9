"""The notes service: its API, its settings, and no connection left behind.

The in-process tests drive the app's lifespan around httpx's ASGITransport.
The server tests run ``python -m examples.service`` (what ``python3 tasks.py
demo`` runs) as a subprocess. The leak checks count the service's connections
as PostgreSQL (``pg_stat_activity``) and Redis (``CLIENT LIST``) see them:
every connection is tagged with the service's ``app_name``.
"""

from __future__ import annotations

import signal
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import anyio
import anyio.to_thread
import asyncpg
import httpx
import pytest
import redis.asyncio
from fastapi import FastAPI
from pydantic import SecretStr, ValidationError

from examples.service import __main__ as service_main
from examples.service.app import Resources, create_app, registry
from examples.service.cache import Cache, MemoryCache, RedisCache, open_redis
from examples.service.database import Database, PostgresDatabase, SqliteDatabase
from examples.service.settings import Settings
from lifespan_kit import ResourceEvent
from tests.integrations.driver import LifespanFailedError, open_client, run_lifespan
from tests.integrations.server import Server, free_port, port_option

CYCLES = 50
SERVER_CYCLES = 2
SERVICE = ("examples.service",)
READY = "open http://127.0.0.1:"


@pytest.fixture(autouse=True)
def embedded_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run each test on the embedded defaults unless it chooses servers itself."""
    for variable in ("DATABASE_URL", "REDIS_URL", "APP_NAME"):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def app_name() -> str:
    """A name no other client uses, to find this test's connections on the servers."""
    return f"lifespan-kit-test-{uuid.uuid4().hex[:12]}"


def server_settings(postgres_dsn: str, redis_url: str, app_name: str) -> Settings:
    return Settings(
        database_url=SecretStr(postgres_dsn),
        redis_url=SecretStr(redis_url),
        app_name=app_name,
    )


def app_on(settings: Settings, *, events: list[str] | None = None) -> FastAPI:
    """The service with these settings, starting its resources one at a time."""

    def record(event: ResourceEvent) -> None:
        if events is not None:
            events.append(f"{event.kind} {event.resource_name}")

    return create_app(
        registry.override(settings=settings), concurrency=1, listeners=[record]
    )


# --- the API, on the embedded defaults ------------------------------------------


async def test_notes_round_trip_with_the_cache() -> None:
    """A note is stored, read (then from the cache), listed and deleted."""
    async with open_client(create_app()) as client:
        created = await client.post("/notes", json={"body": "buy milk"})
        note_id = created.json()["id"]
        first = await client.get(f"/notes/{note_id}")
        second = await client.get(f"/notes/{note_id}")
        listed = await client.get("/notes")
        deleted = await client.delete(f"/notes/{note_id}")
        gone = await client.get(f"/notes/{note_id}")
        deleted_again = await client.delete(f"/notes/{note_id}")
    assert created.status_code == 201
    assert first.json() == {"id": note_id, "body": "buy milk"}
    assert [first.headers["x-cache"], second.headers["x-cache"]] == ["miss", "hit"]
    assert second.json() == first.json()
    assert listed.json() == [{"id": note_id, "body": "buy milk"}]
    assert [deleted.status_code, gone.status_code, deleted_again.status_code] == [
        204,
        404,
        404,
    ]


async def test_readiness_checks_the_database_and_the_cache() -> None:
    """GET /readyz runs both health checks and answers 200."""
    async with open_client(create_app()) as client:
        response = await client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert {name: r["status"] for name, r in body["resources"].items()} == {
        "db": "healthy",
        "cache": "healthy",
    }


async def test_embedded_defaults_need_no_server() -> None:
    """Without DATABASE_URL and REDIS_URL, the service uses SQLite and memory."""
    async with registry.lifespan(Resources) as res:
        assert isinstance(res.db, SqliteDatabase)
        assert isinstance(res.cache, MemoryCache)
        assert not res.settings.uses_postgres


async def test_resources_stop_in_reverse_order() -> None:
    """Started one at a time, the database and the cache stop in reverse order."""
    events: list[str] = []
    async with open_client(app_on(Settings(), events=events)) as client:
        await client.get("/notes")
    assert [e for e in events if e.startswith(("started", "stopped"))] == [
        "started db",
        "started cache",
        "stopped cache",
        "stopped db",
    ]


async def test_memory_cache_forgets_expired_entries() -> None:
    """An entry past its time to live reads as missing."""
    cache = MemoryCache()
    await cache.set("fresh", "1", ttl=60)
    await cache.set("stale", "2", ttl=-1)
    assert [await cache.get("fresh"), await cache.get("stale")] == ["1", None]


# --- settings -------------------------------------------------------------------


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """DATABASE_URL, REDIS_URL and APP_NAME choose the servers and the tag."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@db.internal/notes")
    monkeypatch.setenv("REDIS_URL", "redis://cache.internal:6379/0")
    monkeypatch.setenv("APP_NAME", "notes-eu")
    settings = Settings()
    assert settings.uses_postgres
    assert settings.redis_url is not None
    assert settings.app_name == "notes-eu"
    assert "db.internal" not in repr(settings)  # URLs may hold passwords


def test_sqlite_url_names_the_file() -> None:
    """sqlite:///<path> names the database file; the default keeps it in memory."""
    settings = Settings(database_url=SecretStr("sqlite:///notes.db"))
    assert (settings.sqlite_path, Settings().sqlite_path) == ("notes.db", ":memory:")


def test_unknown_database_scheme_is_rejected_without_echoing_it() -> None:
    """A DATABASE_URL of another kind fails, naming the variable, not its value."""
    with pytest.raises(ValidationError, match="DATABASE_URL must start with") as info:
        Settings(database_url=SecretStr("mysql://root:hunter2@db/notes"))
    assert "hunter2" not in str(info.value)


# --- the demo under uvicorn -----------------------------------------------------


def test_demo_serves_and_stops_on_sigterm() -> None:
    """`python -m examples.service` says where to open it, serves, and stops cleanly."""
    with Server(*SERVICE, ready=READY) as server:
        server.wait_until_serving()
        created = httpx.post(f"{server.url}/notes", json={"body": "hi"}, timeout=10)
        ready = httpx.get(f"{server.url}/readyz", timeout=10)
        status = server.stop(signal.SIGTERM)
    assert created.status_code == 201
    assert ready.json()["status"] == "ready"
    assert f"open {server.url}/docs" in server.output
    assert status == -signal.SIGTERM, server.output
    stopped = [line for line in server.lines if " stopped in " in line]
    assert len(stopped) == 3
    assert "Resource 'settings'" in stopped[-1]


def test_demo_falls_back_to_a_free_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the default port is taken, the demo listens on another one."""
    with socket.socket() as taken:
        taken.bind((service_main.HOST, 0))
        taken.listen()
        monkeypatch.setattr(service_main, "DEFAULT_PORT", taken.getsockname()[1])
        with service_main.bind(service_main.DEFAULT_PORT) as sock:
            assert sock.getsockname()[1] not in (0, service_main.DEFAULT_PORT)


def test_demo_fails_on_a_taken_port_it_was_given() -> None:
    """A port chosen with --port that is taken is an error, not a silent change."""
    with socket.socket() as taken:
        taken.bind((service_main.HOST, 0))
        taken.listen()
        with pytest.raises(OSError, match="in use"):
            service_main.bind(taken.getsockname()[1])


# --- PostgreSQL and Redis ---------------------------------------------------------


@dataclass
class Figures:
    """Connection counts seen by the servers, for the assertion messages."""

    before: tuple[int, int] = (0, 0)
    during: list[tuple[int, int]] = field(default_factory=list)
    after: list[tuple[int, int]] = field(default_factory=list)
    rereads: int = 0
    during_label: str = "while running"

    def __str__(self) -> str:
        most = max(self.during, default=(0, 0))
        left = max(self.after, default=(0, 0))
        return (
            f"{len(self.after)} run(s); (PostgreSQL, Redis) connections of the app: "
            f"before {self.before}, most {self.during_label} {most}, most after a "
            f"shutdown {left}, final {self.after[-1] if self.after else None}; "
            f"counts re-read before reaching zero: {self.rereads}"
        )


class ConnectionCounter:
    """Counts the connections tagged `app_name` on PostgreSQL and Redis."""

    def __init__(
        self, pg: asyncpg.Connection, redis_client: redis.asyncio.Redis, app_name: str
    ) -> None:
        self._pg = pg
        self._redis = redis_client
        self._app_name = app_name

    async def count(self) -> tuple[int, int]:
        pg: int = await self._pg.fetchval(
            "select count(*) from pg_stat_activity where application_name = $1",
            self._app_name,
        )
        clients = await self._redis.client_list()
        return pg, sum(1 for client in clients if client["name"] == self._app_name)

    async def settled(self, figures: Figures) -> tuple[int, int]:
        """Count once the servers have dropped closed connections (within 5 s).

        A server removes a closed connection from its list on its own time, so
        a count is re-read, briefly, until it reaches zero or the deadline.
        """
        counts = await self.count()
        with anyio.move_on_after(5):
            while counts != (0, 0):
                await anyio.sleep(0.01)
                figures.rereads += 1
                counts = await self.count()
        return counts


@pytest.fixture
async def counter(
    postgres_dsn: str, redis_url: str, app_name: str
) -> AsyncIterator[ConnectionCounter]:
    """A counter on its own connections, tagged differently from the app's."""
    pg = await asyncpg.connect(
        postgres_dsn, server_settings={"application_name": "lifespan-kit-observer"}
    )
    redis_client = redis.asyncio.Redis.from_url(
        redis_url, client_name="lifespan-kit-observer", decode_responses=True
    )
    try:
        yield ConnectionCounter(pg, redis_client, app_name)
    finally:
        await redis_client.aclose()
        await pg.close()


def report(capsys: pytest.CaptureFixture[str], title: str, figures: Figures) -> None:
    """Show the figures in the test output, captured or not."""
    with capsys.disabled():
        print(f"\n[leak check] {title}: {figures}")


async def test_notes_round_trip_on_postgres_and_redis(
    postgres_dsn: str, redis_url: str, app_name: str
) -> None:
    """With DATABASE_URL and REDIS_URL, notes live in PostgreSQL, cached in Redis."""
    settings = server_settings(postgres_dsn, redis_url, app_name)
    async with open_client(app_on(settings)) as client:
        note = (await client.post("/notes", json={"body": "on postgres"})).json()
        first = await client.get(f"/notes/{note['id']}")
        second = await client.get(f"/notes/{note['id']}")
        ready = await client.get("/readyz")
    async with registry.override(settings=settings).lifespan(Resources) as res:
        kinds = (type(res.db), type(res.cache))
    assert [first.headers["x-cache"], second.headers["x-cache"]] == ["miss", "hit"]
    assert second.json() == {"id": note["id"], "body": "on postgres"}
    assert ready.json()["status"] == "ready"
    assert kinds == (PostgresDatabase, RedisCache)


async def test_no_connection_outlives_50_start_stop_cycles(
    counter: ConnectionCounter,
    postgres_dsn: str,
    redis_url: str,
    app_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """After each of 50 runs, PostgreSQL and Redis list no connection of the app."""
    figures = Figures(before=await counter.count())
    app = app_on(server_settings(postgres_dsn, redis_url, app_name))
    for _ in range(CYCLES):
        async with open_client(app) as client:
            note = (await client.post("/notes", json={"body": "cycle"})).json()
            await client.get(f"/notes/{note['id']}")  # fills the Redis cache
            figures.during.append(await counter.count())
        figures.after.append(await counter.settled(figures))
    report(capsys, "clean shutdowns", figures)
    assert figures.before == (0, 0), str(figures)
    assert min(figures.during) >= (1, 1), str(figures)
    assert set(figures.after) == {(0, 0)}, str(figures)


async def test_no_connection_outlives_50_half_failed_startups(
    counter: ConnectionCounter,
    postgres_dsn: str,
    app_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """When the cache fails after the database pool opened, the pool is closed."""
    figures = Figures(during_label="as the cache started")

    async def cache_after_db(settings: Settings, db: Database) -> AsyncIterator[Cache]:
        """The service's Redis cache, started once the pool is open and counted."""
        figures.during.append(await counter.count())
        assert settings.redis_url is not None
        url = settings.redis_url.get_secret_value()
        async with open_redis(url, app_name=settings.app_name) as redis_cache:
            yield redis_cache

    settings = server_settings(
        postgres_dsn, f"redis://127.0.0.1:{free_port()}/0", app_name
    )
    events: list[str] = []
    app = create_app(
        registry.override(settings=settings, cache=cache_after_db),
        listeners=[lambda event: events.append(f"{event.kind} {event.resource_name}")],
    )
    figures.before = await counter.count()
    for _ in range(CYCLES):
        events.clear()
        with pytest.raises(LifespanFailedError, match="Resource 'cache' failed"):
            await run_lifespan(app).__aenter__()
        assert events == [
            "starting db",
            "started db",
            "starting cache",
            "start_failed cache",
            "stopping db",
            "stopped db",
        ]
        figures.after.append(await counter.settled(figures))
    report(capsys, "startups failed after the pool opened", figures)
    assert figures.before == (0, 0), str(figures)
    assert set(figures.during) == {(1, 0)}, str(figures)
    assert set(figures.after) == {(0, 0)}, str(figures)


@dataclass(frozen=True)
class ServedBy:
    """How one server runs the service, and its exit status after SIGTERM."""

    args: tuple[str, ...]
    ready: str
    after_sigterm: int
    listen: Callable[[int], Sequence[str]] = port_option


SERVED_BY = [
    pytest.param(ServedBy(SERVICE, READY, -signal.SIGTERM), id="uvicorn-demo"),
    pytest.param(
        ServedBy(
            ("hypercorn", "examples.service.app:app"),
            "Running on http://",
            0,
            lambda port: ["--bind", f"127.0.0.1:{port}"],
        ),
        id="hypercorn",
    ),
    pytest.param(
        ServedBy(
            ("granian", "--interface", "asgi", "examples.service.app:app"),
            "Started worker-1",
            0,
            lambda port: ["--host", "127.0.0.1", "--port", str(port)],
        ),
        id="granian",
    ),
]


@pytest.mark.parametrize("served_by", SERVED_BY)
async def test_server_leaves_no_connection_after_sigterm(
    served_by: ServedBy,
    counter: ConnectionCounter,
    postgres_dsn: str,
    redis_url: str,
    app_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Served on PostgreSQL and Redis, 2 runs stopped by SIGTERM leave 0 connections."""
    env = {"DATABASE_URL": postgres_dsn, "REDIS_URL": redis_url, "APP_NAME": app_name}
    figures = Figures(before=await counter.count())
    statuses: list[int] = []
    for _ in range(SERVER_CYCLES):
        server = Server(
            *served_by.args, ready=served_by.ready, env=env, listen=served_by.listen
        )
        with server:
            await anyio.to_thread.run_sync(server.wait_until_serving)
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                note = (await client.post("/notes", json={"body": "served"})).json()
                await client.get(f"/notes/{note['id']}")
                ready = await client.get("/readyz")
            figures.during.append(await counter.count())
            statuses.append(await anyio.to_thread.run_sync(server.stop, signal.SIGTERM))
        figures.after.append(await counter.settled(figures))
        assert ready.json()["status"] == "ready", server.output
    report(capsys, f"{served_by.args[0]} stopped by SIGTERM", figures)
    assert statuses == [served_by.after_sigterm] * SERVER_CYCLES, server.output
    assert figures.before == (0, 0), str(figures)
    assert min(figures.during) >= (1, 1), str(figures)
    assert set(figures.after) == {(0, 0)}, str(figures)


async def test_uvicorn_exits_without_serving_when_redis_is_down(
    counter: ConnectionCounter,
    postgres_dsn: str,
    app_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With Redis unreachable, the demo exits with status 3 and closes its pool."""
    env = {
        "DATABASE_URL": postgres_dsn,
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "APP_NAME": app_name,
    }
    figures = Figures(before=await counter.count())
    with Server(*SERVICE, ready=READY, env=env) as server:
        status = await anyio.to_thread.run_sync(server.wait)
    figures.after.append(await counter.settled(figures))
    report(capsys, "uvicorn with Redis down", figures)
    assert status == 3, server.output
    assert "Resource 'cache' failed during startup." in server.output
    assert READY not in server.output
    assert figures.after == [(0, 0)], str(figures)
