"""What a deployment-wide lock backend provides, and the timing every backend follows.

A backend (PostgreSQL advisory locks, Redis leases, or the in-process one for
tests) only answers four questions: take this key now if it is free, keep it,
let it go, and what has been recorded as done for it. `lifespan_kit.replicas`
builds run-once steps and leadership on top, the same way for every backend.
"""

from __future__ import annotations

import asyncio
import os
import socket
import weakref
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Final, Literal

from lifespan_kit.errors import InvalidOptionError, LockUnavailableError

__all__ = [
    "Done",
    "Lease",
    "Locks",
    "Standing",
    "Timing",
    "default_holder",
    "record_standing",
    "standings",
]

Role = Literal["contending", "settling", "leading", "stepped down", "lost"]


@dataclass(frozen=True)
class Timing:
    """How long a lock lasts without renewal, and how often it is renewed and retried.

    The model is Kubernetes' leader election: `lease` > `renew_deadline` >
    `retry`. A holder renews every `retry` seconds; if it has not renewed
    for `renew_deadline` seconds it stops what it runs under the lock; a lock
    nobody renewed for `lease` seconds is free for another replica. The gap
    between `renew_deadline` and `lease` is the time a holder has to finish
    stopping before anyone else may start.

    Attributes:
        lease: Seconds a lock stays held without renewal (15).
        renew_deadline: Seconds a holder keeps acting without a renewal (10).
        retry: Seconds between renewals, and between tries to take a busy lock (2).

    Example:
        ```python
        fast = Timing(lease=6, renew_deadline=4, retry=1)
        ```

    Added in 0.1.
    """

    lease: float = 15.0
    renew_deadline: float = 10.0
    retry: float = 2.0

    def __post_init__(self) -> None:
        for option in ("lease", "renew_deadline", "retry"):
            value: object = getattr(self, option)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 < value < float("inf")
            ):
                raise InvalidOptionError(
                    None,
                    option=option,
                    problem=f"{value!r} is not a number of seconds greater than 0",
                    owner="Timing",
                )
        if not self.lease > self.renew_deadline > self.retry:
            raise InvalidOptionError(
                None,
                option="renew_deadline",
                problem=(
                    f"lease={self.lease:g}, renew_deadline={self.renew_deadline:g} "
                    f"and retry={self.retry:g} are not in decreasing order"
                ),
                remedy=(
                    "keep lease > renew_deadline > retry, for example "
                    "Timing(lease=15, renew_deadline=10, retry=2): the holder must "
                    "stop before its lease runs out, and renew several times before."
                ),
                owner="Timing",
            )


@dataclass(frozen=True)
class Done:
    """What a backend recorded for a key when a step under it finished.

    Attributes:
        version: The version the last run was for, or None.
        count: How many runs finished (leases that recorded a step), over
            the key's whole history.
        versions: Every version a run was recorded for: a replica of an
            older release, restarted after a newer one migrated, finds its
            version there and does not run its step again.

    Example:
        ```python
        done = await locks.last_done("migrations")
        if done is not None:
            print(f"schema {done.version}, migrated {done.count} times")
        ```

    Added in 0.1.
    """

    version: str | None
    count: int
    versions: frozenset[str] = frozenset()


class Lease(ABC):
    """A lock this process holds on one key, until it is released or lost.

    Attributes:
        key: The key it locks.
        holder: Who holds it (host and process, unless given).
        token: The fencing token: greater than every token handed out for this
            key before, so a store that remembers the greatest token it saw can
            refuse writes from a holder that lost the lock without knowing it.

    Example:
        ```python
        lease = await locks.try_acquire("report", holder="pod-a", timing=Timing())
        if lease is not None:
            try:
                await lease.renew()
                await lease.mark_done(None)
            finally:
                await lease.release()
        ```

    Added in 0.1.
    """

    def __init__(self, key: str, holder: str, token: int) -> None:
        self.key: str = key
        self.holder: str = holder
        self.token: int = token

    @abstractmethod
    async def renew(self) -> None:
        """Confirm the lock is still held and extend it by the lease.

        Raises:
            LockLostError: When the lock is no longer held, or the backend
                cannot confirm it.
        """

    @abstractmethod
    async def mark_done(self, version: str | None) -> None:
        """Record that the step under this key finished, for `version`.

        Once per lease: `Done.count` counts the leases that finished a step.

        Raises:
            LockLostError: When the lock is no longer held; nothing is recorded.
        """

    @abstractmethod
    async def release(self) -> None:
        """Let the lock go, if this holder still has it; never frees another's."""


