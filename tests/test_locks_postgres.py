"""PostgresLocks on a real PostgreSQL: contention, loss, fencing, run_once, leadership.

Several `PostgresLocks` on one server stand for several replicas. Each test
names its connections and holders after a prefix of its own, so that it can
count them in pg_stat_activity, and drops the tables it created.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeAlias, cast
from urllib.parse import urlsplit

import anyio
import anyio.abc
import asyncpg
import pytest

from lifespan_kit import Lifespan, Registry
from lifespan_kit.errors import (
    BackgroundTaskError,
    InvalidOptionError,
    LockLostError,
    LockUnavailableError,
)
from lifespan_kit.postgres import PostgresLocks, _PostgresLease
from lifespan_kit.replicas import (
    Done,
    Lease,
    Locks,
    StepOutcome,
    Timing,
    leadership,
    run_once,
)
from tests.integrations.imports import import_with_blocked
from tests.servers import POSTGRES_DSN_VARIABLE, postgres_dsn

Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record]"

FAST = Timing(lease=1.5, renew_deadline=1.0, retry=0.2)
# Debian installs it in /usr/sbin, which is not on every user's PATH.
PGBOUNCER = shutil.which(
    "pgbouncer", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"])
)


@pytest.fixture(params=[pytest.param("asyncio", id="asyncio")])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run on asyncio only: asyncpg, which PostgresLocks wraps, has no trio support."""
    return str(request.param)


@pytest.fixture
def dsn() -> str:
    """The test server's DSN; the test skips without one (fails in CI)."""
    return postgres_dsn()


@pytest.fixture
async def admin(dsn: str) -> AsyncIterator[Connection]:
    """A plain connection that inspects the server."""
    connection = await asyncpg.connect(
        dsn, server_settings={"application_name": "lifespan_kit-test-admin"}
    )
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def prefix(admin: Connection) -> AsyncIterator[str]:
    """A name of this test's own; the tables named after it are dropped after it."""
    prefix = f"lk_test_{secrets.token_hex(5)}"
    yield prefix
    tables = await admin.fetch(
        "SELECT tablename FROM pg_tables WHERE tablename LIKE $1", f"{prefix}%"
    )
    for [table] in tables:
        await admin.execute(f'DROP TABLE "{table}"')


def named(dsn: str, name: str) -> str:
    """The DSN with an application_name, for the connection it opens for queries."""
    return f"{dsn}{'&' if urlsplit(dsn).query else '?'}application_name={name}"


def replica_locks(dsn: str, prefix: str, name: str) -> PostgresLocks:
    """PostgresLocks whose query connection is named `<prefix>-<name>`."""
    return PostgresLocks(named(dsn, f"{prefix}-{name}"), table=f"{prefix}_steps")


async def count(admin: Connection, pattern: str) -> int:
    """Count the server's connections whose application_name is LIKE `pattern`."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1"
    return int(await admin.fetchval(query, pattern))


async def wait_until(
    condition: Callable[[], Awaitable[bool]], limit: float = 5.0
) -> None:
    """Await `condition()` until it is true, failing after `limit` seconds."""
    with anyio.fail_after(limit):
        while not await condition():  # noqa: ASYNC110  # a server's state, untold
            await anyio.sleep(0.02)


async def settled(admin: Connection, pattern: str, expected: int) -> None:
    """Wait until `expected` connections match: a backend ends soon after its client."""

    async def reached() -> bool:
        return await count(admin, pattern) == expected

    await wait_until(reached)


async def terminate(admin: Connection, name: str) -> None:
    """End the connections named `name` from the server, waiting until they end."""
    await admin.execute(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
        "WHERE application_name = $1",
        name,
    )


async def take(locks: Locks, key: str, holder: str, timing: Timing = FAST) -> Lease:
    """Take a key that must be free."""
    lease = await locks.try_acquire(key, holder=holder, timing=timing)
    assert lease is not None
    return lease


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[str]]:
    """Collect what reaches the event loop's exception handler during the test."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    errors: list[str] = []
    loop.set_exception_handler(lambda _, context: errors.append(str(context)))
    try:
        yield errors
    finally:
        loop.set_exception_handler(previous)


async def connected() -> bool:
    """Say whether no connection that PostgresLocks opens is still being opened."""
    names = [task.get_name() for task in asyncio.all_tasks()]
    return "lifespan_kit.postgres connecting" not in names


# --- taking, renewing and releasing ---------------------------------------------


