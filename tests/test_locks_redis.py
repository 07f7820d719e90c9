"""RedisLocks on a real Redis: contention, expiry, loss, fencing, run_once, leadership.

Several `RedisLocks` on one server stand for several replicas. Each test
writes its keys under its own prefix and deletes them, and names its
connections, so that it can find them in CLIENT LIST.
"""

from __future__ import annotations

import logging
import math
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.abc
import pytest
import redis.asyncio

from lifespan_kit import Lifespan, Registry
from lifespan_kit.errors import (
    BackgroundTaskError,
    InvalidOptionError,
    LockLostError,
    LockUnavailableError,
)
from lifespan_kit.redis import RedisLocks
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
from tests.servers import redis_url

FAST = Timing(lease=1.5, renew_deadline=1.0, retry=0.2)
# Leases that run out within the test, where one is left to expire.
SHORT = Timing(lease=0.3, renew_deadline=0.2, retry=0.1)


@pytest.fixture(params=[pytest.param("asyncio", id="asyncio")])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run on asyncio only: redis.asyncio, the client it wraps, has no trio support."""
    return str(request.param)


@pytest.fixture
def url() -> str:
    """The test server's URL; the test skips without one (fails in CI)."""
    return redis_url()


@pytest.fixture
async def admin(url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain client that inspects the server."""
    client = redis.asyncio.Redis.from_url(
        url, decode_responses=True, client_name="lifespan_kit-test-admin"
    )
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def prefix(admin: redis.asyncio.Redis) -> AsyncIterator[str]:
    """A key prefix of this test's own; its keys are deleted after the test."""
    prefix = f"lifespan_kit-test-{secrets.token_hex(6)}"
    yield prefix
    keys = [key async for key in admin.scan_iter(match=f"{prefix}:*")]
    if keys:
        await admin.delete(*keys)


def named(url: str, name: str) -> str:
    """The URL with a client name, for the connections it opens."""
    return f"{url}{'&' if urlsplit(url).query else '?'}client_name={name}"


def connection_name() -> str:
    """A client name of this test's own."""
    return f"lifespan_kit-test-{secrets.token_hex(4)}"


async def connections(admin: redis.asyncio.Redis, name: str) -> list[str]:
    """The ids of the server's client connections named `name`."""
    return [c["id"] for c in await admin.client_list() if c["name"] == name]


async def wait_until(
    condition: Callable[[], Awaitable[bool]], limit: float = 5.0
) -> None:
    """Await `condition()` until it is true, failing after `limit` seconds."""
    with anyio.fail_after(limit):
        while not await condition():  # noqa: ASYNC110  # a server's state, untold
            await anyio.sleep(0.02)


async def take(locks: Locks, key: str, holder: str, timing: Timing = FAST) -> Lease:
    """Take a key that must be free."""
    lease = await locks.try_acquire(key, holder=holder, timing=timing)
    assert lease is not None
    return lease


async def gone(admin: redis.asyncio.Redis, name: str) -> None:
    """Wait until the key `name` has expired."""

    async def missing() -> bool:
        return not await admin.exists(name)

    await wait_until(missing)


# --- taking, renewing and releasing ---------------------------------------------


async def test_only_one_of_two_instances_holds_a_key_until_it_is_released(
    url: str, prefix: str, admin: redis.asyncio.Redis
) -> None:
    """The second gets None and sees the holder; after the release, it takes the key."""
    async with RedisLocks(url, prefix=prefix) as a, RedisLocks(url, prefix=prefix) as b:
        first = await take(a, "job", "pod:a pid 1")
        assert await b.try_acquire("job", holder="pod:b pid 2", timing=FAST) is None
        assert await b.holder_of("job") == "pod:a pid 1"
        await first.release()
        assert await b.holder_of("job") is None
        second = await take(b, "job", "pod:b pid 2")
        assert await a.holder_of("job") == "pod:b pid 2"
        assert second.token == first.token + 1
        assert await admin.pttl(f"{prefix}:lock:job") > 1000


async def test_a_lease_that_is_not_renewed_expires_and_another_takes_the_key(
    url: str, prefix: str, admin: redis.asyncio.Redis
) -> None:
    """The server frees the key after `lease`; the next holder gets a greater token."""
    async with RedisLocks(url, prefix=prefix) as a, RedisLocks(url, prefix=prefix) as b:
        first = await take(a, "job", "a", SHORT)
        assert await b.try_acquire("job", holder="b", timing=SHORT) is None
        await gone(admin, f"{prefix}:lock:job")
        second = await take(b, "job", "b", SHORT)
        assert second.token > first.token
        assert await a.holder_of("job") == "b"


async def test_renewing_extends_the_lease(
    url: str, prefix: str, admin: redis.asyncio.Redis
) -> None:
    """A renewal sets the key's expiry back to the whole lease."""
    async with RedisLocks(url, prefix=prefix) as locks:
        lease = await take(locks, "job", "a")
        await admin.pexpire(f"{prefix}:lock:job", 100)
        await lease.renew()
        assert await admin.pttl(f"{prefix}:lock:job") > 1000
        assert await locks.holder_of("job") == "a"


async def test_renewing_after_the_lease_expired_raises_lock_lost(
    url: str, prefix: str, admin: redis.asyncio.Redis
) -> None:
    """The error names the key, the backend and the holder, and says what happened."""
    async with RedisLocks(url, prefix=prefix) as locks:
        lease = await take(locks, "job", "a", SHORT)
        await gone(admin, f"{prefix}:lock:job")
        with pytest.raises(LockLostError, match="'job'") as info:
            await lease.renew()
    lost = info.value
    assert lost.code == "lock-lost"
    assert (lost.key, lost.holder) == ("job", "a")
    assert lost.backend == locks.description
    assert lost.reason == "its key had expired or been deleted before renewing"


async def test_renewing_after_another_took_the_key_names_the_new_holder(
    url: str, prefix: str, admin: redis.asyncio.Redis
) -> None:
    """The lost lease does not get the key back; the new holder keeps it."""
    async with RedisLocks(url, prefix=prefix) as a, RedisLocks(url, prefix=prefix) as b:
        old = await take(a, "job", "a", SHORT)
        await gone(admin, f"{prefix}:lock:job")
        new = await take(b, "job", "pod:b pid 2")
        with pytest.raises(LockLostError) as info:
            await old.renew()
        assert info.value.reason == "it is held by pod:b pid 2 now"
        await new.renew()
        assert await a.holder_of("job") == "pod:b pid 2"


async def test_release_never_deletes_another_holders_lock(
    url: str, prefix: str, admin: redis.asyncio.Redis
) -> None:
    """A release after the lease expired and the key was taken leaves the key alone."""
    async with RedisLocks(url, prefix=prefix) as a, RedisLocks(url, prefix=prefix) as b:
        old = await take(a, "job", "a", SHORT)
        await gone(admin, f"{prefix}:lock:job")
        new = await take(b, "job", "b")
        await old.release()
        assert await b.holder_of("job") == "b"
        await new.renew()


async def test_release_is_idempotent_and_a_released_lease_cannot_be_renewed(
    url: str, prefix: str
) -> None:
    """Releasing twice is quiet; renewing or marking done afterwards is a loss."""
    async with RedisLocks(url, prefix=prefix) as locks:
        lease = await take(locks, "job", "a")
        await lease.release()
        await lease.release()
        assert await locks.holder_of("job") is None
        with pytest.raises(LockLostError) as renewing:
            await lease.renew()
        with pytest.raises(LockLostError) as marking:
            await lease.mark_done("1")
    assert renewing.value.reason == "it was released before renewing"
    assert marking.value.reason == "it was released before marking the step done"


async def test_tokens_strictly_increase_across_releases_and_expiries(
    url: str, prefix: str, admin: redis.asyncio.Redis
) -> None:
    """Each take counts the fencing token up, however the previous lease ended."""
    tokens: list[int] = []
    async with RedisLocks(url, prefix=prefix) as a, RedisLocks(url, prefix=prefix) as b:
        for locks in (a, b, a):
            lease = await take(locks, "job", "x", SHORT)
            tokens.append(lease.token)
            await lease.release()
        for locks in (b, a):
            tokens.append((await take(locks, "job", "x", SHORT)).token)
            await gone(admin, f"{prefix}:lock:job")
        other = await take(a, "other", "x")
    assert tokens == sorted(set(tokens))
    assert len(tokens) == 5
    assert await admin.get(f"{prefix}:fence:job") == str(tokens[-1])
    assert other.token == 1


async def test_a_killed_connection_is_replaced_and_the_lease_is_kept(
    url: str, prefix: str, admin: redis.asyncio.Redis
) -> None:
    """The lock lives in its key: after CLIENT KILL, renewing reconnects, and works."""
    name = connection_name()
    async with RedisLocks(named(url, name), prefix=prefix) as locks:
        lease = await take(locks, "job", "a")
        killed = await connections(admin, name)
        assert killed
        for client_id in killed:
            await admin.client_kill_filter(_id=client_id)
        await lease.renew()
        await lease.mark_done("1")
        assert await locks.holder_of("job") == "a"
        now = await connections(admin, name)
        assert now
        assert not set(now) & set(killed)
        await lease.release()
    assert await admin.get(f"{prefix}:lock:job") is None


# --- recording what was done ----------------------------------------------------


async def test_mark_done_records_the_version_and_counts_each_lease_once(
    url: str, prefix: str
) -> None:
    """last_done reads back the version and how many leases finished the step."""
    async with RedisLocks(url, prefix=prefix) as locks:
        assert await locks.last_done("migrations") is None
        first = await take(locks, "migrations", "a")
        await first.mark_done("41")
        assert await locks.last_done("migrations") == Done("41", 1, frozenset({"41"}))
        await first.mark_done("42")
        assert await locks.last_done("migrations") == Done(
            "42", 1, frozenset({"41", "42"})
        )
        await first.release()
        second = await take(locks, "migrations", "a")
        await second.mark_done(None)
        await second.release()
        assert await locks.last_done("migrations") == Done(
            None, 2, frozenset({"41", "42"})
        )


async def test_mark_done_after_the_lock_was_lost_raises_and_records_nothing(
    url: str, prefix: str, admin: redis.asyncio.Redis
) -> None:
    """A holder that lost its lease cannot claim the step was done."""
    async with RedisLocks(url, prefix=prefix) as a, RedisLocks(url, prefix=prefix) as b:
        lease = await take(a, "migrations", "a", SHORT)
        await gone(admin, f"{prefix}:lock:migrations")
        with pytest.raises(LockLostError) as expired:
            await lease.mark_done("1")
        await take(b, "migrations", "b")
        with pytest.raises(LockLostError) as taken:
            await lease.mark_done("1")
        assert await a.last_done("migrations") is None
    assert expired.value.reason == (
        "its key had expired or been deleted before marking the step done"
    )
    assert taken.value.reason == "it is held by b now"


# --- connecting, closing, failing ---------------------------------------------------


async def test_entering_connects_and_leaving_releases_and_closes_every_connection(
    url: str, prefix: str, admin: redis.asyncio.Redis
) -> None:
    """No lock and no connection of it is left once its block ends."""
    name = connection_name()
    async with RedisLocks(named(url, name), prefix=prefix) as locks:
        assert await connections(admin, name)
        await take(locks, "job", "a")
        async with anyio.create_task_group() as tg:
            for key in ("x", "y", "z"):
                tg.start_soon(locks.holder_of, key)
        assert await locks.check() == f"{locks.description}: no lock taken or awaited"

    async def closed() -> bool:
        return not await connections(admin, name)

    await wait_until(closed)
    assert await admin.get(f"{prefix}:lock:job") is None


async def test_its_connections_are_named_for_client_list(
    url: str, admin: redis.asyncio.Redis
) -> None:
    """Without a client_name in the URL, CLIENT LIST shows 'lifespan_kit-locks'."""
    before = set(await connections(admin, "lifespan_kit-locks"))
    async with RedisLocks(url):
        during = set(await connections(admin, "lifespan_kit-locks"))
    assert during - before


async def test_an_unreachable_server_raises_lock_unavailable_without_the_password() -> (
    None
):
    """Entering fails naming the backend and what to check, never the password."""
    with pytest.raises(LockUnavailableError) as info:
        async with RedisLocks("redis://app:hunter2@127.0.0.1:1/0", connect_timeout=2):
            raise AssertionError("never entered")  # pragma: no cover
    error = info.value
    assert error.code == "lock-unavailable"
    assert error.backend == "Redis at 127.0.0.1:1/0"
    assert error.reason.startswith("ConnectionError: ")
    assert "check that Redis runs and is reachable" in str(error)
    assert "hunter2" not in str(error)


async def test_a_server_that_never_answers_ping_fails_after_connect_timeout() -> None:
    """Something that accepts connections but is not Redis does not hang the start."""
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        with anyio.fail_after(5), pytest.raises(LockUnavailableError) as info:
            async with RedisLocks(f"redis://127.0.0.1:{port}/0", connect_timeout=0.3):
                raise AssertionError("never entered")  # pragma: no cover
    assert info.value.reason == "it did not answer PING within connect_timeout=0.3s"
    assert "raise connect_timeout" in str(info.value)


async def test_using_it_outside_its_block_says_how_to_open_it(url: str) -> None:
    """Before entering, and after leaving, every call raises LockUnavailableError."""
    locks = RedisLocks(url)
    with pytest.raises(LockUnavailableError, match="async with RedisLocks"):
        await locks.ping()
    async with locks:
        await locks.ping()
    with pytest.raises(LockUnavailableError, match="it is not open"):
        await locks.try_acquire("job", holder="a", timing=FAST)


class Relay:
    """A TCP relay to Redis that a test cuts, as a network failure would."""

    def __init__(self, listener: anyio.abc.SocketListener, url: str) -> None:
        parts = urlsplit(url)
        self.listener = listener
        self.target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self.streams: list[anyio.abc.SocketStream] = []
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        self.url = f"redis://127.0.0.1:{port}{parts.path}"

    async def serve(self, tg: anyio.abc.TaskGroup) -> None:
        with suppress(anyio.ClosedResourceError):
            while True:
                client = await self.listener.accept()
                # Not anyio.connect_tcp: coverage stops tracing the frame that
                # awaited it, so the lines below would never count as run.
                connected = await anyio.to_thread.run_sync(
                    socket.create_connection, self.target
                )
                upstream = await anyio.abc.SocketStream.from_socket(connected)
                self.streams += [client, upstream]
                tg.start_soon(self.pipe, client, upstream)
                tg.start_soon(self.pipe, upstream, client)

    async def pipe(
        self, source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream
    ) -> None:
        with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            async for chunk in source:
                await sink.send(chunk)
        await sink.aclose()

    async def cut(self) -> None:
        """Close every connection, and refuse new ones."""
        await self.listener.aclose()
        for stream in self.streams:
            await stream.aclose()


@asynccontextmanager
async def relay_to(url: str) -> AsyncIterator[Relay]:
    """Relay connections to the server at `url` until the block ends or cuts it."""
    multi = await anyio.create_tcp_listener(local_host="127.0.0.1")
    [listener] = multi.listeners
    assert isinstance(listener, anyio.abc.SocketListener)
    relay = Relay(listener, url)
    async with anyio.create_task_group() as tg:
        tg.start_soon(relay.serve, tg)
        try:
            yield relay
        finally:
            await relay.cut()


async def test_when_redis_goes_away_a_holder_loses_its_lock_and_calls_fail_clearly(
    url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Renewing and marking done raise LockLostError; release only logs a warning."""
    async with relay_to(url) as relay, RedisLocks(relay.url, prefix=prefix) as locks:
        lease = await take(locks, "job", "a")
        await relay.cut()
        with pytest.raises(LockLostError) as renewing:
            await lease.renew()
        with pytest.raises(LockLostError) as marking:
            await lease.mark_done("1")
        with caplog.at_level(logging.WARNING, logger="lifespan_kit.redis"):
            await lease.release()
        await lease.release()
    assert renewing.value.reason.startswith("Redis failed while renewing: Connection")
    assert marking.value.reason.startswith("Redis failed while marking the step done")
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith(
        f"Could not release lock 'job' on {locks.description} (ConnectionError"
    )
    assert record.getMessage().endswith("it expires after its lease.")


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda locks: locks.ping(), id="ping"),
        pytest.param(lambda locks: locks.holder_of("job"), id="holder_of"),
        pytest.param(lambda locks: locks.last_done("job"), id="last_done"),
        pytest.param(
            lambda locks: locks.try_acquire("job", holder="a", timing=FAST),
            id="try_acquire",
        ),
    ],
)
async def test_when_redis_goes_away_reads_and_takes_raise_lock_unavailable(
    url: str, prefix: str, call: Callable[[RedisLocks], Any]
) -> None:
    """The error names the backend and what to check."""
    async with relay_to(url) as relay, RedisLocks(relay.url, prefix=prefix) as locks:
        await relay.cut()
        with pytest.raises(LockUnavailableError) as info:
            await call(locks)
    assert info.value.backend == locks.description
    assert info.value.reason.startswith("ConnectionError")


async def test_leaving_after_redis_went_away_warns_and_closes(
    url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A lease still held at exit is released if possible; the exit never raises."""
    with caplog.at_level(logging.WARNING, logger="lifespan_kit.redis"):
        async with (
            relay_to(url) as relay,
            RedisLocks(relay.url, prefix=prefix) as locks,
        ):
            await take(locks, "job", "a")
            await relay.cut()
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


# --- arguments and installation ---------------------------------------------------


@pytest.mark.parametrize(
    ("url", "description"),
    [
        pytest.param("redis://127.0.0.1:6379/0", "Redis at 127.0.0.1:6379/0", id="tcp"),
        pytest.param(
            "rediss://app:secret@cache.internal:7000/3",
            "Redis at cache.internal:7000/3",
            id="tls-with-password",
        ),
        pytest.param("redis://", "Redis at localhost:6379/0", id="defaults"),
        pytest.param(
            "unix:///run/redis.sock?db=2",
            "Redis at /run/redis.sock (database 2)",
            id="unix",
        ),
    ],
)
def test_the_description_says_where_without_credentials(
    url: str, description: str
) -> None:
    """Messages and health reports name the server, never the password."""
    assert RedisLocks(url).description == description


@pytest.mark.parametrize(
    ("arguments", "option", "problem"),
    [
        pytest.param({"url": 42}, "url", "int is not a URL string", id="url-type"),
        pytest.param(
            {"url": "http://127.0.0.1:6379"},
            "url",
            "redis-py does not accept it: Redis URL must specify one of",
            id="url-scheme",
        ),
        pytest.param({"prefix": ""}, "prefix", "'' is not a non-empty", id="prefix"),
        pytest.param({"prefix": 7}, "prefix", "7 is not a non-empty", id="prefix-type"),
        pytest.param({"connect_timeout": 0}, "connect_timeout", "0 is", id="zero"),
        pytest.param({"connect_timeout": math.inf}, "connect_timeout", "inf", id="inf"),
        pytest.param({"connect_timeout": True}, "connect_timeout", "True", id="bool"),
        pytest.param({"connect_timeout": "1"}, "connect_timeout", "'1'", id="str"),
    ],
)
def test_bad_arguments_raise_invalid_option_naming_it(
    arguments: dict[str, Any], option: str, problem: str
) -> None:
    """The error names the option and RedisLocks, and says what is wrong."""
    arguments = {"url": "redis://127.0.0.1:6379/0", **arguments}
    with pytest.raises(InvalidOptionError) as info:
        RedisLocks(**arguments)
    assert info.value.option == option
    assert info.value.owner == "RedisLocks"
    assert info.value.problem.startswith(problem)


def test_without_redis_py_the_import_error_names_the_extra() -> None:
    """Importing lifespan_kit.redis without redis-py says what to install."""
    result = import_with_blocked("redis", "lifespan_kit.redis")
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line == (
        "ImportError: lifespan_kit.redis needs redis-py, which is not installed; "
        'install it with: pip install "lifespan_kit[redis]"'
    )


# --- run_once and leadership, end to end ------------------------------------------


def replica(
    url: str,
    prefix: str,
    name: str,
    *,
    steps: list[str] | None = None,
    leads: list[tuple[str, int]] | None = None,
    version: str | None = None,
) -> Registry:
    """A replica with its own RedisLocks: a step run once, a task one replica leads."""
    registry = Registry()

    @registry.resource(health=Locks.check)
    async def locks() -> AsyncIterator[Locks]:
        async with RedisLocks(url, prefix=prefix) as locks:
            yield locks

    if steps is not None:

        @registry.resource
        async def schema(locks: Locks) -> StepOutcome:
            async def migrate() -> None:
                await anyio.sleep(0.3)
                steps.append(name)

            return await run_once(
                locks, "migrations", migrate, version=version, timing=FAST, holder=name
            )

    if leads is not None:

        @registry.background
        async def scheduler(locks: Locks) -> None:
            async with leadership(locks, "scheduler", timing=FAST, holder=name) as term:
                leads.append((name, term.token))
                try:
                    await anyio.sleep_forever()
                finally:
                    leads.append((name, -term.token))

    return registry


async def test_replicas_starting_together_run_the_step_once(
    url: str, prefix: str
) -> None:
    """One runs it; the others wait, then skip it; a restart skips it at once."""
    steps: list[str] = []
    outcomes: dict[str, StepOutcome] = {}

    async def start(name: str) -> None:
        registry = replica(url, prefix, name, steps=steps, version="1")
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
    async with RedisLocks(url, prefix=prefix) as locks:
        assert await locks.last_done("migrations") == Done("1", 1, frozenset({"1"}))
        assert await locks.holder_of("migrations") is None


async def test_one_replica_leads_and_the_other_takes_over_when_it_stops(
    url: str, prefix: str
) -> None:
    """The standby's health check names the leader; it then leads with a new token."""
    leads: list[tuple[str, int]] = []
    first: Lifespan[Any] = replica(url, prefix, "a", leads=leads).lifespan()
    second: Lifespan[Any] = replica(url, prefix, "b", leads=leads).lifespan()

    stop_first = anyio.Event()

    async def leading() -> bool:
        return bool(leads)

    async def taken_over() -> bool:
        return len(leads) == 3

    async def run_first() -> None:
        async with first:
            await stop_first.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_first)
        await wait_until(leading)
        async with second:
            locks = (await second.health()).resources["locks"]
            assert locks.detail is not None
            assert locks.detail.endswith("standby for 'scheduler' (leader: a)")
            stop_first.set()
            await wait_until(taken_over)
    assert [name for name, _ in leads] == ["a", "a", "b", "b"]
    token_a, token_b = leads[0][1], leads[2][1]
    assert token_b > token_a


async def test_a_leader_whose_key_is_deleted_is_cancelled_and_fails(
    url: str, prefix: str, admin: redis.asyncio.Redis
) -> None:
    """Its next renewal finds the key gone: the block is cancelled; LockLostError."""
    leads: list[tuple[str, int]] = []
    lifespan: Lifespan[Any] = replica(url, prefix, "a", leads=leads).lifespan()

    async def leading() -> bool:
        return bool(leads)

    async def run() -> None:
        async with lifespan:
            await wait_until(leading)
            await admin.delete(f"{prefix}:lock:scheduler")
            deleted = anyio.current_time()
            with anyio.fail_after(FAST.renew_deadline):
                await lifespan.wait_failed()
            assert anyio.current_time() - deleted < FAST.retry * 3
            assert leads == [("a", leads[0][1]), ("a", -leads[0][1])]

    with pytest.raises(BackgroundTaskError) as info:
        await run()
    assert info.value.resource_name == "scheduler"
    lost = info.value.__cause__
    assert isinstance(lost, LockLostError)
    assert (lost.key, lost.holder) == ("scheduler", "a")
    assert lost.reason == "its key had expired or been deleted before renewing"
    assert "Redis at" in lost.backend
