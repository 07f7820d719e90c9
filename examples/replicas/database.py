"""The reports, in PostgreSQL: the schema's migration and the leader's fenced writes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Final

import asyncpg
from pydantic import BaseModel

SCHEMA_VERSION: Final = "1"

# One transaction: a replica that dies halfway leaves no table behind. It is
# also idempotent, because it may run twice: the lock backend records the step
# as done only after the commit, so a replica that dies between the two leaves
# it to the next one (and Redis without persistence forgets what was done).
MIGRATION: Final = """
create table if not exists reports (
    id bigserial primary key,
    token bigint not null,
    written_by text not null,
    written_at timestamptz not null default now()
);
create table if not exists report_fence (
    singleton boolean primary key default true check (singleton),
    token bigint not null
);
insert into report_fence (token) values (0) on conflict do nothing;
"""

# Fencing: the store refuses a write whose token is older than the newest it
# has seen. A leader that lost its lock without noticing (a process paused for
# longer than its lease) writes with its old token, after the new leader wrote
# with a greater one, and nothing is inserted. The fence's row lock queues
# concurrent writers: an older token waits for the newer writer's commit, then
# finds `token <= $1` false. (`where $1 >= (select max(token) from reports)`
# alone would let two concurrent writers both pass the check.)
WRITE_REPORT: Final = """
with fence as (
    update report_fence set token = $1 where token <= $1 returning token
)
insert into reports (token, written_by)
select token, $2 from fence
returning id
"""


class Report(BaseModel):
    """A report as stored and as served."""

    id: int
    token: int
    written_by: str
    written_at: datetime


class Database:
    """The service's tables, through an asyncpg connection pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def migrate(self) -> None:
        """Create the tables, in one transaction."""
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(MIGRATION)

    async def write_report(self, *, token: int, written_by: str) -> int | None:
        """Write a report under fencing `token`; None if a newer token wrote first."""
        report_id: int | None = await self._pool.fetchval(
            WRITE_REPORT, token, written_by
        )
        return report_id

    async def latest_reports(self, limit: int = 20) -> list[Report]:
        """Return the latest reports, newest first."""
        rows = await self._pool.fetch(
            "select id, token, written_by, written_at from reports"
            " order by id desc limit $1",
            limit,
        )
        return [Report.model_validate(dict(row)) for row in rows]

    async def ping(self) -> None:
        """Fail unless the database answers."""
        await self._pool.fetchval("select 1")


@asynccontextmanager
async def open_database(dsn: str, *, app_name: str) -> AsyncIterator[Database]:
    """Open a connection pool; close every connection on exit."""
    async with asyncpg.create_pool(
        dsn, min_size=1, max_size=4, server_settings={"application_name": app_name}
    ) as pool:
        yield Database(pool)