async def test_only_one_of_two_instances_holds_a_key_until_it_is_released(
    dsn: str, prefix: str
) -> None:
    """The second gets None and sees the holder; after the release, it takes the key."""
    holder_a, holder_b = f"{prefix}-pod-a", f"{prefix}-pod-b"
    async with (
        replica_locks(dsn, prefix, "a") as a,
        replica_locks(dsn, prefix, "b") as b,
    ):
        first = await take(a, "job", holder_a)
        assert await b.try_acquire("job", holder=holder_b, timing=FAST) is None
        assert await b.holder_of("job") == holder_a
        await first.release()
        assert await b.holder_of("job") is None
        await take(b, "job", holder_b)
        assert await a.holder_of("job") == holder_b


async def test_an_instance_cannot_take_a_key_it_already_holds(
    dsn: str, prefix: str
) -> None:
    """Advisory locks are re-entrant per session, yet a second try gets None."""
    async with replica_locks(dsn, prefix, "a") as locks:
        held = await take(locks, "job", f"{prefix}-first")
        assert await locks.try_acquire("job", holder=f"{prefix}-2", timing=FAST) is None
        other = await take(locks, "other-job", f"{prefix}-first")
        await held.renew()
        await other.renew()


async def test_a_contender_that_keeps_trying_reuses_one_connection(
    dsn: str, prefix: str, admin: Connection
) -> None:
    """Tries every retry period do not open a connection each."""
    holder_b = f"{prefix}-pod-b"
    async with (
        replica_locks(dsn, prefix, "a") as a,
        replica_locks(dsn, prefix, "b") as b,
    ):
        await take(a, "job", f"{prefix}-pod-a")
        for _ in range(5):
            assert await b.try_acquire("job", holder=holder_b, timing=FAST) is None
        assert await count(admin, holder_b) == 1


async def test_released_connections_are_kept_for_retries_two_at_most(
    dsn: str, prefix: str, admin: Connection
) -> None:
    """Four released leases leave two idle connections besides the query one."""
    async with replica_locks(dsn, prefix, "a") as locks:
        leases = [await take(locks, f"job-{n}", f"{prefix}-h{n}") for n in range(4)]
        assert await count(admin, f"{prefix}%") == 5
        for lease in leases:
            await lease.release()
        await settled(admin, f"{prefix}%", 3)
        again = await take(locks, "job-0", f"{prefix}-again")
        assert await locks.holder_of("job-0") == f"{prefix}-again"
        await again.release()


async def test_a_holder_whose_connection_is_terminated_loses_the_lock(
    dsn: str, prefix: str, admin: Connection
) -> None:
    """Its renewal raises LockLostError; another instance takes the key at once."""
    holder_a = f"{prefix}-pod-a"
    async with (
        replica_locks(dsn, prefix, "a") as a,
        replica_locks(dsn, prefix, "b") as b,
    ):
        lease = await take(a, "job", holder_a)
        await terminate(admin, holder_a)
        with pytest.raises(LockLostError) as info:
            await lease.renew()
        error = info.value
        assert (error.key, error.holder, error.backend) == (
            "job",
            holder_a,
            a.description,
        )
        assert error.reason.startswith("renewing it failed with ")
        await take(b, "job", f"{prefix}-pod-b")
        with pytest.raises(LockLostError, match="released, or an earlier renewal"):
            await lease.mark_done("1")
        assert await a.last_done("job") is None


