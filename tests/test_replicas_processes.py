"""Replicas as real processes: run-once steps and leadership through kills and drops.

Each test runs `tests.replica_worker` processes (each in a process group of
its own, killed when the test ends, whatever happened), on PostgreSQL locks
and on Redis locks; the replicas record what they do in PostgreSQL, in a
schema of the test's own, which also names their locks and Redis keys. The
replicas' output is kept in the test's `tmp_path`. The timing is
`replica_worker.TIMING`: lease 2 s, renew deadline 1.2 s, retry 0.2 s.

The chaos test takes the leader away again and again, and measures each
takeover up to the moment the next leader entered its block, from: the old
leader's own record of leaving its block, after SIGTERM; the kill, after
SIGKILL; the drop, after its lock connection was dropped. It asserts the
bounds of the timing table in docs/replicas.md:

- clean stop: `retry` on Redis (the next try of a standby), `retry + lease`
  on PostgreSQL (a new leader first waits out the lease);
- SIGKILL: `lease + retry` on Redis (the lease runs out); on PostgreSQL the
  server frees the lock as soon as it reads the end of the killed process's
  connection (at once, on one host), then `retry + lease`;
- dropped connection (PostgreSQL: its sessions ended by
  `pg_terminate_backend`; Redis: its connections killed while its user is
  disabled, a partition it cannot reconnect through, since RedisLocks
  reconnects): the old leader's block ends within `renew_deadline`, and a
  new leader comes within `retry + lease`.

A takeover is also allowed `ALLOWANCE` more: a standby's tries are `retry`
apart plus their round trips, and a loaded machine runs processes late. No
allowance applies to the order of the intervals: each ends before the next
begins. asyncpg and redis.asyncio, which the tests use, run on asyncio only.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.abc
import asyncpg
import pytest
import redis.asyncio

from tests import replica_worker
from tests.servers import postgres_dsn, redis_url

ROOT: Final = Path(__file__).resolve().parent.parent
TIMING: Final = replica_worker.TIMING
ALLOWANCE: Final = 1.0
ROUNDS: Final = int(os.environ.get("LIFESPAN_KIT_REPLICA_ROUNDS", "8"))
SEED: Final = int(os.environ.get("LIFESPAN_KIT_REPLICA_SEED", "3"))
WAIT: Final = 20.0
POLL: Final = 0.02
EXIT_STATUS: Final = {"sigterm": 143, "sigkill": -signal.SIGKILL, "drop": 1}
LOSSES: Final = tuple(EXIT_STATUS)

T = TypeVar("T")


@pytest.fixture(params=[pytest.param("asyncio", id="asyncio")])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run on asyncio only: asyncpg and redis.asyncio have no trio support."""
    return str(request.param)


async def wait_until(check: Callable[[], Awaitable[T | None]]) -> T:
    """Poll `check` until it returns something, for at most `WAIT` seconds."""
    with anyio.fail_after(WAIT):
        while (found := await check()) is None:  # noqa: ASYNC110  # other processes
            await anyio.sleep(POLL)
        return found


# --- the replicas ---------------------------------------------------------------


@dataclass
class Replica:
    """One replica process, and the files its output goes to."""

    holder: str
    process: anyio.abc.Process
    output: Path
    errors: Path

    def lines(self) -> list[str]:
        return self.output.read_text().splitlines()

    def events(self) -> list[tuple[str, str]]:
        """Each resource event: (kind, resource), in order."""
        words = [line.split() for line in self.lines() if line.startswith("event ")]
        return [(kind, name) for _, kind, name in words]

    async def go(self) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(b"go\n")

    async def exit_status(self) -> int:
        with anyio.fail_after(WAIT):
            return await self.process.wait()


