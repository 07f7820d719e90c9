"""Run-once steps and leadership, on the in-process backend, on asyncio and trio.

Several lifespans sharing one `MemoryLocks` stand for several replicas; the
backends for real servers are tested against them in test_locks_postgres.py
and test_locks_redis.py, and with real processes in test_replicas_processes.py.
"""

from __future__ import annotations

import importlib
import math
import sys
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from lifespan_kit import Lifespan, Registry, ResourceEvent
from lifespan_kit._console import Tracker
from lifespan_kit.errors import (
    BackgroundTaskError,
    InvalidOptionError,
    LifespanKitWarning,
    LockLostError,
    LockUnavailableError,
    StartTimeoutError,
    StartupError,
)
from lifespan_kit.replicas import (
    Done,
    Lease,
    Locks,
    MemoryLocks,
    StepOutcome,
    Term,
    Timing,
    leadership,
    run_once,
    standings,
)

pytest_plugins = ["pytester"]

FAST = Timing(lease=0.6, renew_deadline=0.4, retry=0.05)


class Intervals:
    """Leadership intervals of every replica, to check that none overlap."""

    def __init__(self) -> None:
        self.open: dict[str, float] = {}
        self.closed: list[tuple[str, float, float]] = []
        self.tokens: list[int] = []

    def begin(self, replica: str, token: int) -> None:
        assert not self.open, f"{replica} leads while {sorted(self.open)} lead"
        self.open[replica] = anyio.current_time()
        self.tokens.append(token)

    def end(self, replica: str) -> None:
        self.closed.append((replica, self.open.pop(replica), anyio.current_time()))


def replica_registry(
    locks: Locks,
    name: str,
    *,
    steps: list[str] | None = None,
    intervals: Intervals | None = None,
    version: str | None = None,
    step_time: float = 0.0,
) -> Registry:
    """A replica: a step run once, and a background task that one replica leads."""
    registry = Registry()
    registry.add("locks", locks)
    if steps is not None:

        @registry.resource
        async def schema(locks: Locks) -> StepOutcome:
            async def migrate() -> None:
                await anyio.sleep(step_time)
                steps.append(name)

            return await run_once(
                locks, "migrations", migrate, version=version, timing=FAST, holder=name
            )

    if intervals is not None:

        @registry.background
        async def scheduler(locks: Locks) -> None:
            async with leadership(locks, "scheduler", timing=FAST, holder=name) as term:
                intervals.begin(name, term.token)
                try:
                    await anyio.sleep_forever()
                finally:
                    intervals.end(name)

    return registry


# --- Timing -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"lease": 0}, "lease"),
        ({"renew_deadline": -1}, "renew_deadline"),
        ({"retry": math.inf}, "retry"),
        ({"lease": True}, "lease"),
        ({"retry": "2"}, "retry"),
        ({"lease": 10, "renew_deadline": 10}, "renew_deadline"),
        ({"renew_deadline": 1, "retry": 2}, "renew_deadline"),
    ],
)
def test_timing_refuses_values_out_of_order_or_not_seconds(
    options: dict[str, Any], option: str
) -> None:
    """lease > renew_deadline > retry, all finite seconds above 0."""
    with pytest.raises(InvalidOptionError) as info:
        Timing(**options)
    assert info.value.option == option
    assert "Timing" in str(info.value)


def test_timing_defaults_follow_kubernetes_leader_election() -> None:
    """15 s lease, 10 s renew deadline, 2 s retry period."""
    assert Timing() == Timing(lease=15, renew_deadline=10, retry=2)


# --- run_once -----------------------------------------------------------------


async def test_replicas_starting_together_run_the_step_once() -> None:
    """One replica runs it; the others wait for it, then finish their startup."""
    locks = MemoryLocks()
    steps: list[str] = []
    outcomes: dict[str, StepOutcome] = {}

    async def replica(name: str) -> None:
        registry = replica_registry(locks, name, steps=steps, step_time=0.2)
        async with registry.lifespan() as resources:
            outcome = resources["schema"]
            assert isinstance(outcome, StepOutcome)
            outcomes[name] = outcome
            assert steps  # the step finished before this replica's startup did

    async with anyio.create_task_group() as tg:
        for index in range(5):
            tg.start_soon(replica, f"replica-{index}")
    assert len(steps) == 1
    ran = [name for name, outcome in outcomes.items() if outcome.ran]
    assert ran == steps
    waited = [outcome for outcome in outcomes.values() if not outcome.ran]
    assert len(waited) == 4
    assert all(outcome.waited > 0 for outcome in waited)
    assert outcomes[ran[0]].token == 1
    assert await locks.last_done("migrations") == Done(None, 1)
    assert await locks.holder_of("migrations") is None


