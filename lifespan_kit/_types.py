"""Private aliases and protocols shared by the core modules."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Literal, Protocol, TypeVar

ValueT = TypeVar("ValueT")
ValueT_co = TypeVar("ValueT_co", covariant=True)

FactoryKind = Literal[
    "async_generator",
    "coroutine",
    "generator",
    "callable",
    "value",
    "background",
]
"""How a resource's factory is run; "callable" may return an async context manager,
and "background" runs an async function in its own task until the teardown."""

HealthCheck = Callable[[ValueT], Awaitable[object] | object]
"""A resource's health check: it receives the value and fails by raising or by
returning ``False``."""

SyncExit = Callable[[], object]
"""Leave what a synchronous factory opened: a context manager's ``__exit__`` or a
generator's last step."""


class AsyncContextManagerLike(Protocol[ValueT_co]):
    """Anything usable with ``async with`` (what `httpx.AsyncClient()` returns)."""

    async def __aenter__(self) -> ValueT_co: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> bool | None: ...


class ContextManagerLike(Protocol[ValueT_co]):
    """Anything usable with ``with`` (what `contextlib.contextmanager` makes)."""

    def __enter__(self) -> ValueT_co: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> bool | None: ...
