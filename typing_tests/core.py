"""Types of the core API: `lifespan_kit` and the `Registry` it exports.

Checked by mypy and pyright in strict mode; never executed. Each
``# type: ignore[...]`` marks a call the API must reject; both checkers flag
an ignore that is no longer needed.
"""

# pyright: reportUnnecessaryTypeIgnoreComment=true

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from typing import Literal, TextIO

from typing_extensions import Self, assert_type

from lifespan_kit import (
    Bundle,
    EventKind,
    HealthReport,
    Lifespan,
    LifespanEvent,
    LifespanEventKind,
    LifespanListener,
    Listener,
    Registry,
    Resource,
    ResourceEvent,
    ResourceHealth,
    ResourceMap,
    ResourceTiming,
    StartupReport,
)


class Settings:
    database_url = "postgresql://localhost/app"


class Database:
    async def execute(self, query: str) -> None: ...


class Connection:
    pass


class Client:
    """Enters as itself, like `httpx.AsyncClient`."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class Pool:
    """Enters as something else: the value is what `__aenter__` returns."""

    async def __aenter__(self) -> Connection:
        return Connection()

    async def __aexit__(self, *exc_info: object) -> bool:
        return False


def check_database(db: Database) -> bool:
    return True


async def ping_database(db: Database) -> None:
    await db.execute("select 1")


registry = Registry(start_timeout=10, stop_timeout=2, health_timeout=1)


# --- Registry.resource, bare ---------------------------------------------------


@registry.resource
async def settings() -> AsyncIterator[Settings]:
    yield Settings()


assert_type(settings, Resource[Settings])


@registry.resource
async def db(settings: Settings) -> AsyncGenerator[Database, None]:
    yield Database()


assert_type(db, Resource[Database])


@registry.resource
def client() -> Client:
    return Client()


assert_type(client, Resource[Client])


@registry.resource
def connection() -> Pool:
    return Pool()


assert_type(connection, Resource[Connection])


@registry.resource
@asynccontextmanager
async def session(db: Database) -> AsyncGenerator[Connection, None]:
    yield Connection()


assert_type(session, Resource[Connection])


@registry.resource
async def migrations(db: Database) -> int:
    return 3


assert_type(migrations, Resource[int])


@registry.resource
def workers() -> Iterator[list[str]]:
    yield ["worker-1"]


assert_type(workers, Resource[list[str]])


@registry.resource
def scratch() -> Generator[bytearray, None, None]:
    yield bytearray()


assert_type(scratch, Resource[bytearray])


@registry.resource
def port() -> int:
    return 8000


assert_type(port, Resource[int])


# --- Registry.resource, with options --------------------------------------------


@registry.resource(stop_timeout=1)
async def opt_database() -> AsyncIterator[Database]:
    yield Database()


assert_type(opt_database, Resource[Database])


@registry.resource(stop_timeout=1, name="opt_client")
def make_client() -> Client:
    return Client()


assert_type(make_client, Resource[Client])


@registry.resource(stop_timeout=1)
def opt_connection() -> Pool:
    return Pool()


assert_type(opt_connection, Resource[Connection])


@registry.resource(stop_timeout=1, depends={"cfg": "settings"})
async def opt_url(cfg: Settings) -> str:
    return cfg.database_url


assert_type(opt_url, Resource[str])


@registry.resource(start_timeout=5, stop_timeout=1, health_timeout=0.5)
def opt_workers() -> Iterator[list[str]]:
    yield ["worker-1"]


assert_type(opt_workers, Resource[list[str]])


@registry.resource(stop_timeout=1, health=lambda value: value is not None)
def opt_port() -> int:
    return 8000


assert_type(opt_port, Resource[int])


@registry.resource(health=check_database)
async def checked_db() -> AsyncIterator[Database]:
    yield Database()


assert_type(checked_db, Resource[Database])


@registry.resource(health=ping_database, health_timeout=1)
def pinged_db() -> Database:
    return Database()


assert_type(pinged_db, Resource[Database])


# --- Registry.add -----------------------------------------------------------------


async def open_database() -> AsyncIterator[Database]:
    yield Database()


async def load_settings() -> Settings:
    return Settings()


def iter_workers() -> Iterator[list[str]]:
    yield ["worker-1"]


def read_port() -> int:
    return 8000


assert_type(registry.add("add_database", open_database), Resource[Database])
assert_type(registry.add("add_client", Client), Resource[Client])
assert_type(registry.add("add_connection", Pool), Resource[Connection])
assert_type(registry.add("add_settings", load_settings), Resource[Settings])
assert_type(registry.add("add_workers", iter_workers), Resource[list[str]])
assert_type(registry.add("add_port", read_port), Resource[int])
assert_type(registry.add("answer", 42), Resource[int])
assert_type(registry.add("greeting", "hello"), Resource[str])

assert_type(
    registry.add("opt_add_database", open_database, stop_timeout=1),
    Resource[Database],
)
assert_type(
    registry.add("opt_add_client", Client, start_timeout=1, stop_timeout=1),
    Resource[Client],
)
assert_type(
    registry.add("opt_add_connection", Pool, stop_timeout=1), Resource[Connection]
)
assert_type(
    registry.add("opt_add_settings", load_settings, health_timeout=1),
    Resource[Settings],
)
assert_type(
    registry.add("opt_add_workers", iter_workers, stop_timeout=1),
    Resource[list[str]],
)
assert_type(
    registry.add("opt_add_port", read_port, depends={}, stop_timeout=1),
    Resource[int],
)

# A health check receives the resource's value, typed.
assert_type(
    registry.add("checked_database", open_database, health=check_database),
    Resource[Database],
)
assert_type(
    registry.add("pinged_database", open_database, health=ping_database),
    Resource[Database],
)
assert_type(registry.add("checked_answer", 42, health=lambda n: n > 0), Resource[int])

# A plain value has no start or stop to time, and no parameters to map.
registry.add("timed_answer", 42, stop_timeout=1)  # type: ignore[call-overload]
registry.add("mapped_answer", 42, depends={"n": "port"})  # type: ignore[call-overload]

# --- Sync context managers and thread=True ---------------------------------------
# The value is what `__enter__` returns, as with `with`.


class SyncPool:
    """Enters as something else, with `with`, like a sync driver's pool."""

    def __enter__(self) -> Connection:
        return Connection()

    def __exit__(self, *exc_info: object) -> None:
        return None