async def test_without_a_version_a_later_start_runs_the_step_again() -> None:
    """A wave of replicas runs it once; the next start (a restart) runs it again."""
    locks = MemoryLocks()
    steps: list[str] = []
    for name in ("first", "second"):
        async with replica_registry(locks, name, steps=steps).lifespan():
            pass
    assert steps == ["first", "second"]
    assert await locks.last_done("migrations") == Done(None, 2)


async def test_a_step_done_for_its_version_is_skipped_without_the_lock() -> None:
    """A restart reads the record and goes on, even while another holds the lock."""
    locks = MemoryLocks()
    steps: list[str] = []
    async with replica_registry(locks, "first", steps=steps, version="7").lifespan():
        pass
    long = Timing(lease=60, renew_deadline=50, retry=1)
    other = await locks.try_acquire("migrations", holder="busy", timing=long)
    assert other is not None
    with anyio.fail_after(5):  # far less than the other holder's lease
        registry = replica_registry(locks, "second", steps=steps, version="7")
        async with registry.lifespan() as resources:
            assert resources["schema"] == StepOutcome(
                "migrations", ran=False, version="7", waited=0.0
            )
    assert steps == ["first"]
    await other.release()
    registry = replica_registry(locks, "third", steps=steps, version="8")
    async with registry.lifespan():
        pass
    assert steps == ["first", "third"]
    assert await locks.last_done("migrations") == Done("8", 2, frozenset({"7", "8"}))


async def test_a_failed_step_is_run_again_by_the_next_replica() -> None:
    """Nothing is recorded, the lock is released, the startup fails naming it."""
    locks = MemoryLocks()
    registry = Registry()
    registry.add("locks", locks)

    @registry.resource
    async def schema(locks: Locks) -> StepOutcome:
        async def migrate() -> None:
            raise RuntimeError("syntax error in migration 42")

        return await run_once(locks, "migrations", migrate, timing=FAST)

    with pytest.raises(StartupError, match="'schema'") as info:
        async with registry.lifespan():
            pass  # pragma: no cover
    assert isinstance(info.value.__cause__, RuntimeError)
    assert await locks.holder_of("migrations") is None
    assert await locks.last_done("migrations") is None
    steps: list[str] = []
    async with replica_registry(locks, "next", steps=steps).lifespan():
        pass
    assert steps == ["next"]


async def test_a_step_whose_lock_lapses_is_cancelled_and_not_recorded() -> None:
    """The lease ran out under the step (a paused process): LockLostError, no record."""
    locks = MemoryLocks()
    registry = Registry()
    registry.add("locks", locks)
    cancelled: list[bool] = []

    @registry.resource
    async def schema(locks: Locks) -> StepOutcome:
        async def migrate() -> None:
            locks_ = locks
            assert isinstance(locks_, MemoryLocks)
            locks_.expire("migrations")
            try:
                await anyio.sleep(5)
            except anyio.get_cancelled_exc_class():
                cancelled.append(True)
                raise

        return await run_once(locks, "migrations", migrate, timing=FAST)

    with anyio.fail_after(3), pytest.raises(StartupError, match="'schema'") as info:
        async with registry.lifespan():
            pass  # pragma: no cover
    lost = info.value.__cause__
    assert isinstance(lost, LockLostError)
    assert lost.key == "migrations"
    assert lost.backend == "in-process locks"
    assert "ran out" in lost.reason
    assert cancelled == [True]
    assert await locks.last_done("migrations") is None


