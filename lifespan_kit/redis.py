"""Deployment-wide locks in Redis: leases that expire, with fencing tokens.

[RedisLocks][lifespan_kit.redis.RedisLocks] is a lock backend for
[run_once][lifespan_kit.replicas.run_once] and
[leadership][lifespan_kit.replicas.leadership]. It needs redis-py
(`pip install "lifespan_kit[redis]"`) and, as `redis.asyncio`, runs on asyncio only.

Added in 0.1.
"""

from __future__ import annotations

import logging
import math
import secrets
from types import TracebackType
from typing import Final, final

import anyio
import anyio.lowlevel

try:
    import redis.asyncio
    from redis.asyncio.connection import parse_url
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.commands.core import AsyncScript
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError
except ImportError as _missing:  # pragma: no cover  # checked in a subprocess
    _MESSAGE = (
        "lifespan_kit.redis needs redis-py, which is not installed; install "
        'it with: pip install "lifespan_kit[redis]"'
    )
    raise ImportError(_MESSAGE) from _missing

from lifespan_kit._locks import Done, Lease, Locks, Timing, require_asyncio
from lifespan_kit.errors import InvalidOptionError, LockLostError, LockUnavailableError

__all__ = ["RedisLocks"]

logger: Final = logging.getLogger("lifespan_kit.redis")

# CLIENT LIST shows it; a `client_name` in the URL's query takes precedence.
_CLIENT_NAME: Final = "lifespan_kit-locks"

# Each script is atomic on the server, and gives the same result when
# redis-py sends it again because the connection dropped before the reply.
# A lock's value is "<lease id>:<token>:<holder>"; the lease id is random.
_SCRIPTS: Final = {
    "acquire": """
local ours = ARGV[1] .. ':'
local held = redis.call('GET', KEYS[1])
if held then
  if string.sub(held, 1, #ours) == ours then
    return tonumber(string.match(held, '^[^:]+:(%d+):'))
  end
  return false
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ours .. token .. ':' .. ARGV[2], 'PX', ARGV[3])
return token
""",
    "renew": """
local held = redis.call('GET', KEYS[1])
if held ~= ARGV[1] then return held end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
""",
    "release": """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""",
    # The count goes up once per lease: a resent call finds its lease id recorded.
    "mark_done": """
local held = redis.call('GET', KEYS[1])
if held ~= ARGV[1] then return held end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if redis.call('HGET', KEYS[2], 'lease') ~= ARGV[3] then
  redis.call('HINCRBY', KEYS[2], 'count', 1)
  redis.call('HSET', KEYS[2], 'lease', ARGV[3])
end
if ARGV[4] then
  redis.call('HSET', KEYS[2], 'version', ARGV[4], 'v:' .. ARGV[4], 1)
else
  redis.call('HDEL', KEYS[2], 'version')
end
return 1
""",
}