class PostgresLocksSide:
    """What the tests do to the PostgreSQL lock backend."""

    name = "postgres"
    unreachable = "postgresql://postgres@127.0.0.1:1/test"
    unreachable_description = "PostgreSQL at 127.0.0.1:1/test"

    def __init__(self, dsn: str, admin: asyncpg.Connection) -> None:
        self.dsn = dsn
        self.admin = admin

    async def prepare(self, slot: int) -> str:
        """Return the URL the replica in `slot` takes its locks at."""
        return self.dsn

    async def drop(self, slot: int, holder: str) -> None:
        """End the sessions that hold the replica's locks; the server frees them."""
        ended = await self.admin.fetch(
            "select pg_terminate_backend(pid) from pg_stat_activity"
            " where application_name = $1",
            holder,
        )
        assert ended, f"no session of {holder} to end"

    async def lose(self, slot: int, holder: str, key: str) -> None:
        await self.drop(slot, holder)

    async def is_waiting(self, slot: int, holder: str) -> bool:
        """Tell whether the replica tried to take a lock another holds, and failed.

        A failed try leaves its session idle, named after the holder, with
        pg_try_advisory_lock as its last query.
        """
        tried: bool = await self.admin.fetchval(
            "select exists (select from pg_stat_activity where application_name = $1"
            " and state = 'idle' and query like '%pg_try_advisory_lock%')",
            holder,
        )
        return tried

    async def done(self, key: str) -> tuple[str, int]:
        """What the backend recorded for the step on `key`: version and count."""
        # PostgresLocks keeps its records under its prefix, "lifespan_kit" here.
        row = await self.admin.fetchrow(
            "select version, count from lifespan_kit_steps where key = $1",
            f"lifespan_kit:{key}",
        )
        assert row is not None
        return str(row["version"]), int(row["count"])

    def takeover_bound(self, action: str) -> float:
        return TIMING.retry + TIMING.lease

    async def aclose(self) -> None:
        """Nothing to clean up: the steps table is in the test's schema."""


class RedisLocksSide:
    """What the tests do to the Redis lock backend: each slot connects as its user."""

    name = "redis"
    unreachable = "redis://127.0.0.1:1/0"
    unreachable_description = "Redis at 127.0.0.1:1/0"

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self.password = secrets.token_hex(16)
        self.users: set[str] = set()
        self.admin = redis.asyncio.Redis.from_url(
            url, decode_responses=True, client_name="lifespan_kit-test-admin"
        )

    def user(self, slot: int) -> str:
        return f"{self.prefix}-r{slot}"

    async def prepare(self, slot: int) -> str:
        """Enable the slot's user, allowed the deployment's keys; return its URL."""
        user = self.user(slot)
        self.users.add(user)
        await self.admin.acl_setuser(
            user,
            enabled=True,
            reset=True,
            passwords=[f"+{self.password}"],
            keys=[f"{self.prefix}:*"],
            commands=["+@all"],
        )
        parts = urlsplit(self.url)
        netloc = f"{user}:{self.password}@{parts.netloc.rpartition('@')[2]}"
        return urlunsplit(parts._replace(netloc=netloc))

    async def drop(self, slot: int, holder: str) -> None:
        """Cut the replica off: its user can no longer log in, its connections end."""
        user = self.user(slot)
        await self.admin.acl_setuser(user, enabled=False)
        assert await self.admin.client_kill_filter(user=user) > 0, user

    async def lose(self, slot: int, holder: str, key: str) -> None:
        """Delete the lock's key, as a lease that ran out would be."""
        assert await self.admin.delete(f"{self.prefix}:lock:{key}") == 1

    async def is_waiting(self, slot: int, holder: str) -> bool:
        """Tell whether the replica tried to take a lock another holds, and failed.

        After a failed try, a replica reads who holds the lock: a GET, which
        nothing else it sends before does.
        """
        clients = await self.admin.client_list()
        user = self.user(slot)
        return any(c["user"] == user and c["cmd"] == "get" for c in clients)

    async def done(self, key: str) -> tuple[str, int]:
        found = await self.admin.hgetall(f"{self.prefix}:done:{key}")
        return str(found["version"]), int(found["count"])

    def takeover_bound(self, action: str) -> float:
        return TIMING.retry if action == "sigterm" else TIMING.lease + TIMING.retry

    async def aclose(self) -> None:
        """Delete the test's keys and users."""
        keys = [key async for key in self.admin.scan_iter(match=f"{self.prefix}:*")]
        if keys:
            await self.admin.delete(*keys)
        if self.users:
            await self.admin.acl_deluser(*self.users)
        await self.admin.aclose()


LocksSide = PostgresLocksSide | RedisLocksSide