async def test_a_start_that_times_out_waiting_names_the_lock_and_its_holder() -> None:
    """StartTimeoutError says what the start waited for."""
    locks = MemoryLocks()
    held = await locks.try_acquire("migrations", holder="pod-a pid 7", timing=FAST)
    assert held is not None
    registry = Registry()
    registry.add("locks", locks)

    @registry.resource(start_timeout=0.3)
    async def schema(locks: Locks) -> StepOutcome:
        async def migrate() -> None:
            raise AssertionError("never runs")  # pragma: no cover

        slow = Timing(lease=60, renew_deadline=50, retry=0.05)
        return await run_once(locks, "migrations", migrate, timing=slow)

    async def renew_forever() -> None:
        while True:
            await held.renew()
            await anyio.sleep(0.1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(renew_forever)
        with pytest.raises(StartTimeoutError) as info:
            async with registry.lifespan():
                pass  # pragma: no cover
        tg.cancel_scope.cancel()
    error = info.value
    assert error.waiting_for == (
        "the lock 'migrations' on in-process locks, held by pod-a pid 7"
    )
    message = str(error)
    assert "waiting for: the lock 'migrations'" in message
    assert "a run-once step held by another replica" in message


@pytest.mark.parametrize(
    ("key", "version", "option"),
    [
        ("", None, "key"),
        (42, None, "key"),
        ("x" * 201, None, "key"),
        ("a", 7, "version"),
    ],
)
async def test_run_once_refuses_a_bad_key_or_version(
    key: object, version: object, option: str
) -> None:
    """The error names the option and the function."""

    async def step() -> None:
        raise AssertionError("never runs")  # pragma: no cover

    with pytest.raises(InvalidOptionError) as info:
        await run_once(MemoryLocks(), key, step, version=version)  # type: ignore[arg-type]
    assert info.value.option == option
    assert "run_once" in str(info.value)


# --- leadership ---------------------------------------------------------------


async def wait_until(condition: Any, limit: float = 3.0) -> None:
    """Poll `condition()` until it is true, failing after `limit` seconds."""
    with anyio.fail_after(limit):
        while not condition():  # noqa: ASYNC110  # set by other tasks, untold
            await anyio.sleep(0.01)


async def test_one_replica_leads_and_another_takes_over_when_it_stops() -> None:
    """Intervals never overlap; the standby leads within `retry` after a clean stop."""
    locks = MemoryLocks()
    intervals = Intervals()
    first = replica_registry(locks, "a", intervals=intervals).lifespan()
    second = replica_registry(locks, "b", intervals=intervals).lifespan()
    await first.__aenter__()
    await wait_until(lambda: "a" in intervals.open)
    async with second:
        await anyio.sleep(FAST.lease)  # the leader keeps its lease by renewing
        assert list(intervals.open) == ["a"]
        await first.__aexit__(None, None, None)
        stopped = anyio.current_time()
        await wait_until(lambda: "b" in intervals.open)
        # Within `retry` of the release, give or take a loaded machine.
        assert anyio.current_time() - stopped < FAST.renew_deadline
    assert [replica for replica, _, _ in intervals.closed] == ["a", "b"]
    assert intervals.tokens == sorted(intervals.tokens)
    assert len(set(intervals.tokens)) == len(intervals.tokens)


async def test_a_leader_whose_lease_is_taken_is_cancelled_and_fails(
    concurrency: int | None,
) -> None:
    """LockLostError makes the background task fail; the other replica leads next."""
    locks = MemoryLocks()
    intervals = Intervals()
    events: list[ResourceEvent] = []
    first = replica_registry(locks, "a", intervals=intervals)
    first.add_listener(events.append)
    lifespan = first.lifespan(concurrency=concurrency)
    failures: list[BaseException | None] = []

    async def run() -> None:
        async with lifespan:
            await wait_until(lambda: "a" in intervals.open)
            locks.expire("scheduler")
            with anyio.fail_after(2):
                failures.append((await lifespan.wait_failed()).__cause__)
            assert intervals.closed[-1][0] == "a"
            assert not intervals.open
            async with replica_registry(locks, "b", intervals=intervals).lifespan():
                await wait_until(lambda: "b" in intervals.open)

    with pytest.raises(BackgroundTaskError) as info:
        await run()
    assert info.value.resource_name == "scheduler"
    assert failures == [info.value.__cause__]
    lost = failures[0]
    assert isinstance(lost, LockLostError)
    assert lost.holder == "a"
    assert standings(locks)["scheduler"].describe() == "stepped down 'scheduler'"
    statuses = [e.detail for e in events if e.kind == "status"]
    assert statuses == [
        "standby for 'scheduler'",
        "leading 'scheduler' (token 1)",
        "lost 'scheduler'",
    ]


class Flaky(MemoryLocks):
    """In-process locks whose renewals fail, or hang, once told to."""

    def __init__(self) -> None:
        super().__init__()
        self.renewals = "work"

    async def try_acquire(
        self, key: str, *, holder: str, timing: Timing
    ) -> Lease | None:
        lease = await super().try_acquire(key, holder=holder, timing=timing)
        return None if lease is None else FlakyLease(self, lease)


class FlakyLease(Lease):
    def __init__(self, locks: Flaky, lease: Lease) -> None:
        super().__init__(lease.key, lease.holder, lease.token)
        self.locks = locks
        self.lease = lease

    async def renew(self) -> None:
        if self.locks.renewals == "fail":
            raise ConnectionResetError("the server went away")
        if self.locks.renewals == "hang":
            await anyio.sleep_forever()
        await self.lease.renew()

    async def mark_done(self, version: str | None) -> None:
        raise AssertionError("no step runs under these locks")  # pragma: no cover

    async def release(self) -> None:
        await self.lease.release()


@pytest.mark.parametrize(
    ("renewals", "reason"),
    [
        ("fail", "renewing failed with ConnectionResetError: the server went away"),
        ("hang", "not renewed within renew_deadline=0.4s"),
    ],
)
async def test_a_leader_that_cannot_renew_stops_before_its_lease_ends(
    renewals: str, reason: str
) -> None:
    """A renewal error, or one that never answers: cancelled within renew_deadline."""
    locks = Flaky()
    intervals = Intervals()
    lifespan = replica_registry(locks, "a", intervals=intervals).lifespan()

    async def run() -> None:
        async with lifespan:
            await wait_until(lambda: "a" in intervals.open)
            await anyio.sleep(FAST.retry * 3)  # renewals that work, first
            locks.renewals = renewals
            broke = anyio.current_time()
            with anyio.fail_after(2):
                await lifespan.wait_failed()
            _, began, ended = intervals.closed[-1]
            assert ended - max(began, broke) < FAST.lease

    with pytest.raises(BackgroundTaskError) as info:
        await run()
    lost = info.value.__cause__
    assert isinstance(lost, LockLostError)
    assert lost.reason == reason


class Unenforced(MemoryLocks):
    """In-process locks that, like PostgreSQL's, keep no lease of their own."""

    enforces_lease = False


async def test_without_a_server_lease_a_new_leader_waits_out_the_lease() -> None:
    """It settles for `lease` seconds (still renewing) before it leads."""
    locks = Unenforced()
    intervals = Intervals()
    seen: list[str] = []
    registry = replica_registry(locks, "a", intervals=intervals)
    registry.add_listener(lambda e: seen.append(e.detail or "") if e.detail else None)
    async with registry.lifespan():
        began = anyio.current_time()
        await wait_until(lambda: intervals.open)
        assert anyio.current_time() - began >= FAST.lease * 0.9
    assert "settling 'scheduler' (token 1)" in seen


async def test_a_step_taken_over_from_a_holder_that_vanished_waits_out_its_lease() -> (
    None
):
    """Without a server lease, the old holder may still run: wait before running."""
    locks = Unenforced()
    gone = await locks.try_acquire("migrations", holder="gone", timing=FAST)
    assert gone is not None
    steps: list[str] = []

    async def vanish() -> None:
        await anyio.sleep(FAST.retry * 2)
        locks.expire("migrations")

    async with anyio.create_task_group() as tg:
        tg.start_soon(vanish)
        began = anyio.current_time()
        async with replica_registry(locks, "b", steps=steps).lifespan():
            pass
    assert steps == ["b"]
    assert anyio.current_time() - began >= FAST.lease


async def test_the_body_of_a_leader_can_return_and_step_down() -> None:
    """A block that ends releases the lock; its standing says so."""
    locks = MemoryLocks()
    async with leadership(locks, "report", timing=FAST, holder="a") as term:
        assert isinstance(term, Term)
        assert (term.key, term.holder, term.token) == ("report", "a", 1)
        assert await locks.holder_of("report") == "a"
    assert await locks.holder_of("report") is None
    assert standings(locks)["report"].describe() == "stepped down 'report'"


async def test_an_error_in_the_body_propagates_unwrapped_and_releases() -> None:
    """The block's own exception comes out as it is, not in a group."""
    locks = MemoryLocks()
    with pytest.raises(KeyError, match="job"):
        async with leadership(locks, "report", timing=FAST):
            raise KeyError("job")
    assert await locks.holder_of("report") is None


async def test_a_cancelled_standby_leaves_nothing_held() -> None:
    """Cancelling a replica that waits to lead is clean."""
    locks = MemoryLocks()
    held = await locks.try_acquire("report", holder="other", timing=FAST)
    assert held is not None
    with anyio.move_on_after(FAST.retry * 3):
        async with leadership(locks, "report", timing=FAST, holder="me"):
            raise AssertionError("never leads")  # pragma: no cover
    assert standings(locks)["report"].describe() == (
        "standby for 'report' (leader: other)"
    )
    assert await locks.holder_of("report") == "other"


# --- health, events, the display ----------------------------------------------


async def test_the_locks_health_check_says_who_leads_what() -> None:
    """Locks.check as a health check: its text is the report's detail."""
    locks = MemoryLocks()
    intervals = Intervals()
    registry = Registry()
    registry.add("locks", locks, health=Locks.check)

    @registry.background
    async def scheduler(locks: Locks) -> None:
        async with leadership(locks, "scheduler", timing=FAST, holder="a") as term:
            intervals.begin("a", term.token)
            await anyio.sleep_forever()

    other = await locks.try_acquire("scheduler", holder="b", timing=FAST)
    assert other is not None
    lifespan: Lifespan[Any] = registry.lifespan()
    async with lifespan:
        await wait_until(
            lambda: getattr(standings(locks).get("scheduler"), "leader", None) == "b"
        )
        standby = (await lifespan.health()).resources["locks"]
        assert standby.detail == (
            "in-process locks: standby for 'scheduler' (leader: b)"
        )
        await other.release()
        await wait_until(lambda: intervals.open)
        report = await lifespan.health()
    health = report.resources["locks"]
    assert health.status == "healthy"
    assert health.detail == "in-process locks: leading 'scheduler' (token 2)"


async def test_a_failing_check_has_no_detail() -> None:
    """An unhealthy outcome carries its error only."""

    async def unreachable(locks: Locks) -> str:
        raise ConnectionRefusedError("no server")

    registry = Registry()
    registry.add("locks", MemoryLocks(), health=unreachable)
    lifespan = registry.lifespan()
    async with lifespan:
        health = (await lifespan.health()).resources["locks"]
    assert (health.status, health.detail) == ("unhealthy", None)
    assert health.error == "ConnectionRefusedError: no server"


def test_the_live_display_shows_a_running_resources_status() -> None:
    """A "status" event adds the detail to the row; the state stays "running"."""
    tracker = Tracker()
    tracker.record(ResourceEvent("scheduler", "status", detail="early"), 0.0)
    assert "scheduler" not in tracker.rows
    tracker.record(ResourceEvent("scheduler", "starting"), 0.0)
    tracker.record(ResourceEvent("scheduler", "started", duration=0.001), 0.1)
    tracker.record(
        ResourceEvent("scheduler", "status", detail="leading 'scheduler' (token 3)"),
        0.2,
    )
    row = tracker.rows["scheduler"]
    assert row.kind == "started"
    assert row.detail == "leading 'scheduler' (token 3)"
    assert tracker.outcome(row) == "running"


async def test_status_outside_a_background_task_is_not_an_event() -> None:
    """leadership() used directly, outside a lifespan, reports through logs only."""
    locks = MemoryLocks()
    async with leadership(locks, "alone", timing=FAST):
        await anyio.lowlevel.checkpoint()
    assert standings(locks)["alone"].role == "stepped down"


async def test_leadership_refuses_a_bad_key() -> None:
    """The error names the option and the function."""
    with pytest.raises(InvalidOptionError, match="leadership"):
        async with leadership(MemoryLocks(), ""):
            pass  # pragma: no cover


async def test_the_locks_health_check_before_any_lock() -> None:
    """Nothing taken or awaited yet: the check says so."""
    assert await MemoryLocks().check() == "in-process locks: no lock taken or awaited"


async def test_an_unrenewed_in_process_lease_runs_out_on_its_own() -> None:
    """As on Redis: after `lease` seconds without renewal, another may take it."""
    locks = MemoryLocks()
    short = Timing(lease=0.1, renew_deadline=0.05, retry=0.01)
    first = await locks.try_acquire("k", holder="a", timing=short)
    assert first is not None
    assert await locks.try_acquire("k", holder="b", timing=short) is None
    await anyio.sleep(0.15)
    second = await locks.try_acquire("k", holder="b", timing=short)
    assert second is not None
    assert second.token == first.token + 1
    with pytest.raises(LockLostError):
        await first.renew()
    await first.release()  # a lost lease's release leaves the new holder alone
    assert await locks.holder_of("k") == "b"


async def test_what_a_cancelled_block_raises_is_the_cause_of_the_lost_lock() -> None:
    """A driver that turns the cancellation into its own error: LockLostError wins."""
    locks = MemoryLocks()

    async def lead() -> None:
        async with leadership(locks, "report", timing=FAST):
            locks.expire("report")
            try:
                await anyio.sleep(5)
            except anyio.get_cancelled_exc_class():
                raise ConnectionAbortedError("query cancelled") from None

    with pytest.raises(LockLostError) as info:
        await lead()
    assert isinstance(info.value.__cause__, ConnectionAbortedError)


REPLICA_APP = """
from collections.abc import AsyncIterator

import anyio

from lifespan_kit import Registry
from lifespan_kit.replicas import Locks, StepOutcome, Timing, leadership, run_once

registry = Registry()
TIMING = Timing(lease=0.6, renew_deadline=0.4, retry=0.05)
led: list[int] = []


class Unreachable(Locks):
    description = "a lock server that tests must never reach"


@registry.resource
async def locks() -> AsyncIterator[Locks]:
    raise ConnectionRefusedError("tests must replace the lock backend")
    yield Unreachable()


@registry.resource
async def schema(locks: Locks) -> StepOutcome:
    async def migrate() -> None:
        pass

    return await run_once(locks, "migrations", migrate, version="1", timing=TIMING)


@registry.background
async def scheduler(locks: Locks) -> None:
    async with leadership(locks, "scheduler", timing=TIMING) as term:
        led.append(term.token)
        await anyio.sleep_forever()
"""


def test_the_pytest_plugin_runs_steps_and_leaders_on_in_process_locks(
    pytester: pytest.Pytester,
) -> None:
    """A conftest swaps the backend for MemoryLocks; fixtures work as in the app."""
    pytester.makepyfile(
        replica_app=REPLICA_APP,
        conftest="""
        from lifespan_kit.replicas import MemoryLocks
        from replica_app import registry

        lifespan_kit_registry = registry.override(locks=MemoryLocks())
        """,
        test_replica="""
        import anyio
        import pytest

        from replica_app import led

        pytestmark = pytest.mark.anyio


        @pytest.fixture
        def anyio_backend():
            return "asyncio"


        async def test_the_step_ran(schema):
            assert (schema.key, schema.ran) == ("migrations", True)


        async def test_the_leader_leads(scheduler, locks):
            with anyio.fail_after(5):
                while not led:
                    await anyio.sleep(0.01)
            assert await locks.holder_of("scheduler") is not None
        """,
    )
    pytester.makeini("[pytest]\npythonpath = .\n")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "anyio", "-p", "no:asyncio", "-p", "no:randomly"
    )
    result.assert_outcomes(passed=2)