async def test_release_after_the_connection_ended_warns_and_frees_nothing_else(
    dsn: str, prefix: str, admin: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """It does not raise, logs a warning, and the new holder keeps its lock."""
    holder_a, holder_b = f"{prefix}-pod-a", f"{prefix}-pod-b"
    async with (
        replica_locks(dsn, prefix, "a") as a,
        replica_locks(dsn, prefix, "b") as b,
    ):
        lost = await take(a, "job", holder_a)
        await terminate(admin, holder_a)
        kept = await take(b, "job", holder_b)
        with caplog.at_level(logging.WARNING, logger="lifespan_kit.postgres"):
            await lost.release()
            await lost.release()
        [record] = caplog.records
        assert record.getMessage().startswith(
            f"Could not release lock 'job' on {a.description}: unlocking failed with "
        )
        assert await a.holder_of("job") == holder_b
        await kept.renew()


async def test_a_session_that_no_longer_holds_its_lock_is_caught_by_every_call(
    dsn: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Renew and mark_done raise LockLostError and record nothing; release warns."""
    async with replica_locks(dsn, prefix, "a") as locks:
        leases = [await take(locks, key, f"{prefix}-h") for key in ("a", "b", "c")]
        for lease in leases:
            assert isinstance(lease, _PostgresLease)
            await lease._connection.execute("SELECT pg_advisory_unlock_all()")
        renewed, marked, released = leases
        with pytest.raises(LockLostError, match="no longer held by its session"):
            await renewed.renew()
        with pytest.raises(LockLostError, match="no longer held by its session"):
            await marked.mark_done("1")
        assert await locks.last_done("b") is None
        with caplog.at_level(logging.WARNING, logger="lifespan_kit.postgres"):
            await released.release()
        [record] = caplog.records
        assert record.getMessage().endswith(
            "the server showed it no longer held by this connection; "
            "its connection was closed."
        )


async def test_tokens_strictly_increase_across_keys_and_instances(
    dsn: str, prefix: str
) -> None:
    """Each lease's fencing token is greater than every token handed out before."""
    async with (
        replica_locks(dsn, prefix, "a") as a,
        replica_locks(dsn, prefix, "b") as b,
    ):
        tokens: list[int] = []
        for locks, key in ((a, "x"), (b, "y"), (a, "y"), (b, "x"), (a, "x")):
            lease = await take(locks, key, f"{prefix}-h")
            tokens.append(lease.token)
            await lease.release()
        held = [await take(a, "x", f"{prefix}-h"), await take(b, "y", f"{prefix}-h")]
        tokens += [lease.token for lease in held]
        assert tokens == sorted(set(tokens))


async def test_the_session_keeps_alive_and_names_itself_from_the_timing(
    dsn: str, prefix: str
) -> None:
    """Keepalives cut a silent client off within about the lease; it is named."""
    timing = Timing(lease=15, renew_deadline=10, retry=2)
    async with replica_locks(dsn, prefix, "a") as locks:
        lease = await take(locks, "job", f"{prefix}-holder", timing)
        assert isinstance(lease, _PostgresLease)
        settings = await lease._connection.fetchrow(
            "SELECT current_setting('tcp_keepalives_idle') AS idle,"
            " current_setting('tcp_keepalives_interval') AS interval,"
            " current_setting('tcp_keepalives_count') AS count,"
            " current_setting('tcp_user_timeout') AS user_timeout,"
            " current_setting('application_name') AS name"
        )
    assert settings is not None
    assert dict(settings) == {
        "idle": "5",
        "interval": "2",
        "count": "3",
        "user_timeout": "15000",
        "name": f"{prefix}-holder",
    }


async def test_holder_of_reads_the_first_63_bytes_of_the_holder(
    dsn: str, prefix: str
) -> None:
    """PostgreSQL keeps 63 bytes of an application_name; a free key has no holder."""
    holder = f"{prefix}-{'h' * 100}"
    async with replica_locks(dsn, prefix, "a") as locks:
        lease = await take(locks, "job", holder)
        assert lease.holder == holder
        assert await locks.holder_of("job") == holder[:63]
        assert await locks.holder_of("free") is None


# --- what is recorded as done ----------------------------------------------------


async def test_mark_done_records_the_version_and_counts_each_lease_once(
    dsn: str, prefix: str, admin: Connection
) -> None:
    """last_done is None without the table or the row, then the version and count."""
    async with (
        replica_locks(dsn, prefix, "a") as a,
        replica_locks(dsn, prefix, "b") as b,
    ):
        assert await b.last_done("migrations") is None
        first = await take(a, "migrations", f"{prefix}-h")
        await first.mark_done("41")
        assert await b.last_done("migrations") == Done("41", 1, frozenset({"41"}))
        await first.mark_done("42")
        assert await b.last_done("migrations") == Done("42", 1, frozenset({"41", "42"}))
        await first.release()
        second = await take(b, "migrations", f"{prefix}-h")
        await second.mark_done(None)
        assert await a.last_done("migrations") == Done(None, 2, frozenset({"41", "42"}))
        assert await b.last_done("seeding") is None
        token = await admin.fetchval(
            f"SELECT token FROM {prefix}_steps WHERE key = 'lifespan_kit:migrations'"
        )
        assert token == second.token


async def test_renewals_and_a_record_at_the_same_time_take_turns(
    dsn: str, prefix: str
) -> None:
    """One connection runs one query at a time: concurrent calls wait for each other."""
    async with replica_locks(dsn, prefix, "a") as locks:
        lease = await take(locks, "migrations", f"{prefix}-h")

        async def renew_often() -> None:
            for _ in range(20):
                await lease.renew()

        async with anyio.create_task_group() as tg:
            tg.start_soon(renew_often)
            tg.start_soon(renew_often)
            await lease.mark_done("1")
        assert await locks.last_done("migrations") == Done("1", 1, frozenset({"1"}))
        await lease.release()


async def test_holders_of_different_keys_create_the_table_together(
    dsn: str, prefix: str
) -> None:
    """Concurrent first records all succeed: creating the table is serialized."""
    keys = [f"step-{n}" for n in range(5)]
    async with replica_locks(dsn, prefix, "a") as locks:
        leases = [await take(locks, key, f"{prefix}-h") for key in keys]
        async with anyio.create_task_group() as tg:
            for lease in leases:
                tg.start_soon(lease.mark_done, "7")
        assert [await locks.last_done(key) for key in keys] == [
            Done("7", 1, frozenset({"7"}))
        ] * 5


# --- cancellation and closing ------------------------------------------------------


async def test_a_cancelled_try_leaves_no_connection_open_and_the_key_free(
    dsn: str, prefix: str, admin: Connection, loop_errors: list[str]
) -> None:
    """Cancelled at any point of taking or releasing, nothing stays open or locked."""
    holder = f"{prefix}-try"
    async with (
        replica_locks(dsn, prefix, "a") as locks,
        replica_locks(dsn, prefix, "b") as other,
    ):
        for delay in (0, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.03, 5):
            with anyio.move_on_after(delay) as scope:
                lease = await take(locks, "job", holder)
                await lease.release()
            await wait_until(connected)
            await settled(admin, holder, 0 if scope.cancelled_caught else 1)
            await (await take(other, "job", f"{prefix}-other")).release()
    gc.collect()
    assert loop_errors == []


async def test_a_connection_still_opening_when_cancelled_is_closed_once_it_opens(
    dsn: str, prefix: str, admin: Connection, loop_errors: list[str]
) -> None:
    """The cancelled call returns at once; the connection it started ends after."""
    holder = f"{prefix}-cut"
    async with replica_locks(dsn, prefix, "a") as locks:
        with anyio.fail_after(0.1), anyio.move_on_after(0):
            await locks.try_acquire("job", holder=holder, timing=FAST)
        await wait_until(connected)
        await settled(admin, holder, 0)
        await take(locks, "job", holder)
    gc.collect()
    assert loop_errors == []


async def test_a_connection_still_opening_when_cancelled_fails_unseen(
    loop_errors: list[str],
) -> None:
    """A connection that times out after its call was cancelled reports nothing."""
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        locks = PostgresLocks(
            f"postgresql://app@127.0.0.1:{port}/db", connect_timeout=0.2
        )
        with anyio.fail_after(0.1), anyio.move_on_after(0):
            await locks.__aenter__()
        await wait_until(connected)
    gc.collect()
    assert loop_errors == []


async def test_a_cancelled_renewal_counts_the_lease_as_lost_and_frees_the_lock(
    dsn: str, prefix: str, admin: Connection
) -> None:
    """The caller bounds renewals with a timeout; one cut short loses the lease."""
    holder = f"{prefix}-renew"
    async with (
        replica_locks(dsn, prefix, "a") as locks,
        replica_locks(dsn, prefix, "b") as other,
    ):
        lease = await take(locks, "job", holder)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await lease.renew()
        await settled(admin, holder, 0)
        with pytest.raises(LockLostError, match="an earlier renewal failed"):
            await lease.renew()
        await take(other, "job", f"{prefix}-other")


async def test_leaving_releases_every_lease_and_closes_every_connection(
    dsn: str, prefix: str, admin: Connection
) -> None:
    """The query connection, the leases' and the idle ones all end with the block."""
    async with replica_locks(dsn, prefix, "a") as locks:
        leases = [await take(locks, key, f"{prefix}-h") for key in ("x", "y", "z")]
        await leases[0].release()
        assert await count(admin, f"{prefix}%") == 4
    await settled(admin, f"{prefix}%", 0)
    async with replica_locks(dsn, prefix, "b") as other:
        assert [await other.holder_of(key) for key in ("x", "y", "z")] == [None] * 3


async def test_leaving_while_cancelled_still_closes_every_connection(
    dsn: str, prefix: str, admin: Connection
) -> None:
    """A cancelled exit aborts what it could not close cleanly; no lock is left."""
    with anyio.CancelScope() as scope:
        async with replica_locks(dsn, prefix, "a") as locks:
            await take(locks, "x", f"{prefix}-h")
            await take(locks, "y", f"{prefix}-h")
            scope.cancel()
    await settled(admin, f"{prefix}%", 0)
    async with replica_locks(dsn, prefix, "b") as other:
        await take(other, "x", f"{prefix}-other")
        await take(other, "y", f"{prefix}-other")


async def test_a_query_connection_the_server_ended_is_reopened(
    dsn: str, prefix: str, admin: Connection
) -> None:
    """Health checks recover by themselves after the server drops the connection."""
    async with replica_locks(dsn, prefix, "a") as locks:
        await terminate(admin, f"{prefix}-a")
        await locks.ping()
        assert await locks.holder_of("job") is None
        assert await count(admin, f"{prefix}-a") == 1


async def test_a_failure_to_take_a_lock_raises_lock_unavailable(
    dsn: str, prefix: str, admin: Connection
) -> None:
    """An idle connection the server ended fails the try, which closes it."""
    holder_b = f"{prefix}-pod-b"
    async with (
        replica_locks(dsn, prefix, "a") as a,
        replica_locks(dsn, prefix, "b") as b,
    ):
        await take(a, "job", f"{prefix}-pod-a")
        assert await b.try_acquire("job", holder=holder_b, timing=FAST) is None
        await terminate(admin, holder_b)
        with pytest.raises(LockUnavailableError) as info:
            await b.try_acquire("job", holder=holder_b, timing=FAST)
        assert info.value.reason.startswith("taking 'job' failed with ")
        assert "reachable from this host" in info.value.remedy
        assert await b.try_acquire("job", holder=holder_b, timing=FAST) is None


async def test_its_query_connection_is_named_unless_the_dsn_names_it(
    dsn: str, admin: Connection
) -> None:
    """Without an application_name in the DSN, it is 'lifespan_kit-locks'."""
    before = await count(admin, "lifespan_kit-locks")
    async with PostgresLocks(dsn):
        assert await count(admin, "lifespan_kit-locks") == before + 1


# --- unusable servers and bad arguments ---------------------------------------


async def test_an_unreachable_server_raises_lock_unavailable_without_the_password() -> (
    None
):
    """Entering fails naming the backend and what to check, never the password."""
    locks = PostgresLocks("postgresql://app:hunter2@127.0.0.1:1/test")
    with pytest.raises(LockUnavailableError) as info:
        await locks.__aenter__()
    error = info.value
    assert error.code == "lock-unavailable"
    assert error.backend == "PostgreSQL at 127.0.0.1:1/test"
    assert error.reason.startswith("connecting failed with ")
    assert "the DSN's host, port, user, password and database" in str(error)
    assert "hunter2" not in str(error)


async def test_a_server_that_never_answers_fails_after_connect_timeout() -> None:
    """Something that accepts connections but never answers does not hang the start."""
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        locks = PostgresLocks(
            f"postgresql://app@127.0.0.1:{port}/db", connect_timeout=0.3
        )
        with anyio.fail_after(5), pytest.raises(LockUnavailableError) as info:
            await locks.__aenter__()
    assert info.value.reason.startswith("connecting failed with TimeoutError")
    assert "within connect_timeout" in str(info.value)


async def test_a_database_that_does_not_exist_raises_lock_unavailable(dsn: str) -> None:
    """The server's own reason is kept, with the backend it concerns."""
    missing = urlsplit(dsn)._replace(path="/lifespan_kit_no_such_database").geturl()
    with pytest.raises(LockUnavailableError) as info:
        await PostgresLocks(missing).__aenter__()
    assert info.value.backend.endswith("/lifespan_kit_no_such_database")
    assert "does not exist" in info.value.reason


async def test_using_it_outside_its_block_says_how_to_open_it(dsn: str) -> None:
    """Before entering, and after leaving, calls raise; entering twice does too."""
    locks = PostgresLocks(dsn)
    with pytest.raises(LockUnavailableError, match="async with PostgresLocks"):
        await locks.ping()
    async with locks:
        await locks.ping()
        with pytest.raises(LockUnavailableError, match="it is already open"):
            await locks.__aenter__()
    with pytest.raises(LockUnavailableError, match="it is not open"):
        await locks.try_acquire("job", holder="a", timing=FAST)


@pytest.mark.parametrize(
    ("dsn", "description"),
    [
        pytest.param(
            "postgresql://postgres@127.0.0.1:5432/test",
            "PostgreSQL at 127.0.0.1:5432/test",
            id="plain",
        ),
        pytest.param(
            "postgres://app:p/ss@w0rd@db.internal/app?password=x&sslmode=require",
            "PostgreSQL at db.internal/app",
            id="credentials",
        ),
        pytest.param(
            "postgresql:///app?host=/run/postgresql",
            "PostgreSQL at localhost/app",
            id="socket",
        ),
    ],
)
def test_the_description_says_where_without_credentials(
    dsn: str, description: str
) -> None:
    """Messages and health reports name the server, never the password."""
    assert PostgresLocks(dsn).description == description


@pytest.mark.parametrize(
    ("arguments", "option", "problem"),
    [
        pytest.param({"dsn": 42}, "dsn", "it is not a URL", id="dsn-type"),
        pytest.param({"dsn": "host=db"}, "dsn", "it is not a URL", id="dsn-keywords"),
        pytest.param({"table": "a; DROP x"}, "table", "it is not a table", id="table"),
        pytest.param({"table": "a.b.c"}, "table", "it is not a table", id="parts"),
        pytest.param({"table": None}, "table", "it is not a table", id="table-type"),
        pytest.param({"connect_timeout": 0}, "connect_timeout", "it is", id="zero"),
        pytest.param({"connect_timeout": math.inf}, "connect_timeout", "it", id="inf"),
        pytest.param({"connect_timeout": True}, "connect_timeout", "it", id="bool"),
        pytest.param({"connect_timeout": "1"}, "connect_timeout", "it", id="str"),
    ],
)
def test_bad_arguments_raise_invalid_option_naming_it(
    arguments: dict[str, Any], option: str, problem: str
) -> None:
    """The error names the option and PostgresLocks, and says what to pass."""
    arguments = {"dsn": "postgresql://127.0.0.1/test", **arguments}
    with pytest.raises(InvalidOptionError) as info:
        PostgresLocks(**arguments)
    assert info.value.option == option
    assert info.value.owner == "PostgresLocks"
    assert info.value.problem.startswith(problem)
    assert "PostgresLocks" in str(info.value)


async def test_two_services_on_one_database_keep_their_keys_apart(
    dsn: str, prefix: str
) -> None:
    """Advisory locks are per database: the prefix separates locks and records."""
    table = f"{prefix}_steps"
    async with (
        PostgresLocks(named(dsn, prefix), prefix="billing", table=table) as billing,
        PostgresLocks(named(dsn, prefix), prefix="search", table=table) as search,
    ):
        first = await take(billing, "scheduler", f"{prefix}-billing")
        second = await take(search, "scheduler", f"{prefix}-search")
        await first.mark_done("1")
        assert await search.last_done("scheduler") is None
        assert await billing.holder_of("scheduler") == f"{prefix}-billing"
        assert await search.holder_of("scheduler") == f"{prefix}-search"
        await first.release()
        await second.release()


@pytest.mark.parametrize("bad", ["", "a\x00b", 7])
def test_a_prefix_must_be_text(bad: object) -> None:
    """An empty prefix, or one with NUL, is refused naming the option."""
    with pytest.raises(InvalidOptionError, match="prefix"):
        PostgresLocks("postgresql://h/db", prefix=bad)  # type: ignore[arg-type]


async def test_a_schema_qualified_table_records_steps_in_that_schema(
    dsn: str, prefix: str, admin: Connection
) -> None:
    """`schema.table` names a table in another schema than the search path's."""
    await admin.execute(f"CREATE SCHEMA {prefix}")
    try:
        table = f"{prefix}.deploy_steps"
        async with PostgresLocks(named(dsn, prefix), table=table) as locks:
            lease = await take(locks, "migrations", f"{prefix}-h")
            await lease.mark_done("3")
            assert await locks.last_done("migrations") == Done("3", 1, frozenset({"3"}))
        rows = await admin.fetch(f"SELECT key, version FROM {table}")
        assert [tuple(row) for row in rows] == [("lifespan_kit:migrations", "3")]
    finally:
        await admin.execute(f"DROP SCHEMA {prefix} CASCADE")


def test_without_asyncpg_the_import_error_names_the_extra() -> None:
    """Importing lifespan_kit.postgres without asyncpg says what to install."""
    result = import_with_blocked("asyncpg", "lifespan_kit.postgres")
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line == (
        "ImportError: lifespan_kit.postgres needs asyncpg, which is not installed; "
        'install it with: pip install "lifespan_kit[postgres]"'
    )


def test_without_a_server_a_test_is_skipped_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Outside CI, an unreachable server skips the test and says how to point at one."""
    monkeypatch.setenv(POSTGRES_DSN_VARIABLE, "postgresql://postgres@127.0.0.1:1/test")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"point {POSTGRES_DSN_VARIABLE}"):
        postgres_dsn()


def test_without_a_server_a_test_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """In CI, a missing server fails the test rather than hiding it."""
    monkeypatch.setenv(POSTGRES_DSN_VARIABLE, "postgresql://postgres@127.0.0.1:1/test")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI requires it"):
        postgres_dsn()


# --- behind a pooling proxy ---------------------------------------------------------


def accepts(port: int) -> bool:
    """Say whether something listens on 127.0.0.1:`port`."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_pgbouncer_files(dsn: str, directory: Path, pool_mode: str, port: int) -> str:
    """Write PgBouncer's configuration for the server at `dsn`; return its path."""
    parts = urlsplit(dsn)
    database = parts.path.lstrip("/")
    password = f" password={parts.password}" if parts.password else ""
    (directory / "users.txt").write_text(f'"{parts.username}" ""\n')
    configuration = directory / "pgbouncer.ini"
    configuration.write_text(
        f"[databases]\n{database} = host={parts.hostname} port={parts.port or 5432} "
        f"dbname={database}{password}\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n"
        f"unix_socket_dir =\nauth_type = trust\nauth_file = {directory}/users.txt\n"
        f"pool_mode = {pool_mode}\n"
    )
    directory.chmod(0o755)
    return str(configuration)


@asynccontextmanager
async def pgbouncer(dsn: str, directory: Path, pool_mode: str) -> AsyncIterator[str]:
    """Run PgBouncer in `pool_mode` in front of the server at `dsn`; yield its DSN."""
    parts = urlsplit(dsn)
    database = parts.path.lstrip("/")
    port = free_port()
    configuration = write_pgbouncer_files(dsn, directory, pool_mode, port)
    # PgBouncer refuses to run as root; as root, it is told which user to become.
    as_user = ["-u", "nobody"] if os.geteuid() == 0 else []
    command = [str(PGBOUNCER), *as_user, configuration]
    async with await anyio.open_process(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ) as process:

        async def listening() -> bool:
            return accepts(port)

        try:
            await wait_until(listening)
            yield f"postgresql://{parts.username}@127.0.0.1:{port}/{database}"
        finally:
            process.terminate()


needs_pgbouncer = pytest.mark.skipif(
    PGBOUNCER is None, reason="pgbouncer is not installed (apt-get install pgbouncer)"
)


@needs_pgbouncer
async def test_through_a_transaction_pooling_pgbouncer_a_lock_is_refused_and_freed(
    dsn: str, prefix: str, admin: Connection, tmp_path: Path
) -> None:
    """The check after taking finds the lock is not the connection's, and says why."""
    holder = f"{prefix}-pooled"
    async with (
        pgbouncer(dsn, tmp_path, "transaction") as pooled_dsn,
        PostgresLocks(named(pooled_dsn, f"{prefix}-p"), table=f"{prefix}_s") as pooled,
        replica_locks(dsn, prefix, "direct") as direct,
    ):
        with pytest.raises(LockUnavailableError) as info:
            await pooled.try_acquire("job", holder=holder, timing=FAST)
        error = info.value
        assert error.backend == pooled.description
        assert "as through a transaction-pooling proxy" in error.reason
        assert error.remedy.startswith("connect the locks to PostgreSQL directly")
        assert await direct.holder_of("job") is None
        await take(direct, "job", f"{prefix}-direct")


@needs_pgbouncer
async def test_through_a_session_pooling_pgbouncer_locks_work(
    dsn: str, prefix: str, tmp_path: Path
) -> None:
    """Session pooling gives each connection a server session of its own."""
    holder = f"{prefix}-pooled"
    async with (
        pgbouncer(dsn, tmp_path, "session") as pooled_dsn,
        PostgresLocks(named(pooled_dsn, f"{prefix}-p"), table=f"{prefix}_s") as pooled,
        replica_locks(dsn, prefix, "direct") as direct,
    ):
        lease = await take(pooled, "job", holder)
        await lease.renew()
        assert await direct.holder_of("job") == holder
        assert await direct.try_acquire("job", holder=holder, timing=FAST) is None
        await lease.release()
        await take(direct, "job", f"{prefix}-direct")


async def test_a_lock_that_cannot_be_freed_behind_a_pooler_is_logged(
    dsn: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """When freeing the pooled session's lock fails too, a warning names the session."""

    class Pooled:
        """Runs each statement in another server session, then goes away."""

        async def fetch(self, query: str, *args: object) -> list[dict[str, object]]:
            if "txid_current" in query:
                return [{"pid": 2, "held": False, "txid_current": 10}]
            raise ConnectionResetError("the proxy closed the connection")

    connection = cast("Connection", Pooled())
    async with replica_locks(dsn, prefix, "a") as locks:
        with (
            caplog.at_level(logging.WARNING, logger="lifespan_kit.postgres"),
            pytest.raises(LockUnavailableError, match="transaction-pooling proxy"),
        ):
            await locks._confirm(connection, 5, 1)
    [record] = caplog.records
    assert record.getMessage() == (
        f"Server session 1 on {locks.description} may hold a lock until it ends: "
        "ConnectionResetError: the proxy closed the connection"
    )


# --- run_once and leadership, end to end ------------------------------------------


def replica(
    dsn: str,
    prefix: str,
    name: str,
    *,
    steps: list[str] | None = None,
    leads: list[tuple[str, int, float]] | None = None,
    version: str | None = None,
) -> Registry:
    """A replica with its own PostgresLocks: a step run once, a task one leads."""
    registry = Registry()
    holder = f"{prefix}-{name}"

    @registry.resource(health=Locks.check)
    async def locks() -> AsyncIterator[Locks]:
        async with replica_locks(dsn, prefix, f"main-{name}") as locks:
            yield locks

    if steps is not None:

        @registry.resource
        async def schema(locks: Locks) -> StepOutcome:
            async def migrate() -> None:
                await anyio.sleep(0.3)
                steps.append(name)

            return await run_once(
                locks,
                "migrations",
                migrate,
                version=version,
                timing=FAST,
                holder=holder,
            )

    if leads is not None:

        @registry.background
        async def scheduler(locks: Locks) -> None:
            async with leadership(
                locks, "scheduler", timing=FAST, holder=holder
            ) as term:
                leads.append((name, term.token, anyio.current_time()))
                await anyio.sleep_forever()

    return registry


async def test_replicas_starting_together_run_the_step_once(
    dsn: str, prefix: str
) -> None:
    """One runs it; the others wait, then skip it; a restart skips it at once."""
    steps: list[str] = []
    outcomes: dict[str, StepOutcome] = {}

    async def start(name: str) -> None:
        registry = replica(dsn, prefix, name, steps=steps, version="1")
        async with registry.lifespan() as resources:
            outcome = resources["schema"]
            assert isinstance(outcome, StepOutcome)
            outcomes[name] = outcome

    async with anyio.create_task_group() as tg:
        for name in ("a", "b", "c"):
            tg.start_soon(start, name)
    assert len(steps) == 1
    [runner] = steps
    assert outcomes[runner].ran
    assert outcomes[runner].token is not None
    others = [outcome for name, outcome in outcomes.items() if name != runner]
    assert [outcome.ran for outcome in others] == [False, False]
    assert all(outcome.waited > 0 for outcome in others)
    await start("d")
    assert outcomes["d"] == StepOutcome("migrations", ran=False, version="1", waited=0)
    assert steps == [runner]
    async with replica_locks(dsn, prefix, "check") as locks:
        assert await locks.last_done("migrations") == Done("1", 1, frozenset({"1"}))
        assert await locks.holder_of("migrations") is None


async def test_one_replica_leads_and_the_other_takes_over_when_it_stops(
    dsn: str, prefix: str
) -> None:
    """The standby's health names the leader; it leads a lease later, newer token."""
    leads: list[tuple[str, int, float]] = []
    first: Lifespan[Any] = replica(dsn, prefix, "a", leads=leads).lifespan()
    second: Lifespan[Any] = replica(dsn, prefix, "b", leads=leads).lifespan()
    stop_first = anyio.Event()

    async def leading() -> bool:
        return bool(leads)

    async def taken_over() -> bool:
        return len(leads) == 2

    async def run_first() -> None:
        async with first:
            await stop_first.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_first)
        await wait_until(leading)
        async with second:

            async def standing_by() -> bool:
                detail = (await second.health()).resources["locks"].detail
                return f"standby for 'scheduler' (leader: {prefix}-a)" in str(detail)

            await wait_until(standing_by)
            stop_first.set()
            stopped = anyio.current_time()
            await wait_until(taken_over)
    [(_, token_a, _), (name_b, token_b, since_b)] = leads
    assert name_b == "b"
    assert token_b > token_a
    assert since_b - stopped >= FAST.lease


async def test_a_leader_whose_connection_is_terminated_is_cancelled_and_fails(
    dsn: str, prefix: str, admin: Connection
) -> None:
    """Its next renewal fails: the block is cancelled and LockLostError raised."""
    leads: list[tuple[str, int, float]] = []
    lifespan: Lifespan[Any] = replica(dsn, prefix, "a", leads=leads).lifespan()

    async def leading() -> bool:
        return bool(leads)

    async def run() -> None:
        async with lifespan:
            await wait_until(leading)
            await terminate(admin, f"{prefix}-a")
            ended = anyio.current_time()
            with anyio.fail_after(FAST.renew_deadline):
                await lifespan.wait_failed()
            assert anyio.current_time() - ended < FAST.retry * 3

    with pytest.raises(BackgroundTaskError) as info:
        await run()
    assert info.value.resource_name == "scheduler"
    lost = info.value.__cause__
    assert isinstance(lost, LockLostError)
    assert (lost.key, lost.holder) == ("scheduler", f"{prefix}-a")
    assert lost.reason.startswith("renewing it failed with ")
    assert lost.backend.startswith("PostgreSQL at ")
