"""Types of the worker API: `lifespan_kit.run`, background tasks and the CLI.

Checked by mypy and pyright in strict mode; never executed. Each
``# type: ignore[...]`` marks a call the API must reject; both checkers flag
an ignore that is no longer needed.
"""

# pyright: reportUnnecessaryTypeIgnoreComment=true

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn

import anyio
from typing_extensions import assert_type

import lifespan_kit
import lifespan_kit.cli
from lifespan_kit import (
    Bundle,
    EventKind,
    Lifespan,
    Registry,
    Resource,
    ResourceEvent,
    ResourceMap,
)
from lifespan_kit._settings import Timeouts
from lifespan_kit.errors import (
    BackgroundTaskError,
    DefinitionError,
    InvalidMainError,
    ResourceFailedError,
    StopTimeoutError,
)

registry = Registry()


class Queue:
    async def get(self) -> str:
        return "job"


class Resources(Bundle):
    queue: Queue


async def main(resources: Resources) -> None:
    assert_type(resources.queue, Queue)


async def main_without_resources() -> None: ...


async def main_with_every_resource(resources: ResourceMap) -> None: ...


async def main_forever(resources: Resources) -> NoReturn:
    await anyio.sleep_forever()
    raise AssertionError


def listen(event: ResourceEvent) -> None: ...


# --- run ---------------------------------------------------------------------

assert_type(lifespan_kit.run(main, registry), int)
assert_type(lifespan_kit.run(main_without_resources, registry), int)
assert_type(lifespan_kit.run(main_with_every_resource, registry), int)
assert_type(lifespan_kit.run(main_forever, registry), int)
assert_type(
    lifespan_kit.run(
        main,
        registry,
        backend="trio",
        shutdown_timeout=5,
        concurrency=1,
        listeners=[listen],
    ),
    int,
)


def sync_main(resources: Resources) -> None: ...


async def main_taking_an_int(resources: int) -> None: ...


async def main_taking_two(resources: Resources, other: int) -> None: ...


lifespan_kit.run(sync_main, registry)  # type: ignore[arg-type]
lifespan_kit.run(main_taking_an_int, registry)  # type: ignore[type-var]
lifespan_kit.run(main_taking_two, registry)  # type: ignore[arg-type]
lifespan_kit.run(main, registry, backend="curio")  # type: ignore[arg-type]
lifespan_kit.run(main, registry, "trio")  # type: ignore[call-arg]

# --- background tasks ------------------------------------------------------------


@registry.background
async def consumer(queue: Queue) -> None:
    await queue.get()


assert_type(consumer, Resource[None])


@registry.background(name="pulse", depends={"q": "queue"}, stop_timeout=2)
async def heartbeat(q: Queue) -> None: ...


assert_type(heartbeat, Resource[None])
decorate = registry.background(stop_timeout=1)
assert_type(decorate(consumer.factory), Resource[None])  # type: ignore[arg-type]


def poll() -> None: ...


registry.background(poll)  # type: ignore[arg-type]


async def watch(lifespan: Lifespan[Resources]) -> None:
    assert_type(await lifespan.wait_failed(), ResourceFailedError)


def read_background_error(error: BackgroundTaskError) -> None:
    assert_type(error.returned, bool)
    assert_type(error.resource_name, str | None)
    runtime: RuntimeError = error
    del runtime


def read_main_error(error: InvalidMainError) -> None:
    assert_type(error.main, str)
    assert_type(error.problem, str)
    assert_type(error.remedy, str)
    definition: DefinitionError = error
    type_error: TypeError = error
    del definition, type_error


def read_stop_timeout(error: StopTimeoutError) -> None:
    assert_type(error.shortened_to, float | None)


failed: EventKind = "failed"
assert_type(registry.defaults, Timeouts)

# --- the command line --------------------------------------------------------------


def command_line(argv: Sequence[str]) -> None:
    assert_type(lifespan_kit.cli.main(argv), int)
    assert_type(lifespan_kit.cli.main(), int)