class Blinking(MemoryLocks):
    """In-process locks that cannot be reached for their first `outages` calls."""

    def __init__(self, outages: int) -> None:
        super().__init__()
        self.outages = outages

    async def try_acquire(
        self, key: str, *, holder: str, timing: Timing
    ) -> Lease | None:
        if self.outages:
            self.outages -= 1
            raise ConnectionRefusedError("the server restarts")
        return await super().try_acquire(key, holder=holder, timing=timing)


async def test_a_backend_blip_while_waiting_is_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A standby that cannot reach the backend logs it and tries again."""
    locks = Blinking(outages=2)
    async with leadership(locks, "report", timing=FAST, holder="me") as term:
        assert term.token == 1
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2
    assert warnings[0].getMessage() == (
        "Cannot reach in-process locks to take the lock 'report'; trying again "
        "in 0.05s: the server restarts"
    )


async def test_a_start_that_times_out_on_an_unreachable_backend_says_so() -> None:
    """The StartTimeoutError names the lock, and why it could not be taken."""
    registry = Registry()
    registry.add("locks", Blinking(outages=1000))

    @registry.resource(start_timeout=0.2)
    async def schema(locks: Locks) -> StepOutcome:
        async def migrate() -> None:
            raise AssertionError("never runs")  # pragma: no cover

        return await run_once(locks, "migrations", migrate, timing=FAST)

    with pytest.raises(StartTimeoutError) as info:
        async with registry.lifespan():
            pass  # pragma: no cover
    assert info.value.waiting_for == (
        "the lock 'migrations' on in-process locks, unreachable "
        "(ConnectionRefusedError: the server restarts)"
    )


def test_in_process_locks_outside_tests_warn(monkeypatch: pytest.MonkeyPatch) -> None:
    """In an application, MemoryLocks would let every replica lead: it says so."""
    monkeypatch.delitem(sys.modules, "pytest")
    with pytest.warns(LifespanKitWarning, match="every replica of a deployment"):
        MemoryLocks()


class Misconfigured(MemoryLocks):
    """In-process locks that fail as a backend behind a pooling proxy does."""

    async def try_acquire(
        self, key: str, *, holder: str, timing: Timing
    ) -> Lease | None:
        raise LockUnavailableError(
            self.description,
            reason="a session's advisory lock does not hold through this connection",
            remedy="connect the locks to PostgreSQL directly.",
            lasting=True,
        )


async def test_a_lasting_backend_error_is_raised_at_once() -> None:
    """Trying again cannot help: the replica fails instead of waiting forever."""
    with anyio.fail_after(FAST.retry / 2), pytest.raises(LockUnavailableError):
        async with leadership(Misconfigured(), "report", timing=FAST):
            raise AssertionError("never leads")  # pragma: no cover


async def test_a_lease_records_its_step_once() -> None:
    """Done.count counts the leases that finished a step, as every backend does."""
    locks = MemoryLocks()
    lease = await locks.try_acquire("k", holder="a", timing=FAST)
    assert lease is not None
    await lease.mark_done("1")
    await lease.mark_done("2")
    assert await locks.last_done("k") == Done("2", 1, frozenset({"1", "2"}))


async def test_an_older_release_restarted_after_a_newer_one_skips_its_step() -> None:
    """During a rollout, a restarted replica of the old version does not migrate."""
    locks = MemoryLocks()
    steps: list[str] = []
    for release in ("42", "43", "42", "43"):
        registry = replica_registry(locks, release, steps=steps, version=release)
        async with registry.lifespan():
            pass
    assert steps == ["42", "43"]
    assert await locks.last_done("migrations") == Done("43", 2, frozenset({"42", "43"}))


async def test_a_key_taken_twice_by_one_holder_is_refused_not_a_deadlock() -> None:
    """Nested, or run_once inside leadership: it would wait for itself."""
    locks = MemoryLocks()

    async def step() -> None:
        raise AssertionError("never runs")  # pragma: no cover

    async with leadership(locks, "report", timing=FAST, holder="me"):
        with pytest.raises(InvalidOptionError, match="would wait for itself"):
            await run_once(locks, "report", step, timing=FAST, holder="me")
        with pytest.raises(InvalidOptionError, match="already taken or awaited by me"):
            async with leadership(locks, "report", timing=FAST, holder="me"):
                pass  # pragma: no cover
    async with leadership(locks, "report", timing=FAST, holder="me"):
        pass  # released: the key is free for this holder again


async def test_a_step_cut_short_by_its_start_timeout_says_so() -> None:
    """The replica running the step learns that its own run was cut short."""
    registry = Registry()
    registry.add("locks", MemoryLocks())

    @registry.resource(start_timeout=0.2)
    async def schema(locks: Locks) -> StepOutcome:
        return await run_once(locks, "migrations", anyio.sleep_forever, timing=FAST)

    with pytest.raises(StartTimeoutError) as info:
        async with registry.lifespan():
            pass  # pragma: no cover
    assert info.value.waiting_for == "its own run of the step 'migrations', cut short"


@pytest.mark.parametrize("module", ["postgres", "redis"])
def test_a_backend_for_asyncio_says_so_on_trio(module: str) -> None:
    """asyncpg and redis-py run on asyncio only: a clear error, not a driver's."""
    backend = importlib.import_module(f"lifespan_kit.{module}")
    locks: Locks = (
        backend.PostgresLocks("postgresql://app@127.0.0.1:1/app")
        if module == "postgres"
        else backend.RedisLocks("redis://127.0.0.1:1/0")
    )

    async def enter() -> None:
        async with locks:  # type: ignore[attr-defined]  # both are context managers
            raise AssertionError("never entered")  # pragma: no cover

    with pytest.raises(LockUnavailableError) as info:
        anyio.run(enter, backend="trio")
    assert info.value.lasting
    assert "runs on asyncio only" in info.value.reason
    assert "MemoryLocks()" in str(info.value)
