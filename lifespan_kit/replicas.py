"""Many replicas: steps that run once per deployment, work that one replica leads.

Declare a lock backend as a resource (`lifespan_kit.postgres.PostgresLocks`,
`lifespan_kit.redis.RedisLocks`, or [MemoryLocks][lifespan_kit.replicas.MemoryLocks]
in tests), then:

- [run_once][lifespan_kit.replicas.run_once] in a resource runs a step
  (migrations, seeding) on one replica while the others wait for it;
- [leadership][lifespan_kit.replicas.leadership] in a background task runs
  its body on one replica at a time, and cancels it when the lock is lost
  before any other replica can take over.

Example:
    ```python
    @registry.resource
    async def locks(settings: Settings) -> AsyncIterator[Locks]:
        async with PostgresLocks(settings.database_url) as locks:
            yield locks


    @registry.resource
    async def schema(locks: Locks, db: Database) -> StepOutcome:
        return await run_once(locks, "migrations", db.migrate, version="42")


    @registry.background
    async def scheduler(locks: Locks, db: Database) -> None:
        async with leadership(locks, "scheduler") as term:
            while True:
                await db.run_due_jobs(fencing_token=term.token)
                await anyio.sleep(60)
    ```
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Final, cast

import anyio
import anyio.lowlevel

from lifespan_kit._locks import (
    Done,
    Lease,
    Locks,
    Role,
    Standing,
    Timing,
    default_holder,
    record_standing,
    standings,
)
from lifespan_kit._status import report_status, waiting_for
from lifespan_kit.errors import (
    InvalidOptionError,
    LifespanKitWarning,
    LockLostError,
    LockUnavailableError,
)

__all__ = [
    "Done",
    "Lease",
    "Locks",
    "MemoryLocks",
    "Standing",
    "StepOutcome",
    "Term",
    "Timing",
    "leadership",
    "run_once",
    "standings",
]

logger: Final = logging.getLogger("lifespan_kit.replicas")


@dataclass(frozen=True)
class StepOutcome:
    """What [run_once][lifespan_kit.replicas.run_once] did on this replica.

    Attributes:
        key: The step's key.
        ran: True when this replica ran the step; False when it was already
            done (for this version, or by a replica that held the lock while
            this one waited).
        version: The version asked for.
        waited: Seconds spent waiting for the lock.
        token: The lock's fencing token when this replica ran the step.

    Example:
        ```python
        @registry.resource
        async def schema(locks: Locks, db: Database) -> StepOutcome:
            outcome = await run_once(locks, "migrations", db.migrate, version="42")
            if outcome.ran:
                print(f"migrated after waiting {outcome.waited:.1f}s")
            return outcome
        ```

    Added in 0.1.
    """

    key: str
    ran: bool
    version: str | None
    waited: float
    token: int | None = None


@dataclass(frozen=True)
class Term:
    """This replica's leadership of a key, as given to the body it leads.

    Attributes:
        key: The lock's key.
        holder: This replica, as it holds the lock.
        token: The fencing token: pass it along with writes that must be
            refused once a newer leader exists.
        since: Wall-clock time (`time.time()`) when this replica began leading.

    Example:
        ```python
        @registry.background
        async def scheduler(locks: Locks, db: Database) -> None:
            async with leadership(locks, "scheduler") as term:
                print(f"{term.holder} leads '{term.key}' with token {term.token}")
                while True:
                    await db.run_due_jobs(fencing_token=term.token)
                    await anyio.sleep(60)
        ```

    Added in 0.1.
    """

    key: str
    holder: str
    token: int
    since: float


def _stand(locks: Locks, standing: Standing) -> None:
    if not record_standing(locks, standing):
        return
    logger.info(
        "%s on %s",
        standing.describe(),
        locks.description,
        extra={
            "lifespan_kit_lock_key": standing.key,
            "lifespan_kit_lock_role": standing.role,
            "lifespan_kit_lock_holder": standing.holder,
            "lifespan_kit_lock_leader": standing.leader,
            "lifespan_kit_lock_token": standing.token,
        },
    )
    report_status(standing.describe())


def _check_key(key: object, function: str) -> str:
    if (
        not isinstance(key, str)
        or not key
        or len(key) > 200
        or any(ord(c) < 32 or ord(c) == 127 for c in key)
    ):
        raise InvalidOptionError(
            None,
            option="key",
            problem=(
                f"{key!r} is not a non-empty string of at most 200 characters "
                "without control characters"
            ),
            remedy="name the step or the work, for example 'migrations'.",
            owner=function,
        )
    return key


_IN_USE: Final[weakref.WeakKeyDictionary[Locks, set[tuple[str, str]]]] = (
    weakref.WeakKeyDictionary()
)


@contextmanager
def _using(
    locks: Locks, key: str, holder: str, function: str
) -> Generator[None, None, None]:
    """Refuse a key this holder already takes or awaits: it would wait for itself."""
    in_use = _IN_USE.setdefault(locks, set())
    if (key, holder) in in_use:
        raise InvalidOptionError(
            None,
            option="key",
            problem=(
                f"'{key}' is already taken or awaited by {holder}, in this process, "
                "so this call would wait for itself"
            ),
            remedy=(
                "give each step and each leader-only task a key of its own; two "
                "tasks that must not run together belong in one leadership block."
            ),
            owner=function,
        )
    in_use.add((key, holder))
    try:
        yield
    finally:
        in_use.discard((key, holder))


class _Watch:
    """Renews a lease while code runs under it; cancels that code once it lapses.

    The code runs in `scope`, whose deadline is `renew_deadline` after the
    last renewal was sent: even a renewal that never answers cannot let it
    run past that point, which comes before the lease expires.
    """

    def __init__(self, locks: Locks, lease: Lease, timing: Timing, sent: float) -> None:
        self.locks = locks
        self.lease = lease
        self.timing = timing
        self.scope = anyio.CancelScope(deadline=sent + timing.renew_deadline)
        self.lost: LockLostError | None = None

    def _lose(self, reason: str) -> None:
        self.lost = LockLostError(
            self.lease.key,
            backend=self.locks.description,
            holder=self.lease.holder,
            reason=reason,
        )
        self.scope.cancel()

    async def keep(self) -> None:
        timing = self.timing
        while True:
            await anyio.sleep(timing.retry)
            sent = anyio.current_time()
            # A renewal that never answers needs no timeout here: the scope's
            # deadline stops the code, and then this task is cancelled.
            try:
                await self.lease.renew()
            except LockLostError as exc:
                self._lose(exc.reason)
                return
            except Exception as exc:  # any failure loses the lock
                self._lose(f"renewing failed with {type(exc).__name__}: {exc}")
                return
            # Once the deadline passed, the scope stays cancelled: no renewal
            # arriving late can revive it.
            self.scope.deadline = sent + timing.renew_deadline

    def failure(self) -> LockLostError | None:
        """Return why the code was cancelled, if the lock lapsed."""
        if self.lost is None and self.scope.cancelled_caught:
            self._lose(
                f"not renewed within renew_deadline={self.timing.renew_deadline:g}s"
            )
        return self.lost


@asynccontextmanager
async def _held(
    locks: Locks, lease: Lease, timing: Timing, sent: float
) -> AsyncGenerator[_Watch, None]:
    """Keep `lease` renewed around the block; raise LockLostError if it lapsed."""
    watch = _Watch(locks, lease, timing, sent)
    failure: Exception | None = None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch.keep, name=f"lifespan_kit lock '{lease.key}' renewal")
            try:
                with watch.scope:
                    yield watch
            except Exception as exc:  # raised again below, outside the task group
                failure = exc
            finally:
                tg.cancel_scope.cancel()
        lost = watch.failure()
        if lost is not None:
            # What the block raised while it was being cancelled is a consequence.
            raise lost from failure
        if failure is not None:
            raise failure
    finally:
        with anyio.move_on_after(timing.retry, shield=True):
            await lease.release()


async def _take(
    locks: Locks, key: str, holder: str, timing: Timing, *, contend: bool
) -> tuple[Lease, float, str | None]:
    """Wait for the lock on `key`, trying every `timing.retry` seconds.

    Returns the lease, the time its request was sent, and the holder seen
    while waiting (None if it was free at once).
    """
    seen: str | None = None
    while True:
        sent = anyio.current_time()
        try:
            lease = await locks.try_acquire(key, holder=holder, timing=timing)
            if lease is not None:
                return lease, sent, seen
            seen = await locks.holder_of(key) or seen
            waiting = f"held by {seen or 'another replica'}"
        except ConnectionError as exc:
            if isinstance(exc, LockUnavailableError) and exc.lasting:
                raise
            # A blip of the backend: a replica that waits tries again, as
            # Kubernetes' leader election does; Locks.check reports it meanwhile.
            waiting = f"unreachable ({type(exc).__name__}: {exc})"
            logger.warning(
                "Cannot reach %s to take the lock '%s'; trying again in %gs: %s",
                locks.description,
                key,
                timing.retry,
                exc,
                extra={"lifespan_kit_lock_key": key},
            )
        if contend:
            _stand(locks, Standing(key, "contending", holder, leader=seen))
        with waiting_for(f"the lock '{key}' on {locks.description}, {waiting}"):
            await anyio.sleep(timing.retry)


async def run_once(
    locks: Locks,
    key: str,
    step: Callable[[], Awaitable[object]],
    *,
    version: str | None = None,
    timing: Timing | None = None,
    holder: str | None = None,
) -> StepOutcome:
    """Run `step` on one replica; the others wait until it is done, then go on.

    Call it from a resource, so that the resources that depend on it start
    after the step. With a `version`, a step already done for that version
    is skipped without taking the lock, so a restart costs one read; a
    version ever recorded counts, so a replica of an older release restarted
    after a newer one ran its step does not run its own again. Without
    one, the step runs once per wave of replicas starting together: a replica
    that waited while another ran it skips it.

    The lock is held across the step and renewed while it runs; a replica that
    dies mid-step frees it (at once on PostgreSQL, after the lease on Redis)
    and the next replica runs the step again, so make the step transactional
    or idempotent. Waiting counts against the resource's `start_timeout`,
    whose error then names the lock and its holder.

    Args:
        locks: The lock backend.
        key: Names the step across the deployment.
        step: The async function to run (no arguments).
        version: Skip the step when it is recorded as done for this version.
        timing: Lease, renewal and retry periods (see Timing).
        holder: How this replica is named to others (host and pid by default).

    Returns:
        Whether this replica ran the step.

    Raises:
        LockLostError: The lock lapsed while the step ran; the step was cancelled.
        InvalidOptionError: `key` is not a non-empty string, or `version` is
            neither None nor a string.

    Example:
        ```python
        @registry.resource(start_timeout=300)
        async def schema(locks: Locks, db: Database) -> StepOutcome:
            return await run_once(locks, "migrations", db.migrate, version="42")
        ```

    Added in 0.1.
    """
    _check_key(key, "run_once")
    checked = cast("object", version)  # callers without a type checker
    if checked is not None and not isinstance(checked, str):
        raise InvalidOptionError(
            None,
            option="version",
            problem=f"{version!r} is not a string",
            remedy="pass the version as text, for example version='42'.",
            owner="run_once",
        )
    timing = timing or Timing()
    holder = holder or default_holder()
    before = await locks.last_done(key)
    runs_before = before.count if before else 0
    if _is_done(before, version, runs_before=runs_before):
        return StepOutcome(key, ran=False, version=version, waited=0.0)
    with _using(locks, key, holder, "run_once"):
        return await _run_step(locks, key, step, version, timing, holder, runs_before)


async def _run_step(
    locks: Locks,
    key: str,
    step: Callable[[], Awaitable[object]],
    version: str | None,
    timing: Timing,
    holder: str,
    runs_before: int,
) -> StepOutcome:
    """Take the lock, then run the step unless another replica did meanwhile."""
    began = anyio.current_time()
    lease, sent, _ = await _take(locks, key, holder, timing, contend=False)
    waited = anyio.current_time() - began
    async with _held(locks, lease, timing, sent):
        if _is_done(await locks.last_done(key), version, runs_before=runs_before):
            return StepOutcome(key, ran=False, version=version, waited=waited)
        if not locks.enforces_lease:
            # The server frees a lock when its connection ends, which a holder
            # cut off mid-step notices only at its next renewal: give it its lease.
            await anyio.sleep(timing.lease)
        logger.info("running step '%s' on %s", key, locks.description)
        with waiting_for(f"its own run of the step '{key}', cut short"):
            await step()
        await lease.mark_done(version)
    return StepOutcome(key, ran=True, version=version, waited=waited, token=lease.token)


def _is_done(done: Done | None, version: str | None, *, runs_before: int) -> bool:
    """Tell whether the step is done for `version`, or was run since `runs_before`."""
    if done is None:
        return False
    if version is not None and version in done.versions:
        return True
    return done.count > runs_before


@asynccontextmanager
async def leadership(
    locks: Locks,
    key: str,
    *,
    timing: Timing | None = None,
    holder: str | None = None,
) -> AsyncGenerator[Term, None]:
    """Wait until this replica leads `key`, then run the block while it does.

    Use it in a background task: every replica runs the task, one leads and
    the others wait, trying every `retry` seconds. The lock is renewed every
    `retry` seconds while the block runs; if it cannot be renewed within
    `renew_deadline`, the block is cancelled and `LockLostError` is raised,
    which makes the background task fail (the app's runtime-failure policy
    applies), all before the lease ends and another replica may lead. When
    the block ends (or the lifespan stops), the lock is released and another
    replica takes over within `retry` seconds (plus `lease` on PostgreSQL).

    Args:
        locks: The lock backend.
        key: Names the work across the deployment.
        timing: Lease, renewal and retry periods (see Timing).
        holder: How this replica is named to others (host and pid by default).

    Yields:
        This replica's term: its fencing token and since when it leads.

    Raises:
        LockLostError: The lock lapsed; the block was cancelled.
        InvalidOptionError: `key` is not a non-empty string.

    Example:
        ```python
        @registry.background
        async def scheduler(locks: Locks, db: Database) -> None:
            async with leadership(locks, "scheduler") as term:
                while True:
                    await db.run_due_jobs(fencing_token=term.token)
                    await anyio.sleep(60)
        ```

    Added in 0.1.
    """
    _check_key(key, "leadership")
    timing = timing or Timing()
    holder = holder or default_holder()
    with _using(locks, key, holder, "leadership"):
        _stand(locks, Standing(key, "contending", holder))
        lease, sent, _ = await _take(locks, key, holder, timing, contend=True)
        role: Role = "stepped down"
        try:
            async with _held(locks, lease, timing, sent):
                if not locks.enforces_lease:
                    # The server frees a lock as soon as its connection ends,
                    # which can be before the old leader notices: give it its lease.
                    settling = Standing(key, "settling", holder, token=lease.token)
                    _stand(locks, settling)
                    await anyio.sleep(timing.lease)
                _stand(locks, Standing(key, "leading", holder, token=lease.token))
                yield Term(key, holder, lease.token, time.time())
        except LockLostError:
            role = "lost"
            raise
        finally:
            _stand(locks, Standing(key, role, holder))


class _Store:
    """The state of in-process locks: who holds what until when, and what is done."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.held: dict[str, tuple[_MemoryLease, float]] = {}
        self.tokens: dict[str, int] = {}
        self.done: dict[str, Done] = {}

    def holding(self, key: str) -> _MemoryLease | None:
        held = self.held.get(key)
        if held is None:
            return None
        lease, expires = held
        if time.monotonic() >= expires:
            del self.held[key]
            return None
        return lease

    def acquire(self, key: str, holder: str, timing: Timing) -> _MemoryLease | None:
        if self.holding(key) is not None:
            return None
        token = self.tokens[key] = self.tokens.get(key, 0) + 1
        lease = _MemoryLease(self, key, holder, token, timing)
        self.held[key] = (lease, time.monotonic() + timing.lease)
        return lease

    def renew(self, lease: _MemoryLease) -> None:
        if self.holding(lease.key) is not lease:
            raise LockLostError(
                lease.key,
                backend=self.description,
                holder=lease.holder,
                reason="its lease ran out, or another holder took it",
            )
        self.held[lease.key] = (lease, time.monotonic() + lease.timing.lease)

    def mark_done(self, lease: _MemoryLease, version: str | None) -> None:
        self.renew(lease)
        done = self.done.get(lease.key) or Done(None, 0)
        count = done.count if lease.recorded else done.count + 1
        versions = done.versions if version is None else done.versions | {version}
        self.done[lease.key] = Done(version, count, versions)
        lease.recorded = True

    def release(self, lease: _MemoryLease) -> None:
        if self.holding(lease.key) is lease:
            del self.held[lease.key]