@registry.resource
def sync_connection() -> SyncPool:
    return SyncPool()


assert_type(sync_connection, Resource[Connection])


@registry.resource(thread=True)
@contextmanager
def sync_session(db: Database) -> Generator[Connection, None, None]:
    yield Connection()


assert_type(sync_session, Resource[Connection])


@registry.resource(thread=True, stop_timeout=1)
def blocking_workers() -> Iterator[list[str]]:
    yield ["worker-1"]


assert_type(blocking_workers, Resource[list[str]])


def open_log() -> TextIO:
    return open("app.log")  # entered and closed by the lifespan


assert_type(registry.add("sync_pool", SyncPool), Resource[Connection])
assert_type(registry.add("executor", ThreadPoolExecutor), Resource[ThreadPoolExecutor])
assert_type(registry.add("threaded_pool", SyncPool, thread=True), Resource[Connection])
# A file is an iterator too, but `with` enters it: the value is the file.
assert_type(registry.add("log_file", open_log), Resource[TextIO])
assert_type(registry.add("threaded_client", Client, thread=True), Resource[Client])

# A plain value is never run, in a thread or elsewhere; nor is a background task.
registry.add("threaded_answer", 42, thread=True)  # type: ignore[call-overload]
registry.background(thread=True)  # type: ignore[call-overload]

# --- Registry -------------------------------------------------------------------

assert_type(registry["db"], Resource[object])
assert_type("db" in registry, bool)
assert_type(len(registry), int)
assert_type(list(registry), list[Resource[object]])
assert_type(registry.override(db=Database()), Registry)
assert_type(registry.override(db=open_database, port=8080), Registry)
assert_type(registry.check(), tuple[str, ...])
registry.include(Registry())