@final
class RedisLocks(Locks):
    """Deployment-wide locks held as expiring keys on one Redis server.

    A lock on `key` is the key `{prefix}:lock:{key}`, set only while no
    lease on it is in force and expiring after `Timing.lease`; the holder
    renews it by extending the expiry, and releasing deletes it only if it
    is still this lease's. Each time the lock is taken, `{prefix}:fence:{key}`
    is incremented: that number is the lease's fencing token, and it keeps
    growing across expiries. Finished run-once steps are recorded in the
    hash `{prefix}:done:{key}`, only while the lock is held.

    A dropped connection does not lose a lock, which lives in its key, not
    in a connection: a call whose connection dropped reconnects and is sent
    once more (each script gives the same result when it runs twice), so a
    renewal after a dropped connection succeeds. A renewal that cannot
    reach Redis, or that finds the key expired or another holder's, raises
    `LockLostError`.

    What it guarantees, and where it does not:

    - One Redis primary decides (a single server, or the primary of a
      Sentinel or managed set-up); this is not Redlock and not Redis
      Cluster. A failover to a replica that had not yet received the
      latest writes can lose a lock, so that two holders overlap, and can
      hand out a fencing token again or forget a finished step. Redis
      without persistence forgets all three when it restarts.
    - Clocks: the key expires on the Redis server's clock, while the holder
      counts `renew_deadline` on its own monotonic clock from the moment it
      sent its last renewal. The gap `lease - renew_deadline` must cover
      the difference in clock rates over a lease and the time the holder
      needs to stop its work once cancelled.
    - A process paused for longer than that gap (a long GC pause, SIGSTOP,
      a suspended VM) runs on after its lease ended, possibly after another
      holder took the lock. No lock prevents this; the fencing token
      detects it: pass the token with each write, and let the store refuse
      a token lower than the highest it has seen.

    Args:
        url: The Redis URL (`redis://`, `rediss://` or `unix://`). Its
            connections show in CLIENT LIST as `lifespan_kit-locks`, unless
            the URL names them (`?client_name=...`).
        prefix: Starts every key this backend writes.
        connect_timeout: Seconds to connect and for the first PING to answer;
            also the most that leaving waits to release leases still held.

    Raises:
        InvalidOptionError: An argument has the wrong type or value, or the
            URL is not one redis-py accepts.

    Example:
        ```python
        @registry.resource(health=Locks.check)
        async def locks(settings: Settings) -> AsyncIterator[Locks]:
            async with RedisLocks(settings.redis_url) as locks:
                yield locks
        ```

    Added in 0.1.
    """

    enforces_lease: bool = True

    def __init__(
        self, url: str, *, prefix: str = "lifespan_kit", connect_timeout: float = 10.0
    ) -> None:
        self.description: str = _describe(url)
        self._url = url
        self._prefix = _check_prefix(prefix)
        self._connect_timeout = _check_timeout(connect_timeout)
        self._session: _Session | None = None

    async def __aenter__(self) -> RedisLocks:
        require_asyncio(self.description, "redis-py")
        # redis-py leaves the **kwargs of from_url and ping untyped.
        client = redis.asyncio.Redis.from_url(  # pyright: ignore[reportUnknownMemberType]
            self._url,
            decode_responses=True,
            socket_connect_timeout=self._connect_timeout,
            client_name=_CLIENT_NAME,
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError],
        )
        try:
            await self._first_ping(client)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await client.aclose()
            raise
        self._session = _Session(client, self.description, self._prefix)
        return self

    async def _first_ping(self, client: redis.asyncio.Redis) -> None:
        with anyio.move_on_after(self._connect_timeout) as waited:
            try:
                await _ping(client)
            except RedisError as exc:
                raise self._unavailable(exc) from exc
        if waited.cancelled_caught:
            reason = (
                f"it did not answer PING within connect_timeout="
                f"{self._connect_timeout:g}s"
            )
            raise LockUnavailableError(
                self.description,
                reason=reason,
                remedy=(
                    "check that the URL points at Redis, not another service, "
                    "and that Redis is not overloaded; or raise connect_timeout."
                ),
            )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session = self._open()
        with anyio.move_on_after(self._connect_timeout, shield=True):
            for lease in list(session.leases):
                await lease.release()
        self._session = None
        session.leases.clear()
        with anyio.CancelScope(shield=True):
            await session.client.aclose()

    def _open(self) -> _Session:
        if self._session is None:
            raise LockUnavailableError(
                self.description,
                reason="it is not open",
                remedy="use it as `async with RedisLocks(url) as locks:`.",
                lasting=True,
            )
        return self._session

    def _unavailable(self, exc: RedisError) -> LockUnavailableError:
        remedy = (
            "check that Redis runs and is reachable from this host, and that the "
            "URL has the right host, port, password and database."
        )
        return LockUnavailableError(self.description, reason=_say(exc), remedy=remedy)

    async def try_acquire(
        self, key: str, *, holder: str, timing: Timing
    ) -> Lease | None:
        """Take `key` if no lease on it is in force, with the next fencing token.

        Raises:
            LockUnavailableError: Redis cannot be reached.
        """
        session = self._open()
        lease_id = secrets.token_hex(16)
        lease_ms = max(1, round(timing.lease * 1000))
        keys = [session.name("lock", key), session.name("fence", key)]
        try:
            token = await session.run("acquire", keys, [lease_id, holder, lease_ms])
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        if not isinstance(token, int):
            return None
        lease = _RedisLease(session, key, holder, token, lease_id, lease_ms)
        session.leases.add(lease)
        return lease

    async def holder_of(self, key: str) -> str | None:
        """Return the holder of `key`, or None when no lease on it is in force.

        Raises:
            LockUnavailableError: Redis cannot be reached.
        """
        session = self._open()
        try:
            value: object = await session.client.get(session.name("lock", key))
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        return None if value is None else _holder(str(value))

    async def last_done(self, key: str) -> Done | None:
        """Return what the last finished step on `key` recorded, if any.

        Raises:
            LockUnavailableError: Redis cannot be reached.
        """
        session = self._open()
        try:
            found = await session.client.hgetall(session.name("done", key))
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        fields = {str(field): str(value) for field, value in found.items()}
        if "count" not in fields:
            return None
        versions = {f[2:] for f in fields if f.startswith("v:")}
        return Done(fields.get("version"), int(fields["count"]), frozenset(versions))

    async def ping(self) -> None:
        """Raise `LockUnavailableError` unless Redis answers a PING."""
        try:
            await _ping(self._open().client)
        except RedisError as exc:
            raise self._unavailable(exc) from exc