class Deployment:
    """The replicas of one test, its schema of records, and its lock backend."""

    def __init__(
        self,
        admin: asyncpg.Connection,
        locks: LocksSide,
        *,
        dsn: str,
        schema: str,
        logs: Path,
    ) -> None:
        self.admin = admin
        self.dsn = dsn
        self.locks = locks
        self.schema = schema
        self.logs = logs
        self.replicas: list[Replica] = []
        self.slots: dict[int, Replica] = {}

    def key(self, name: str) -> str:
        return f"{self.schema}:{name}"

    async def start(
        self,
        slot: int,
        *,
        step_seconds: float = 0.0,
        wait_for_go: bool = False,
        locks_url: str | None = None,
    ) -> Replica:
        """Start a replica in `slot`, named for the slot and how often it started."""
        holder = f"{self.schema}-r{slot}.{len(self.replicas)}"
        url = await self.locks.prepare(slot) if locks_url is None else locks_url
        environment = replica_worker.environment(
            database_url=self.dsn,
            schema=self.schema,
            locks=self.locks.name,
            locks_url=url,
            holder=holder,
            step_seconds=step_seconds,
            wait_for_go=wait_for_go,
        )
        output, errors = self.logs / f"{holder}.out", self.logs / f"{holder}.err"
        with output.open("wb") as out, errors.open("wb") as err:
            process = await anyio.open_process(
                [sys.executable, "-m", "tests.replica_worker"],
                cwd=ROOT,
                env=environment,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        replica = Replica(holder, process, output, errors)
        self.replicas.append(replica)
        self.slots[slot] = replica
        return replica

    def alive(self) -> dict[int, Replica]:
        return {
            slot: replica
            for slot, replica in self.slots.items()
            if replica.process.returncode is None
        }

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        """Run `query` on the test's schema of records."""
        return await self.admin.fetch(query, *args)

    async def startups(self, replicas: Sequence[Replica]) -> list[asyncpg.Record]:
        """Wait until each replica finished its startup; return what they recorded."""
        holders = [replica.holder for replica in replicas]

        async def recorded() -> list[asyncpg.Record] | None:
            ended = [r.holder for r in replicas if r.process.returncode is not None]
            assert not ended, f"{ended} exited before their startup; see {self.logs}"
            rows = await self.fetch(
                "select * from startups where holder = any($1::text[])"
                " order by finished",
                holders,
            )
            return rows if len(rows) == len(holders) else None

        return await wait_until(recorded)

    async def term_after(self, term_id: int) -> asyncpg.Record:
        """Wait for the first leadership term after `term_id`."""

        async def found() -> asyncpg.Record | None:
            rows = await self.fetch(
                "select * from terms where id > $1 order by id limit 1",
                term_id,
            )
            return rows[0] if rows else None

        return await wait_until(found)

    async def aclose(self) -> None:
        """Kill every process group still running, and wait for every process."""
        for replica in self.replicas:
            if replica.process.returncode is None:
                os.killpg(replica.process.pid, signal.SIGKILL)
        for replica in self.replicas:
            await replica.process.aclose()


@pytest.fixture(
    params=[pytest.param("postgres", id="postgres"), pytest.param("redis", id="redis")]
)
async def deployment(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Deployment]:
    """Replicas on one lock backend, recording in a schema dropped afterwards."""
    dsn = postgres_dsn()
    url = redis_url() if request.param == "redis" else None  # may skip: first
    schema = f"replicas_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(
        dsn, server_settings={"application_name": "lifespan_kit-test-admin"}
    )
    locks: LocksSide = (
        PostgresLocksSide(dsn, admin) if url is None else RedisLocksSide(url, schema)
    )
    deployment = Deployment(admin, locks, dsn=dsn, schema=schema, logs=tmp_path)
    try:
        await admin.execute(f"create schema {schema}; set search_path = {schema};")
        await admin.execute(replica_worker.RECORDS)
        yield deployment
    finally:
        try:
            await deployment.aclose()
            await locks.aclose()
        finally:
            await admin.execute(f"drop schema {schema} cascade")
            await admin.close()


async def stop_all(replicas: Sequence[Replica]) -> list[int]:
    """Send SIGTERM to each replica; return their exit statuses."""
    for replica in replicas:
        replica.process.send_signal(signal.SIGTERM)
    return [await replica.exit_status() for replica in replicas]


# --- run-once steps ---------------------------------------------------------------


async def test_five_replicas_started_at_once_run_the_step_once(
    deployment: Deployment,
) -> None:
    """One runs it; the four others wait, then finish their startup after it did."""
    replicas = [
        await deployment.start(slot, step_seconds=2.0, wait_for_go=True)
        for slot in range(5)
    ]

    async def ready() -> bool | None:
        lines = [replica.lines() for replica in replicas]
        return all(replica_worker.WAITING_FOR_GO in found for found in lines) or None

    await wait_until(ready)
    for replica in replicas:
        await replica.go()
    startups = await deployment.startups(replicas)
    [run] = await deployment.fetch("select * from step_runs")
    attempts = await deployment.fetch("select holder from step_attempts")
    done = await deployment.locks.done(deployment.key("migrations"))
    assert await stop_all(replicas) == [143] * 5
    assert [startup["holder"] for startup in startups if startup["ran"]] == [
        run["holder"]
    ]
    assert [attempt["holder"] for attempt in attempts] == [run["holder"]]
    assert all(startup["finished"] > run["finished"] for startup in startups)
    waited = [startup["waited"] for startup in startups if not startup["ran"]]
    assert len(waited) == 4
    assert all(seconds > 0 for seconds in waited), waited
    assert done == (replica_worker.STEP_VERSION, 1)