# A handle is covariant in its value: a Resource[Database] is a Resource[object].
anything: Resource[object] = db
assert_type(db.name, str)


# --- Bundles and lifespans ------------------------------------------------------


class Resources(Bundle):
    db: Database
    port: int


assert_type(registry.lifespan(Resources), Lifespan[Resources])
assert_type(registry.lifespan(), Lifespan[ResourceMap])
assert_type(registry.lifespan(Resources, concurrency=1), Lifespan[Resources])
assert_type(registry.lifespan(concurrency=4, listeners=[print]), Lifespan[ResourceMap])
assert_type(registry.check(Resources), tuple[str, ...])

# A lifespan is covariant in what it yields.
any_bundle: Lifespan[Bundle] = registry.lifespan(Resources)

# Only a Bundle subclass can be a bundle.
registry.lifespan(Database)  # type: ignore[type-var]
registry.check(Database)  # type: ignore[arg-type]


async def use_bundle() -> None:
    async with registry.lifespan(Resources) as resources:
        assert_type(resources, Resources)
        assert_type(resources.db, Database)
        assert_type(resources.port, int)


async def use_resource_map() -> None:
    lifespan = registry.lifespan()
    async with lifespan as resources:
        assert_type(resources, ResourceMap)
        assert_type(resources[db], Database)
        assert_type(resources[port], int)
        assert_type(resources[session], Connection)
        assert_type(resources["db"], object)
        resources[42]  # type: ignore[call-overload]
        assert_type(lifespan.resources, ResourceMap)
        assert_type(lifespan.report, StartupReport)
        assert_type(await lifespan.health(), HealthReport)
        assert_type(lifespan.is_running, bool)
        assert_type(lifespan.resource_names, tuple[str, ...])


# --- Reports and events ---------------------------------------------------------


def read_report(report: StartupReport) -> None:
    assert_type(report.timings, Mapping[str, ResourceTiming])
    assert_type(report.total, float)
    assert_type(report.critical_path, tuple[str, ...])
    timing = report.timings["db"]
    assert_type(timing.resource_name, str)
    assert_type(timing.began, float)
    assert_type(timing.duration, float)
    assert_type(timing.ended, float)


def read_health(report: HealthReport) -> None:
    assert_type(report.is_healthy, bool)
    assert_type(report.resources, dict[str, ResourceHealth])
    outcome = report.resources["db"]
    assert_type(outcome.status, Literal["healthy", "unhealthy"])
    assert_type(outcome.duration, float)
    assert_type(outcome.error, str | None)


def on_event(event: ResourceEvent) -> None:
    assert_type(event.resource_name, str)
    assert_type(event.kind, EventKind)
    assert_type(event.duration, float | None)
    assert_type(event.error, BaseException | None)


listener: Listener = on_event
registry.add_listener(on_event)
registry.add_listener(lambda event: None)


def on_resource_event(event: ResourceEvent) -> None:
    assert_type(event.run_id, int)


def on_lifespan_event(event: LifespanEvent) -> None:
    assert_type(event.kind, LifespanEventKind)
    assert_type(event.run_id, int)
    assert_type(event.resources, tuple[Resource[object], ...])
    assert_type(event.duration, float | None)
    assert_type(event.error, BaseException | None)
    assert_type(event.report, StartupReport | None)
    assert_type(event.health, HealthReport | None)


class Observer:
    def __call__(self, event: ResourceEvent, /) -> None: ...
    def on_lifespan_event(self, event: LifespanEvent, /) -> None: ...


class NotAnObserver:
    def __call__(self, event: ResourceEvent, /) -> None: ...


observer: LifespanListener = Observer()
not_an_observer: LifespanListener = NotAnObserver()  # type: ignore[assignment]
as_listener: Listener = Observer()
registry.add_listener(Observer())
lifespan_kind: LifespanEventKind = "checked"
not_a_lifespan_kind: LifespanEventKind = "failed"  # type: ignore[assignment]
