"""A reports service run as many replicas: migrations once, a job on the leader only.

Every replica runs the same code. At startup one replica migrates the schema
while the others wait for it (`run_once`, skipped for good once the version
is recorded); then every replica starts the report job, but only the one that
holds the lock leads it (`leadership`) and writes a report every interval,
passing its fencing token so that the database refuses a write from a leader
that was superseded. When the leader stops, a standby takes over; when its
lock lapses, its job is cancelled and the replica stops with an error, for
its supervisor to restart it as a standby.

The settings come from the environment (see `examples.replicas.settings`):
``REPLICAS_DATABASE_URL`` at least, and ``REPLICAS_LOCKS=redis`` with
``REPLICAS_REDIS_URL`` for Redis locks rather than PostgreSQL's. Run it as a
worker, either way:

    python -m examples.replicas
    lifespan-kit run examples.replicas.app:main

or as a web app (`examples.replicas.web`), with ``/readyz`` (which says who
leads), ``/livez`` and ``/reports``:

    uvicorn examples.replicas.web:app

asyncpg and redis-py run on asyncio only.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import anyio

from examples.replicas.database import SCHEMA_VERSION, Database, open_database
from examples.replicas.settings import Settings
from lifespan_kit import Bundle, Registry
from lifespan_kit.postgres import PostgresLocks
from lifespan_kit.redis import RedisLocks
from lifespan_kit.replicas import Locks, StepOutcome, Term, leadership, run_once

logger = logging.getLogger(__name__)


class SupersededError(RuntimeError):
    """The database recorded a newer leader's token: this replica leads no more."""


registry = Registry(stop_timeout=5)


@registry.resource
def settings() -> Settings:
    return Settings()  # type: ignore[call-arg]  # database_url: from the environment


async def ping_database(database: Database) -> None:
    await database.ping()


@registry.resource(start_timeout=10, health=ping_database)
async def db(settings: Settings) -> AsyncIterator[Database]:
    dsn = settings.database_url.get_secret_value()
    async with open_database(dsn, app_name=settings.service_name) as database:
        yield database


def create_locks(settings: Settings) -> PostgresLocks | RedisLocks:
    """The lock backend the settings choose: PostgreSQL advisory locks by default."""
    if settings.locks == "redis":
        assert settings.redis_url is not None  # the settings require it with redis
        url = settings.redis_url.get_secret_value()
        return RedisLocks(url, prefix=settings.service_name)
    return PostgresLocks(settings.database_url.get_secret_value())


@registry.resource(start_timeout=10, health=Locks.check)
async def locks(settings: Settings) -> AsyncIterator[Locks]:
    async with create_locks(settings) as backend:
        yield backend


# Waiting for another replica's migration counts against start_timeout.
@registry.resource(start_timeout=300)
async def migrations(settings: Settings, db: Database, locks: Locks) -> StepOutcome:
    return await run_once(
        locks,
        settings.lock_key("migrations"),
        db.migrate,
        version=SCHEMA_VERSION,
        timing=settings.timing,
        holder=settings.replica_name,
    )


async def write_reports(db: Database, term: Term, interval: float) -> None:
    """Write a report every `interval` seconds, under this leader's fencing token."""
    while True:
        report_id = await db.write_report(token=term.token, written_by=term.holder)
        if report_id is None:
            message = (
                f"The database refused a report with fencing token {term.token}: "
                "another replica leads with a newer one."
            )
            raise SupersededError(message)
        logger.info("Report %d written (token %d).", report_id, term.token)
        await anyio.sleep(interval)


@registry.background
async def report_job(
    settings: Settings, db: Database, locks: Locks, migrations: StepOutcome
) -> None:
    """Run the job while this replica leads; a lost lock raises LockLostError."""
    key = settings.lock_key("report-job")
    timing, holder = settings.timing, settings.replica_name
    async with leadership(locks, key, timing=timing, holder=holder) as term:
        logger.info(
            "Leading the report job (token %d, schema version %s).",
            term.token,
            migrations.version,
        )
        await write_reports(db, term, settings.interval)


class Resources(Bundle):
    """What the worker and the web app use; the job only needs to run."""

    settings: Settings
    db: Database
    locks: Locks
    migrations: StepOutcome
    report_job: None


async def main(resources: Resources) -> None:
    """Run the worker: the report job runs in the background until it is stopped.

    lifespan_kit logs each change of this replica's standing (standby,
    leading, stepped down); a lost lock fails the job, and the worker.
    """
    outcome = resources.migrations
    by = "this replica" if outcome.ran else "another replica"
    logger.info("Schema version %s, migrated by %s.", outcome.version, by)
    await anyio.sleep_forever()
