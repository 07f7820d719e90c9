"""One replica of a deployment, run as a process by tests/test_replicas_processes.py.

``python -m tests.replica_worker`` runs a worker through `lifespan_kit.run`:
a PostgreSQL pool for its records, a lock backend (PostgreSQL advisory locks
or Redis leases), a run-once step and a leader-only background task. The
environment variables that `environment` sets choose the backend and the
test's schema, which holds the records (tables `RECORDS`) and names the
locks (and the Redis keys' prefix):

- `step_attempts`: a replica began the step (committed at once, while the
  step's own transaction is still open);
- `step_runs`: the step's effect, committed with its transaction, with the
  time the step finished;
- `startups`: a replica finished its startup, and whether it ran the step;
- `terms`: each leadership interval: when the block was entered (the
  `Term.since` of the term) and when it was left (after it was cancelled).

Each resource event is written to stdout as ``event <kind> <resource>``.
With ``REPLICA_WAIT_FOR_GO=1`` the replica says ``waiting for go`` and reads
a line from stdin before it starts, so that a test starts several at once.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final

import anyio
import asyncpg

import lifespan_kit
from lifespan_kit import Bundle, Registry, ResourceEvent
from lifespan_kit.postgres import PostgresLocks
from lifespan_kit.redis import RedisLocks
from lifespan_kit.replicas import Locks, StepOutcome, Timing, leadership, run_once

TIMING: Final = Timing(lease=2.0, renew_deadline=1.2, retry=0.2)
STEP_VERSION: Final = "1"
WAITING_FOR_GO: Final = "waiting for go"
# PostgreSQL's clock, in seconds since the epoch, as time.time() counts them.
NOW: Final = "extract(epoch from clock_timestamp())::float8"

RECORDS: Final = """
create table step_attempts (holder text not null, began float8 not null);
create table step_runs (holder text not null, began float8 not null, finished float8);
create table startups (
    holder text primary key, pid int not null, finished float8 not null,
    ran boolean not null, waited float8 not null
);
create table terms (
    id bigserial primary key, holder text not null, pid int not null,
    token bigint not null, began float8 not null, ended float8
);
"""


def environment(
    *,
    database_url: str,
    schema: str,
    locks: str,
    locks_url: str,
    holder: str,
    step_seconds: float = 0.0,
    wait_for_go: bool = False,
) -> dict[str, str]:
    """The variables that configure one replica, added to this process's own."""
    return {
        **os.environ,
        "REPLICA_DATABASE_URL": database_url,
        "REPLICA_SCHEMA": schema,
        "REPLICA_LOCKS": locks,
        "REPLICA_LOCKS_URL": locks_url,
        "REPLICA_HOLDER": holder,
        "REPLICA_STEP_SECONDS": str(step_seconds),
        "REPLICA_WAIT_FOR_GO": "1" if wait_for_go else "0",
    }


@dataclass(frozen=True)
class Settings:
    """What `environment` set."""

    database_url: str
    schema: str
    locks: str
    locks_url: str
    holder: str
    step_seconds: float

    @classmethod
    def from_environment(cls) -> Settings:
        variables = os.environ
        return cls(
            database_url=variables["REPLICA_DATABASE_URL"],
            schema=variables["REPLICA_SCHEMA"],
            locks=variables["REPLICA_LOCKS"],
            locks_url=variables["REPLICA_LOCKS_URL"],
            holder=variables["REPLICA_HOLDER"],
            step_seconds=float(variables["REPLICA_STEP_SECONDS"]),
        )

    def key(self, name: str) -> str:
        """A lock key of this deployment only."""
        return f"{self.schema}:{name}"


registry = Registry(stop_timeout=5)


@registry.resource
def settings() -> Settings:
    return Settings.from_environment()


@registry.resource
async def db(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    # Not named after the holder: the tests end the lock's sessions by that name.
    server_settings = {
        "search_path": settings.schema,
        "application_name": f"records of {settings.holder}",
    }
    async with asyncpg.create_pool(
        settings.database_url, min_size=2, max_size=2, server_settings=server_settings
    ) as pool:
        yield pool


@registry.resource
async def locks(settings: Settings) -> AsyncIterator[Locks]:
    backend: PostgresLocks | RedisLocks
    if settings.locks == "postgres":
        table = f"{settings.schema}.lifespan_kit_steps"
        backend = PostgresLocks(settings.locks_url, table=table)
    else:
        backend = RedisLocks(settings.locks_url, prefix=settings.schema)
    async with backend:
        yield backend


@registry.resource
async def migrations(settings: Settings, db: asyncpg.Pool, locks: Locks) -> StepOutcome:
    holder = settings.holder

    async def step() -> None:
        async with db.acquire() as connection, connection.transaction():
            await connection.execute(
                f"insert into step_runs (holder, began) values ($1, {NOW})", holder
            )
            await db.execute(
                f"insert into step_attempts (holder, began) values ($1, {NOW})", holder
            )
            await anyio.sleep(settings.step_seconds)
            await connection.execute(
                f"update step_runs set finished = {NOW} where holder = $1", holder
            )

    key = settings.key("migrations")
    return await run_once(
        locks, key, step, version=STEP_VERSION, timing=TIMING, holder=holder
    )


@registry.background
async def leader(
    settings: Settings, db: asyncpg.Pool, locks: Locks, migrations: StepOutcome
) -> None:
    key, holder = settings.key("leader"), settings.holder
    async with leadership(locks, key, timing=TIMING, holder=holder) as term:
        # Shielded: a lock lost meanwhile cancels the block once it is recorded.
        with anyio.CancelScope(shield=True):
            term_id = await db.fetchval(
                "insert into terms (holder, pid, token, began)"
                " values ($1, $2, $3, $4) returning id",
                holder,
                os.getpid(),
                term.token,
                term.since,
            )
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.move_on_after(TIMING.renew_deadline, shield=True):
                await db.execute(
                    f"update terms set ended = {NOW} where id = $1", term_id
                )


class Resources(Bundle):
    """What main records; the leader only needs to run."""

    settings: Settings
    db: asyncpg.Pool
    migrations: StepOutcome
    leader: None


async def main(resources: Resources) -> None:
    """Record that this replica finished its startup, then run until stopped."""
    outcome = resources.migrations
    await resources.db.execute(
        "insert into startups (holder, pid, finished, ran, waited)"
        f" values ($1, $2, {NOW}, $3, $4)",
        resources.settings.holder,
        os.getpid(),
        outcome.ran,
        outcome.waited,
    )
    await anyio.sleep_forever()


def print_event(event: ResourceEvent) -> None:
    print(f"event {event.kind} {event.resource_name}", flush=True)


def run_replica() -> int:
    """Run the replica until it is stopped; return its exit status."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if os.environ["REPLICA_WAIT_FOR_GO"] == "1":
        print(WAITING_FOR_GO, flush=True)
        sys.stdin.readline()
    return lifespan_kit.run(main, registry, listeners=[print_event])


if __name__ == "__main__":
    sys.exit(run_replica())
