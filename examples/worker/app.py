"""A queue consumer: jobs in an SQLite table, handled one at a time, stopped cleanly.

Run it with the command line, which handles SIGINT and SIGTERM and shows each
resource's state:

    lifespan-kit run examples.worker.app:main

or as a script (``python -m examples.worker.app``), which does the same through
`lifespan_kit.run`. Add jobs from another shell with
``python -m examples.worker.app enqueue "some words" "more words"``.

The worker claims the oldest queued job, counts its words, stores the result and
takes the next one. A background task puts back jobs that a worker claimed but
never finished (it crashed, or was killed), so they are handled again. Settings
come from the environment: ``WORKER_DATABASE`` (by default
``lifespan_kit_worker.sqlite3`` in the system's temporary folder, so that the
worker and ``enqueue`` share it from any folder), ``WORKER_POLL_INTERVAL``,
``WORKER_STALE_AFTER`` and ``WORKER_EXIT_WHEN_IDLE``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import ClassVar, cast

import anyio
import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field

import lifespan_kit
from lifespan_kit import Bundle, Registry

logger = logging.getLogger(__name__)


class Settings(BaseModel):
    """The worker's settings."""

    model_config: ClassVar[ConfigDict] = ConfigDict(frozen=True, extra="forbid")

    database: str = os.path.join(tempfile.gettempdir(), "lifespan_kit_worker.sqlite3")
    poll_interval: float = Field(default=0.5, gt=0)
    stale_after: float = Field(default=30.0, gt=0)
    exit_when_idle: bool = False

    @classmethod
    def from_environment(cls) -> Settings:
        """Read WORKER_DATABASE, WORKER_POLL_INTERVAL, ... (validated by pydantic)."""
        prefix = "WORKER_"
        return cls.model_validate(
            {
                name.removeprefix(prefix).lower(): value
                for name, value in os.environ.items()
                if name.startswith(prefix)
            }
        )


@dataclass(frozen=True)
class Job:
    """A unit of work taken from the queue."""

    id: int
    payload: str


SCHEMA = """
create table if not exists jobs (
    id integer primary key,
    payload text not null,
    status text not null default 'queued',
    claimed_at real,
    result text
)
"""


class JobQueue:
    """Jobs in an SQLite table; each call runs in a worker thread."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self._lock = anyio.Lock()

    async def _run(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        async with self._lock:
            return await anyio.to_thread.run_sync(self._execute, sql, params)

    def _execute(
        self, sql: str, params: tuple[object, ...]
    ) -> list[tuple[object, ...]]:
        with self._connection:
            return self._connection.execute(sql, params).fetchall()

    async def create(self) -> None:
        """Create the table, unless it exists."""
        await self._run(SCHEMA)

    async def enqueue(self, payload: str) -> int:
        """Add a job; return its id."""
        [(job_id,)] = await self._run(
            "insert into jobs (payload) values (?) returning id", payload
        )
        return cast("int", job_id)  # an integer primary key

    async def claim(self) -> Job | None:
        """Mark the oldest queued job as running and return it, if there is one."""
        rows = await self._run(
            "update jobs set status = 'running', claimed_at = ? where id = "
            "(select id from jobs where status = 'queued' order by id limit 1) "
            "returning id, payload",
            time.time(),
        )
        if not rows:
            return None
        [(job_id, payload)] = rows
        return Job(cast("int", job_id), cast("str", payload))  # as the schema says

    async def finish(self, job_id: int, status: str, result: str) -> None:
        """Record a job's outcome: 'done' or 'failed'."""
        await self._run(
            "update jobs set status = ?, result = ? where id = ?",
            status,
            result,
            job_id,
        )

    async def requeue_stale(self, older_than: float) -> int:
        """Put back running jobs claimed more than `older_than` seconds ago."""
        rows = await self._run(
            "update jobs set status = 'queued', claimed_at = null "
            "where status = 'running' and claimed_at < ? returning id",
            time.time() - older_than,
        )
        return len(rows)

    async def is_idle(self) -> bool:
        """Whether no job is queued or running."""
        [(count,)] = await self._run(
            "select count(*) from jobs where status in ('queued', 'running')"
        )
        return count == 0

    def close(self) -> None:
        """Close the connection (call it in a worker thread)."""
        self._connection.close()


# --8<-- [start:resources]
registry = Registry(stop_timeout=5)


@registry.resource
def settings() -> Settings:
    return Settings.from_environment()


@registry.resource(start_timeout=10)
async def queue(settings: Settings) -> AsyncIterator[JobQueue]:
    connection = await anyio.to_thread.run_sync(
        lambda: sqlite3.connect(settings.database, check_same_thread=False)
    )
    jobs = JobQueue(connection)
    try:
        await jobs.create()
        yield jobs
    finally:
        await anyio.to_thread.run_sync(jobs.close)


# --8<-- [end:resources]


# --8<-- [start:background]
@registry.background
async def requeuer(queue: JobQueue, settings: Settings) -> None:
    """Put back jobs that a worker claimed but never finished, forever."""
    while True:
        if count := await queue.requeue_stale(settings.stale_after):
            logger.warning("Requeued %d stale job(s).", count)
        await anyio.sleep(settings.stale_after / 2)


# --8<-- [end:background]


# --8<-- [start:bundle]
class Resources(Bundle):
    """What the worker uses; the requeuer only needs to run."""

    settings: Settings
    queue: JobQueue
    requeuer: None


# --8<-- [end:bundle]


def count_words(payload: str) -> str:
    """The job itself; an empty payload is an error the worker survives."""
    if not payload.strip():
        message = "the payload is empty"
        raise ValueError(message)
    return str(len(payload.split()))


# --8<-- [start:main]
async def main(resources: Resources) -> None:
    """Handle jobs until stopped (or until idle, with WORKER_EXIT_WHEN_IDLE)."""
    jobs, settings = resources.queue, resources.settings
    while True:
        job = await jobs.claim()
        if job is None:
            if settings.exit_when_idle and await jobs.is_idle():
                return
            await anyio.sleep(settings.poll_interval)
            continue
        try:
            result = count_words(job.payload)
        except ValueError as exc:
            await jobs.finish(job.id, "failed", str(exc))
            logger.warning("Job %d failed: %s", job.id, exc)
        else:
            await jobs.finish(job.id, "done", result)
            logger.info("Job %d done: %s word(s).", job.id, result)


# --8<-- [end:main]


class QueueOnly(Bundle):
    """Just the queue: enough to add jobs."""

    queue: JobQueue


async def enqueue(payloads: list[str]) -> list[int]:
    """Add jobs, starting only the queue and what it needs."""
    async with registry.lifespan(QueueOnly) as resources:
        return [await resources.queue.enqueue(payload) for payload in payloads]


# --8<-- [start:entrypoint]
if __name__ == "__main__":
    if sys.argv[1:2] == ["enqueue"]:
        print(*anyio.run(enqueue, sys.argv[2:]))
    else:
        logging.basicConfig(level=logging.INFO)
        sys.exit(lifespan_kit.run(main, registry))
# --8<-- [end:entrypoint]
