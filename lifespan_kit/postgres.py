"""Deployment-wide locks on PostgreSQL: session advisory locks, through asyncpg.

[PostgresLocks][lifespan_kit.postgres.PostgresLocks] is the lock backend for
[run_once][lifespan_kit.replicas.run_once] and
[leadership][lifespan_kit.replicas.leadership] when the replicas share a
PostgreSQL database (12 or later, reached directly or through a
session-pooling proxy).

Added in 0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from typing import TYPE_CHECKING, Final, TypeAlias, cast, final
from urllib.parse import parse_qs

import anyio

try:
    import asyncpg
except ImportError as _missing:  # pragma: no cover  # checked in a subprocess
    _MESSAGE = (
        "lifespan_kit.postgres needs asyncpg, which is not installed; "
        'install it with: pip install "lifespan_kit[postgres]"'
    )
    raise ImportError(_MESSAGE) from _missing

from lifespan_kit._locks import Done, Lease, Locks, Timing, require_asyncio
from lifespan_kit.errors import InvalidOptionError, LockLostError, LockUnavailableError

if TYPE_CHECKING:
    _Connection: TypeAlias = asyncpg.Connection[asyncpg.Record]

__all__ = ["PostgresLocks"]

logger: Final = logging.getLogger("lifespan_kit.postgres")

# The first int4 of every lock lifespan_kit takes: the bytes "lkit".
_CLASS_ID: Final = int.from_bytes(b"lkit", "big")
# Serializes creating the steps table, apart from the steps' own locks.
_TABLE_CLASS_ID: Final = _CLASS_ID + 1
# Idle connections kept for the next try, so that a contender reuses one.
_SPARES: Final = 2
_CLOSE_TIMEOUT: Final = 2.0
_CONNECTING: Final = "lifespan_kit.postgres connecting"
_TABLE_NAME: Final = re.compile(r"[A-Za-z_]\w{0,62}(\.[A-Za-z_]\w{0,62})?", re.ASCII)
_CONNECTION_ERRORS: Final = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
)

_HELD: Final = """EXISTS (
    SELECT FROM pg_locks WHERE locktype = 'advisory' AND granted
    AND classid = $1::int4::oid AND objid = $2::int4::oid AND objsubid = 2
    AND pid = pg_backend_pid())"""
_TRY: Final = """SELECT set_config('application_name', $3, false),
    set_config('tcp_keepalives_idle', $4, false),
    set_config('tcp_keepalives_interval', $5, false),
    set_config('tcp_keepalives_count', $6, false),
    set_config('tcp_user_timeout', $7, false),
    pg_try_advisory_lock($1, $2) AS locked, pg_backend_pid() AS pid"""
_CONFIRM: Final = f"SELECT pg_backend_pid() AS pid, {_HELD} AS held, txid_current()"
_RENEW: Final = f"SELECT pg_backend_pid() = $3 AND {_HELD}"
# CASE, unlike AND, never unlocks in a session that is not the lease's.
_UNLOCK: Final = """SELECT CASE WHEN pg_backend_pid() = $3
    THEN pg_advisory_unlock($1, $2) ELSE false END"""
_ABANDON: Final = """SELECT CASE WHEN pg_backend_pid() = $3
    THEN pg_advisory_unlock($1, $2) ELSE pg_terminate_backend($3) END"""
_HOLDER: Final = """SELECT a.application_name
    FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND l.classid = $1::int4::oid AND l.objid = $2::int4::oid AND l.objsubid = 2"""


def _lock_id(name: str) -> int:
    """Hash `name` to the lock's second int4, alike in every process."""
    digest = hashlib.blake2b(name.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


def _keepalives(timing: Timing) -> tuple[str, str, str, str]:
    """Return keepalive settings that cut off a silent client within ~lease."""
    idle = max(1, round(timing.lease / 3))
    interval = max(1, round(timing.lease / 9))
    return str(idle), str(interval), "3", str(max(1, round(timing.lease * 1000)))


def _describe(dsn: str) -> str:
    """Say where `dsn` points, without its user, password or parameters."""
    location = dsn.partition("://")[2].split("?")[0].rpartition("@")[2]
    address, _, database = location.partition("/")
    return f"PostgreSQL at {address or 'localhost'}/{database}"


def _checked(dsn: object, table: object, connect_timeout: object) -> float:
    """Check PostgresLocks' arguments; return `connect_timeout` as a float."""
    if not isinstance(dsn, str) or not dsn.startswith(("postgresql://", "postgres://")):
        option, problem = "dsn", "it is not a URL starting with postgresql://"
        remedy = "pass a URL like 'postgresql://user:password@host:5432/database'."
    elif not isinstance(table, str) or not _TABLE_NAME.fullmatch(table):
        option, problem = "table", "it is not a table name, or schema.table"
        remedy = "use letters, digits and underscores: 'lifespan_kit_steps'."
    elif (
        isinstance(connect_timeout, bool)
        or not isinstance(connect_timeout, int | float)
        or not 0 < connect_timeout < float("inf")
    ):
        option, problem = "connect_timeout", "it is not a number of seconds above 0"
        remedy = "pass a number of seconds, such as connect_timeout=10."
    else:
        return float(connect_timeout)
    raise InvalidOptionError(
        None, option=option, problem=problem, remedy=remedy, owner="PostgresLocks"
    )


@final
class _Pool:
    """What the leases of one PostgresLocks share: connections, and its table."""

    def __init__(self, backend: str, table: str) -> None:
        self.backend = backend
        self.spares: list[_Connection] = []
        self.leases: set[_PostgresLease] = set()
        name = ".".join(f'"{part}"' for part in table.split("."))
        self.create = f"""DO $$ BEGIN
            PERFORM pg_advisory_xact_lock({_TABLE_CLASS_ID}, {_lock_id(table)});
            CREATE TABLE IF NOT EXISTS {name} (key text PRIMARY KEY, version text,
                count bigint NOT NULL, token bigint NOT NULL,
                done_at timestamptz NOT NULL DEFAULT now(),
                versions text[] NOT NULL DEFAULT '{{}}');
            END $$"""
        self.record = f"""INSERT INTO {name} AS t (key, version, count, token, versions)
            SELECT $4, $5::text, 1, $6, array_remove(ARRAY[$5::text], NULL)
            WHERE pg_backend_pid() = $3 AND {_HELD}
            ON CONFLICT (key) DO UPDATE SET version = excluded.version,
                count = t.count + (t.token <> excluded.token)::int,
                token = excluded.token, done_at = now(),
                versions = CASE WHEN excluded.version = ANY(t.versions)
                    THEN t.versions ELSE t.versions || excluded.versions END
            RETURNING t.count"""
        self.select = f"SELECT version, count, versions FROM {name} WHERE key = $1"

    def put_back(self, connection: _Connection) -> None:
        if len(self.spares) < _SPARES:
            self.spares.append(connection)
        else:
            connection.terminate()


def _close_opened(opening: asyncio.Task[_Connection]) -> None:
    """Close the connection a cancelled call went on opening; drop its failure."""
    if not opening.cancelled() and opening.exception() is None:
        opening.result().terminate()


async def _close_all(connections: list[_Connection]) -> None:
    """Close each connection cleanly; abort what is left when cancelled."""
    try:
        for connection in connections:
            with contextlib.suppress(Exception):
                await connection.close(timeout=_CLOSE_TIMEOUT)
    finally:
        for connection in connections:
            connection.terminate()


@final
class PostgresLocks(Locks):
    """Deployment-wide locks held as PostgreSQL session advisory locks.

    A key is locked with `pg_try_advisory_lock(int4, int4)`: lifespan_kit's
    own number (the bytes "lkit"), then a 32-bit BLAKE2 hash of the key. Two
    keys share a lock with a chance of 1 in 2**32 (about 1 in 870,000 among
    100 keys); they then exclude each other, which is safe but makes one
    wait for the other: rename one.

    A session may take an advisory lock it holds again, so each lease has a
    connection of its own, named (`application_name`) after its holder's
    first 63 bytes for `holder_of`. The server frees the lock the moment that
    connection ends, so `enforces_lease` is False: a new leader waits
    `Timing.lease`. TCP keepalives and `tcp_user_timeout`, set per session
    from the `Timing` given to `try_acquire`, make the server end the
    connection of a client gone silent (a partitioned leader), and free its
    lock, within about `Timing.lease`. One more connection serves queries
    (named "lifespan_kit-locks" unless the DSN names it), and up to two idle
    ones are kept for retries.

    The fencing token is `txid_current()`, taken right after the lock: the
    server's transaction ids only grow, so it is greater than every token
    handed out before on this server, for any key.

    Behind a transaction-pooling proxy (PgBouncer's `pool_mode=transaction`)
    a session advisory lock stays with a server session that any client may
    be handed next. Taking a lock checks that the next statement runs in the
    session holding it and that another connection is not handed that
    session, and raises `LockUnavailableError` if not; renewals check again.

    Finished run-once steps are recorded in `table` (created when first
    needed): `key`, `version` (the last), `count` (of the leases that
    recorded it), `token` (the last one's), `done_at` and `versions` (every
    version recorded).

    Args:
        dsn: A `postgresql://` URL, as asyncpg takes it.
        prefix: Keeps this service's keys apart from another's on the same
            database (advisory locks are shared by the whole database): both
            the locks and the records of finished steps are under it.
        table: The table recording finished steps, optionally `schema.table`.
        connect_timeout: Seconds a connection may take to open.

    Raises:
        InvalidOptionError: When an argument has the wrong type or form.

    Example:
        ```python
        @registry.resource(health=Locks.check)
        async def locks(settings: Settings) -> AsyncIterator[Locks]:
            async with PostgresLocks(settings.database_url) as locks:
                yield locks
        ```

    Added in 0.1.
    """

    enforces_lease = False

    def __init__(
        self,
        dsn: str,
        *,
        prefix: str = "lifespan_kit",
        table: str = "lifespan_kit_steps",
        connect_timeout: float = 10.0,
    ) -> None:
        self._connect_timeout = _checked(dsn, table, connect_timeout)
        checked = cast("object", prefix)  # callers without a type checker
        if not isinstance(checked, str) or not checked or "\x00" in checked:
            raise InvalidOptionError(
                None,
                option="prefix",
                problem=f"{prefix!r} is not a non-empty string without NUL",
                remedy="name the service, such as prefix='billing'.",
                owner="PostgresLocks",
            )
        self._prefix = prefix
        self._dsn = dsn
        self.description: str = _describe(dsn)
        named = "application_name" in parse_qs(dsn.partition("?")[2])
        self._main_name = "" if named else "lifespan_kit-locks"
        self._pool = _Pool(self.description, table)
        self._main: _Connection | None = None
        self._main_lock = anyio.Lock()

    def _scoped(self, key: str) -> str:
        """The key in the server's lock space and table, under this prefix."""
        return f"{self._prefix}:{key}"

    async def __aenter__(self) -> PostgresLocks:
        require_asyncio(self.description, "asyncpg")
        if self._main is not None:
            raise LockUnavailableError(
                self.description,
                reason="it is already open",
                remedy="enter each PostgresLocks once; create another for a second.",
                lasting=True,
            )
        self._main = await self._connect(self._main_name)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            for lease in list(self._pool.leases):
                await lease.release()
        finally:
            for lease in list(self._pool.leases):
                lease.drop()
            connections = [*self._pool.spares, *([self._main] if self._main else [])]
            self._main, self._pool.spares = None, []
            await _close_all(connections)

    async def try_acquire(
        self, key: str, *, holder: str, timing: Timing
    ) -> Lease | None:
        """Take `key` on a connection of its own if no session holds it.

        Raises:
            LockUnavailableError: When the server cannot be reached, or the
                lock does not hold through this connection (a pooling proxy).
        """
        lock_id = _lock_id(self._scoped(key))
        name = holder.encode()[:63].decode(errors="ignore")
        connection = await self._checkout(name)
        try:
            [row] = await connection.fetch(
                _TRY, _CLASS_ID, lock_id, name, *_keepalives(timing)
            )
            pid: int = row["pid"]
            if not row["locked"]:
                self._pool.put_back(connection)
                return None
            token = await self._confirm(connection, lock_id, pid)
        except BaseException as exc:
            connection.terminate()
            if isinstance(exc, LockUnavailableError) or not isinstance(exc, Exception):
                raise
            raise LockUnavailableError(
                self.description,
                reason=f"taking '{key}' failed with {type(exc).__name__}: {exc}",
                remedy="check that the server is up and reachable from this host.",
            ) from exc
        lock = (_CLASS_ID, lock_id, pid)
        lease = _PostgresLease(key, holder, token, connection, lock, self._pool)
        lease.stored_key = self._scoped(key)
        self._pool.leases.add(lease)
        return lease

    async def _confirm(self, connection: _Connection, lock_id: int, pid: int) -> int:
        """Return the fencing token once the lock is seen held by `pid` alone."""
        [row] = await connection.fetch(_CONFIRM, _CLASS_ID, lock_id)
        [[other]] = await self._on_main("SELECT pg_backend_pid()")
        if row["pid"] == pid and row["held"] and other != pid:
            return int(row["txid_current"])
        try:
            await connection.fetch(_ABANDON, _CLASS_ID, lock_id, pid)
        except Exception as exc:  # the error raised below matters more
            problem = f"{type(exc).__name__}: {exc}"
            logger.warning(
                "Server session %s on %s may hold a lock until it ends: %s",
                pid,
                self.description,
                problem,
                extra={"lifespan_kit_lock_backend": self.description},
            )
        raise LockUnavailableError(
            self.description,
            reason=(
                f"a session's advisory lock does not hold through this connection "
                f"(taken in server session {pid}; the next statement ran in "
                f"{row['pid']}, held there: {row['held']}; another connection "
                f"ran in {other}), as through a transaction-pooling proxy"
            ),
            remedy=(
                "connect the locks to PostgreSQL directly (or to a session-pooling "
                "PgBouncer), with a DSN of their own if the app's goes through one."
            ),
            lasting=True,
        )

    async def holder_of(self, key: str) -> str | None:
        """Return who holds `key` (the first 63 bytes of its name), or None."""
        rows = await self._on_main(_HOLDER, _CLASS_ID, _lock_id(self._scoped(key)))
        return str(rows[0][0]) if rows else None

    async def last_done(self, key: str) -> Done | None:
        """Return what the last finished step on `key` recorded, or None."""
        try:
            rows = await self._on_main(self._pool.select, self._scoped(key))
        except asyncpg.UndefinedTableError:
            return None
        if not rows:
            return None
        version, count, versions = rows[0]
        return Done(version, count, frozenset(versions))

    async def ping(self) -> None:
        """Run `SELECT 1` on the connection kept for queries, reopened if it ended.

        Raises:
            LockUnavailableError: When the server cannot be reached.
        """
        await self._on_main("SELECT 1")

    async def _on_main(self, query: str, *args: object) -> list[asyncpg.Record]:
        """Run `query` on the main connection; reopen it once if it has ended."""
        async with self._main_lock:
            main = self._require_open()
            try:
                return await main.fetch(query, *args)
            except _CONNECTION_ERRORS:
                main.terminate()
            self._main = main = await self._connect(self._main_name)
            return await main.fetch(query, *args)

    def _require_open(self) -> _Connection:
        if self._main is None:
            raise LockUnavailableError(
                self.description,
                reason="it is not open",
                remedy="use it inside `async with PostgresLocks(dsn) as locks:`.",
                lasting=True,
            )
        return self._main

    async def _connect(self, application_name: str) -> _Connection:
        named = {"application_name": application_name} if application_name else {}
        opening = asyncio.create_task(
            asyncpg.connect(
                self._dsn, timeout=self._connect_timeout, server_settings=named
            ),
            name=_CONNECTING,
        )
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            # asyncpg leaves an error nobody retrieves when cancelled mid-handshake:
            # let it finish, within connect_timeout, and close what it opened.
            opening.add_done_callback(_close_opened)
            raise
        except Exception as exc:
            raise LockUnavailableError(
                self.description,
                reason=f"connecting failed with {type(exc).__name__}: {exc}",
                remedy=(
                    "check that the server is up and reachable from this host "
                    "within connect_timeout, and the DSN's host, port, user, "
                    "password and database."
                ),
            ) from exc

    async def _checkout(self, application_name: str) -> _Connection:
        self._require_open()
        if self._pool.spares:
            return self._pool.spares.pop()
        return await self._connect(application_name)


@final
class _PostgresLease(Lease):
    def __init__(
        self,
        key: str,
        holder: str,
        token: int,
        connection: _Connection,
        lock: tuple[int, int, int],
        pool: _Pool,
    ) -> None:
        super().__init__(key, holder, token)
        self._connection = connection
        self._lock = lock
        self._pool = pool
        self._is_held = True
        self.stored_key = key
        # A connection runs one query at a time; renewals run beside mark_done.
        self._busy = anyio.Lock()

    async def renew(self) -> None:
        """Confirm, in one round trip, that this connection's session holds the lock."""
        self._expect_held(await self._run("renewing it", _RENEW, *self._lock))

    async def mark_done(self, version: str | None) -> None:
        """Record `version` for the key, counting this lease once, while it is held."""
        pool = self._pool
        await self._run("creating the steps table", pool.create)
        values = (*self._lock, self.stored_key, version, self.token)
        recorded = await self._run("recording the step", pool.record, *values)
        self._expect_held(recorded is not None)

    async def release(self) -> None:
        """Unlock and keep the connection for retries, or close it; never raises."""
        if not self._is_held:
            return
        self._is_held = False
        self._pool.leases.discard(self)
        connection = self._connection
        try:
            async with self._busy:
                unlocked = await connection.fetchval(_UNLOCK, *self._lock)
        except Exception as exc:  # closing the connection frees the lock
            problem = f"unlocking failed with {type(exc).__name__}: {exc}"
        except BaseException:
            connection.terminate()
            raise
        else:
            if unlocked:
                self._pool.put_back(connection)
                return
            problem = "the server showed it no longer held by this connection"
        connection.terminate()
        logger.warning(
            "Could not release lock '%s' on %s: %s; its connection was closed.",
            self.key,
            self._pool.backend,
            problem,
            extra={"lifespan_kit_lock_key": self.key},
        )

    def drop(self) -> None:
        """Count the lock as lost: close its connection so the server frees it."""
        self._is_held = False
        self._pool.leases.discard(self)
        self._connection.terminate()

    async def _run(self, doing: str, query: str, *args: object) -> object:
        try:
            async with self._busy:
                return await self._run_alone(doing, query, *args)
        except BaseException:
            # Cancelled while it waited for its turn, too: the lease counts as lost.
            self.drop()
            raise

    async def _run_alone(self, doing: str, query: str, *args: object) -> object:
        if not self._is_held:
            raise self._lost(reason="it was released, or an earlier renewal failed")
        try:
            return await self._connection.fetchval(query, *args)
        except Exception as exc:
            self.drop()
            failure = f"{doing} failed with {type(exc).__name__}: {exc}"
            raise self._lost(reason=failure) from exc

    def _expect_held(self, held: object) -> None:
        if not held:
            self.drop()
            raise self._lost(reason="the server shows it no longer held by its session")

    def _lost(self, *, reason: str) -> LockLostError:
        return LockLostError(
            self.key, backend=self._pool.backend, holder=self.holder, reason=reason
        )
