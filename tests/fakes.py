"""Fake resources that record what happens to them, in order, into a list."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio


class Recorder:
    """Collects events such as "start db" and the task each one ran in."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.tasks: dict[str, list[int]] = {}

    def record(self, event: str, name: str) -> None:
        self.events.append(f"{event} {name}")
        self.tasks.setdefault(name, []).append(anyio.get_current_task().id)

    def generator(
        self,
        name: str,
        *,
        value: object = None,
        delay: float = 0.0,
        fail_start: BaseException | None = None,
        fail_stop: BaseException | None = None,
        stop_delay: float = 0.0,
    ) -> Callable[..., AsyncIterator[object]]:
        """Return an async generator factory that records its start and stop."""

        async def factory(**_: Any) -> AsyncIterator[object]:
            self.record("start", name)
            if delay:
                await anyio.sleep(delay)
            if fail_start is not None:
                raise fail_start
            yield name if value is None else value
            self.record("stop", name)
            if stop_delay:
                await anyio.sleep(stop_delay)
            if fail_stop is not None:
                raise fail_stop

        factory.__name__ = name
        return factory