class Locks(ABC):
    """A deployment-wide lock backend: PostgreSQL, Redis, or in-process for tests.

    Declare one as a resource and pass it to
    [run_once][lifespan_kit.replicas.run_once] and
    [leadership][lifespan_kit.replicas.leadership].

    Attributes:
        description: What the backend is and where, for messages.
        enforces_lease: True when the backend itself frees a lock that was not
            renewed for `Timing.lease` (Redis). When it frees a lock at once
            instead (PostgreSQL frees an advisory lock as soon as its
            connection ends), a new leader waits `Timing.lease` before it
            starts, which is the time the old one has to notice and stop.

    Example:
        ```python
        @registry.resource(health=Locks.check)
        async def locks(settings: Settings) -> AsyncIterator[Locks]:
            async with PostgresLocks(settings.database_url) as locks:
                yield locks
        ```

    Added in 0.1.
    """

    description: str = "locks"
    enforces_lease: bool = True

    @abstractmethod
    async def try_acquire(
        self, key: str, *, holder: str, timing: Timing
    ) -> Lease | None:
        """Take the lock on `key` if it is free, without waiting.

        Returns:
            The lease, or None when another holder has the lock.

        Raises:
            LockUnavailableError: When the backend cannot answer (a replica
                that waits tries again, unless the error is `lasting`).
        """

    @abstractmethod
    async def holder_of(self, key: str) -> str | None:
        """Return who holds `key` now, or None when it is free (or unknown).

        Raises:
            LockUnavailableError: When the backend cannot answer.
        """

    @abstractmethod
    async def last_done(self, key: str) -> Done | None:
        """Return what was recorded by the last finished step on `key`, if any."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise when the backend cannot be reached."""

    async def check(self) -> str:
        """Check the backend, and say where this process stands on each key.

        Use it as the lock resource's health check: it fails when the backend
        is unreachable, and its text (in the health report and on `/readyz`)
        tells which replica leads what.

        Example:
            ```python
            @registry.resource(health=Locks.check)
            async def locks(settings: Settings) -> AsyncIterator[Locks]:
                async with PostgresLocks(settings.database_url) as locks:
                    yield locks
            ```

        Added in 0.1.
        """
        await self.ping()
        known = standings(self)
        if not known:
            return f"{self.description}: no lock taken or awaited"
        roles = "; ".join(known[key].describe() for key in sorted(known))
        return f"{self.description}: {roles}"


def require_asyncio(backend: str, driver: str) -> None:
    """Refuse to run a backend whose driver runs on asyncio only, elsewhere."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise LockUnavailableError(
            backend,
            reason=(
                f"its driver, {driver}, runs on asyncio only, and this event loop "
                "is not asyncio's (trio?)"
            ),
            remedy=(
                "run the application on asyncio (lifespan_kit.run's default "
                "backend); tests that run on trio can override the locks with "
                "MemoryLocks()."
            ),
            lasting=True,
        ) from None


def default_holder() -> str:
    """Name this process as a holder: the host name (a pod's name) and the pid."""
    return f"{socket.gethostname()} pid {os.getpid()}"


@dataclass(frozen=True)
class Standing:
    """Where this process stands on one key, as health checks report it.

    Attributes:
        key: The lock's key.
        role: "contending" (another replica leads, or nobody yet), "settling"
            (took the lock, waits out the previous holder's lease), "leading",
            "stepped down" (left cleanly) or "lost".
        holder: This replica.
        leader: The replica seen holding the lock while this one contends.
        token: The fencing token while this replica holds the lock.

    Example:
        ```python
        leading = [s.key for s in standings(locks).values() if s.role == "leading"]
        ```

    Added in 0.1.
    """

    key: str
    role: Role
    holder: str
    leader: str | None = None
    token: int | None = None

    def describe(self) -> str:
        """Say it in one phrase, for health reports and the live display."""
        if self.role == "contending":
            seen = f" (leader: {self.leader})" if self.leader else ""
            return f"standby for '{self.key}'{seen}"
        if self.role in ("settling", "leading"):
            return f"{self.role} '{self.key}' (token {self.token})"
        return f"{self.role} '{self.key}'"


_STANDINGS: Final[weakref.WeakKeyDictionary[Locks, dict[str, Standing]]] = (
    weakref.WeakKeyDictionary()
)


def standings(locks: Locks) -> dict[str, Standing]:
    """Return where this process stands on each key it leads or contends for.

    Example:
        ```python
        for standing in standings(locks).values():
            print(standing.describe())
        ```

    Added in 0.1.
    """
    return dict(_STANDINGS.get(locks, {}))


def record_standing(locks: Locks, standing: Standing) -> bool:
    """Record where this process stands on a key; return False if it is unchanged."""
    known = _STANDINGS.setdefault(locks, {})
    if known.get(standing.key) == standing:
        return False
    known[standing.key] = standing
    return True