class _MemoryLease(Lease):
    def __init__(
        self, store: _Store, key: str, holder: str, token: int, timing: Timing
    ) -> None:
        super().__init__(key, holder, token)
        self.store = store
        self.timing = timing
        self.recorded = False

    async def renew(self) -> None:
        await anyio.lowlevel.checkpoint()
        self.store.renew(self)

    async def mark_done(self, version: str | None) -> None:
        await anyio.lowlevel.checkpoint()
        self.store.mark_done(self, version)

    async def release(self) -> None:
        await anyio.lowlevel.checkpoint()
        self.store.release(self)


class MemoryLocks(Locks):
    """Locks shared by the lifespans of one process: for tests, never for deployments.

    Override the real backend with it (`registry.override(locks=MemoryLocks())`)
    to run leader-only tasks and run-once steps in a test, or share one
    instance between several lifespans to test how they take over from each
    other. Leases expire on the monotonic clock, as Redis leases do. Made
    outside a pytest run, it warns: in a deployment, each replica would have
    its own, and all of them would lead.

    Example:
        ```python
        locks = MemoryLocks()
        async with registry.override(locks=locks).lifespan() as first:
            ...
        ```

    Added in 0.1.
    """

    description = "in-process locks"
    enforces_lease = True

    def __init__(self) -> None:
        if "pytest" not in sys.modules:
            warnings.warn(
                "MemoryLocks coordinates only the lifespans of this process: every "
                "replica of a deployment would run each step and lead each task. "
                "Use PostgresLocks or RedisLocks outside tests.",
                LifespanKitWarning,
                stacklevel=2,
            )
        self._store = _Store(self.description)

    async def try_acquire(
        self, key: str, *, holder: str, timing: Timing
    ) -> Lease | None:
        """Take `key` if nobody holds it or its holder's lease ran out."""
        await anyio.lowlevel.checkpoint()
        return self._store.acquire(key, holder, timing)

    def expire(self, key: str) -> None:
        """End the lease on `key` now, as a holder that stopped renewing would."""
        self._store.held.pop(key, None)

    async def holder_of(self, key: str) -> str | None:
        """Return the holder of `key`, or None."""
        await anyio.lowlevel.checkpoint()
        lease = self._store.holding(key)
        return None if lease is None else lease.holder

    async def last_done(self, key: str) -> Done | None:
        """Return what the last finished step on `key` recorded."""
        await anyio.lowlevel.checkpoint()
        return self._store.done.get(key)

    async def ping(self) -> None:
        """Always reachable."""
        await anyio.lowlevel.checkpoint()