async def test_a_replica_killed_mid_step_leaves_it_to_another(
    deployment: Deployment,
) -> None:
    """Its transaction is rolled back; the replica waiting for it runs the step once."""
    first = await deployment.start(0, step_seconds=60.0)

    async def step_under_way() -> list[asyncpg.Record] | None:
        return await deployment.fetch("select * from step_attempts") or None

    await wait_until(step_under_way)
    second = await deployment.start(1)

    async def second_waits() -> bool | None:
        return await deployment.locks.is_waiting(1, second.holder) or None

    await wait_until(second_waits)
    os.killpg(first.process.pid, signal.SIGKILL)
    assert await first.exit_status() == -signal.SIGKILL
    [startup] = await deployment.startups([second])
    runs = await deployment.fetch("select * from step_runs")
    attempts = await deployment.fetch("select holder from step_attempts order by began")
    done = await deployment.locks.done(deployment.key("migrations"))
    assert [attempt["holder"] for attempt in attempts] == [first.holder, second.holder]
    assert [(run["holder"], run["finished"] is not None) for run in runs] == [
        (second.holder, True)
    ]
    assert startup["ran"]
    assert done == (replica_worker.STEP_VERSION, 1)


# --- leadership under chaos -------------------------------------------------------


@dataclass(frozen=True)
class Takeover:
    """One loss of the leader, and how long until the next one led."""

    action: str
    seconds: float
    bound: float
    stopped_after: float | None = None  # the old block's end, after a drop


@dataclass(frozen=True)
class Interval:
    """One leadership term: who led, with which token, from when until when."""

    holder: str
    token: int
    began: float
    ended: float | None


class Chaos:
    """Takes the leader away, and keeps what is needed to check every interval."""

    def __init__(self, deployment: Deployment, rng: random.Random) -> None:
        self.deployment = deployment
        self.rng = rng
        self.killed_ends: dict[int, float] = {}
        self.takeovers: list[Takeover] = []

    async def start(self) -> asyncpg.Record:
        replicas = [await self.deployment.start(slot) for slot in range(3)]
        await self.deployment.startups(replicas)
        return await self.deployment.term_after(0)

    async def round(self, term: asyncpg.Record) -> asyncpg.Record:
        """Do one action at random; return the term that leads after it."""
        alive = self.deployment.alive()
        losses = LOSSES if len(alive) > 1 else ()  # a standby can take over
        restart = ("restart",) if len(alive) < 3 else ()
        action = self.rng.choice([*losses, *restart])
        if action == "restart":
            dead = [slot for slot in range(3) if slot not in alive]
            restarted = [await self.deployment.start(slot) for slot in dead]
            await self.deployment.startups(restarted)
            return term
        [slot] = [slot for slot, r in alive.items() if r.holder == term["holder"]]
        return await self.take_away(action, slot, alive[slot], term)

    async def take_away(
        self, action: str, slot: int, leader: Replica, term: asyncpg.Record
    ) -> asyncpg.Record:
        """Stop, kill or cut off the leader; measure the takeover."""
        lost_at = time.time()
        if action == "sigterm":
            leader.process.send_signal(signal.SIGTERM)
        elif action == "sigkill":
            os.killpg(leader.process.pid, signal.SIGKILL)
            await leader.exit_status()
            # It cannot record its end: once it has surely exited is the latest.
            self.killed_ends[term["id"]] = time.time()
        else:
            await self.deployment.locks.drop(slot, leader.holder)
        new = await self.deployment.term_after(term["id"])
        assert await leader.exit_status() == EXIT_STATUS[action], leader.holder
        [old] = await self.deployment.fetch(
            "select * from terms where id = $1", term["id"]
        )
        ended = self.killed_ends.get(old["id"], old["ended"])
        assert ended is not None, f"{leader.holder} did not record its end"
        since = ended if action == "sigterm" else lost_at
        stopped_after = ended - lost_at if action == "drop" else None
        bound = self.deployment.locks.takeover_bound(action)
        self.takeovers.append(
            Takeover(action, new["began"] - since, bound, stopped_after)
        )
        return new

    async def intervals(self) -> list[Interval]:
        """Every term, in the order they began; a killed leader's ends at its kill."""
        terms = await self.deployment.fetch("select * from terms order by began")
        return [
            Interval(
                t["holder"],
                t["token"],
                t["began"],
                self.killed_ends.get(t["id"], t["ended"]),
            )
            for t in terms
        ]