@final
class _Session:
    """One entry of a RedisLocks: its client, scripts and unreleased leases."""

    def __init__(
        self, client: redis.asyncio.Redis, description: str, prefix: str
    ) -> None:
        self.client = client
        self.description = description
        self.prefix = prefix
        self.scripts: dict[str, AsyncScript] = {
            name: client.register_script(lua) for name, lua in _SCRIPTS.items()
        }
        self.leases: set[_RedisLease] = set()

    def name(self, kind: str, key: str) -> str:
        return f"{self.prefix}:{kind}:{key}"

    async def run(self, name: str, keys: list[str], args: list[str | int]) -> object:
        result: object = await self.scripts[name](keys=keys, args=args)
        return result


@final
class _RedisLease(Lease):
    """A lock held in Redis, told apart from any other by its value."""

    def __init__(
        self,
        session: _Session,
        key: str,
        holder: str,
        token: int,
        lease_id: str,
        lease_ms: int,
    ) -> None:
        super().__init__(key, holder, token)
        self.session = session
        self.lease_id = lease_id
        self.lease_ms = lease_ms
        self.value = f"{lease_id}:{token}:{holder}"
        self.lock_name = session.name("lock", key)

    async def renew(self) -> None:
        await self._confirm("renew", [self.lock_name], [], "renewing")

    async def mark_done(self, version: str | None) -> None:
        extra: list[str | int] = [self.lease_id]
        if version is not None:
            extra.append(version)
        keys = [self.lock_name, self.session.name("done", self.key)]
        await self._confirm("mark_done", keys, extra, "marking the step done")

    async def _confirm(
        self, script: str, keys: list[str], extra: list[str | int], doing: str
    ) -> None:
        """Run a script that acts only while this lease holds the lock."""
        if self not in self.session.leases:
            reason = f"it was released before {doing}"
            raise self._lost(reason)
        try:
            found = await self.session.run(
                script, keys, [self.value, self.lease_ms, *extra]
            )
        except RedisError as exc:
            reason = f"Redis failed while {doing}: {_say(exc)}"
            raise self._lost(reason) from exc
        if found == 1:
            return
        if isinstance(found, str):
            reason = f"it is held by {_holder(found)} now"
        else:
            reason = f"its key had expired or been deleted before {doing}"
        raise self._lost(reason)

    def _lost(self, reason: str) -> LockLostError:
        return LockLostError(
            self.key,
            backend=self.session.description,
            holder=self.holder,
            reason=reason,
        )

    async def release(self) -> None:
        session = self.session
        if self not in session.leases:
            await anyio.lowlevel.checkpoint()
            return
        try:
            await session.run("release", [self.lock_name], [self.value])
        except RedisError as exc:
            logger.warning(
                "Could not release lock '%s' on %s (%s); it expires after its lease.",
                self.key,
                session.description,
                _say(exc),
                extra={"lifespan_kit_lock_key": self.key},
            )
        session.leases.discard(self)


async def _ping(client: redis.asyncio.Redis) -> None:
    await client.ping()  # pyright: ignore[reportUnknownMemberType]


def _holder(value: str) -> str:
    return value.split(":", 2)[-1]


def _say(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).rstrip('.')}"


def _invalid(*, option: str, problem: str) -> InvalidOptionError:
    return InvalidOptionError(None, option=option, problem=problem, owner="RedisLocks")


def _check_prefix(prefix: object) -> str:
    if not isinstance(prefix, str) or not prefix:
        problem = f"{prefix!r} is not a non-empty string"
        raise _invalid(option="prefix", problem=problem)
    return prefix


def _check_timeout(seconds: object) -> float:
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not 0 < seconds < math.inf
    ):
        problem = f"{seconds!r} is not a number of seconds greater than 0"
        raise _invalid(option="connect_timeout", problem=problem)
    return float(seconds)


def _describe(url: object) -> str:
    """Say where the server is, from the URL, without its credentials."""
    if not isinstance(url, str):
        problem = f"{type(url).__name__} is not a URL string"
        raise _invalid(option="url", problem=problem)
    try:
        options = parse_url(url)
    except ValueError as exc:
        problem = f"redis-py does not accept it: {str(exc).rstrip('.')}"
        raise _invalid(option="url", problem=problem) from None
    db = options.get("db", 0)
    if "path" in options:
        return f"Redis at {options['path']} (database {db})"
    host, port = options.get("host", "localhost"), options.get("port", 6379)
    return f"Redis at {host}:{port}/{db}"