def count_overlaps(intervals: Sequence[Interval]) -> int:
    """How many pairs of intervals overlap; one without an end lasts for ever."""
    return sum(
        1
        for index, first in enumerate(intervals)
        for then in intervals[index + 1 :]
        if first.ended is None or then.began < first.ended
    )


def summarize(locks: LocksSide, takeovers: Sequence[Takeover], overlaps: int) -> str:
    """One line: the rounds, and the slowest takeover after each kind of loss."""
    kinds = []
    for action in LOSSES:
        times = [t.seconds for t in takeovers if t.action == action]
        bound = f"bound {locks.takeover_bound(action):.2f} s"
        slowest = f", slowest {max(times):.2f} s" if times else ""
        kinds.append(f"{len(times)} {action}{slowest} ({bound})")
    drops = [t.stopped_after for t in takeovers if t.stopped_after is not None]
    stopped = f"{max(drops):.2f} s" if drops else "-"
    return (
        f"[replicas] {locks.name}: {ROUNDS} rounds, {len(takeovers)} takeovers: "
        f"{'; '.join(kinds)}; bounds + {ALLOWANCE:.2f} s allowance; "
        f"old leader stopped after a drop within {stopped} "
        f"(bound {TIMING.renew_deadline:.2f} s); overlaps {overlaps}; seed {SEED}"
    )


@pytest.mark.timeout(60 + 12 * ROUNDS)
async def test_one_leader_at_a_time_through_stops_kills_and_drops(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    """Intervals never overlap, and each loss is followed by a takeover in bounds."""
    chaos = Chaos(deployment, random.Random(f"{SEED}-{deployment.locks.name}"))
    term = await chaos.start()
    for _ in range(ROUNDS):
        term = await chaos.round(term)
    statuses = await stop_all(list(deployment.alive().values()))
    intervals = await chaos.intervals()
    overlaps = count_overlaps(intervals)
    with capsys.disabled():
        print(f"\n{summarize(deployment.locks, chaos.takeovers, overlaps)}")
    assert set(statuses) == {143}
    assert overlaps == 0, intervals
    assert all(interval.ended is not None for interval in intervals), intervals
    tokens = [interval.token for interval in intervals]
    assert tokens == sorted(set(tokens)), intervals
    for takeover in chaos.takeovers:
        assert takeover.seconds <= takeover.bound + ALLOWANCE, takeover
        stopped_after = takeover.stopped_after or 0.0
        assert stopped_after <= TIMING.renew_deadline, takeover


# --- failures -----------------------------------------------------------------------


async def test_an_unreachable_lock_backend_fails_the_startup_with_status_3(
    deployment: Deployment,
) -> None:
    """The error names the locks resource and the backend's address."""
    replica = await deployment.start(0, locks_url=deployment.locks.unreachable)
    status = await replica.exit_status()
    errors = replica.errors.read_text()
    assert status == 3, errors
    assert "Resource 'locks' failed during startup." in errors
    backend = deployment.locks.unreachable_description
    assert f"LockUnavailableError: The lock backend {backend} cannot be used" in errors
    assert ("start_failed", "locks") in replica.events()


async def test_a_lock_lost_while_leading_stops_the_worker_with_status_1(
    deployment: Deployment,
) -> None:
    """The leader's block is cancelled; all stops in reverse dependency order; 1."""
    replica = await deployment.start(0)
    term = await deployment.term_after(0)
    key = deployment.key("leader")
    await deployment.locks.lose(0, replica.holder, key)
    status = await replica.exit_status()
    events = replica.events()
    errors = replica.errors.read_text()
    [ended] = await deployment.fetch(
        "select ended from terms where id = $1", term["id"]
    )
    started = [name for kind, name in events if kind == "started"]
    stopped = [name for kind, name in events if kind == "stopped"]
    assert status == 1, errors
    assert ("failed", "leader") in events
    assert sorted(stopped) == sorted(started)
    for name in stopped:  # after every resource that depends on it
        for dependency in replica_worker.registry[name].dependencies:
            assert stopped.index(dependency.resource_name) > stopped.index(name)
    assert not [event for event in events if event[0] == "stop_failed"]
    assert f"LockLostError: Lock '{key}' on " in errors
    assert f"was lost by {replica.holder}" in errors
    assert ended["ended"] is not None
