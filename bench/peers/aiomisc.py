"""aiomisc: one ``Service`` per resource, run by an ``entrypoint``.

As its docs show: ``Service`` subclasses with ``async def start()`` and
``async def stop(exception)``, run with ``async with aiomisc.entrypoint(...)``.
The entrypoint starts every service at once; a service waits for what it
needs through the entrypoint's ``Context`` (``await self.context[name]``,
which returns once another service set that name), as aiomisc's docs show for
sharing objects between services. The entrypoint stops every service at once:
aiomisc has no teardown order. No FastAPI integration (W3: n/a).
"""

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiomisc
from common import Adapter, Enter, Graph


class Node(aiomisc.Service):
    """A resource of the graph: waits for its dependencies, then starts."""

    index: int
    name: str
    dependencies: tuple[str, ...]
    graph: Graph

    async def start(self) -> Any:
        for dependency in self.dependencies:
            await self.context[dependency]
        if self.graph.hooks is not None:
            await self.graph.hooks.start(self.index)
        self.context[self.name] = self.index

    async def stop(self, exception: Exception | None = None) -> Any:
        if self.graph.hooks is not None:
            await self.graph.hooks.stop(self.index)


def build(graph: Graph, backend: str) -> Enter:
    def entrypoint() -> AbstractAsyncContextManager[object]:
        services = [
            Node(
                index=index,
                name=name,
                dependencies=tuple(graph.names[d] for d in graph.dependencies[index]),
                graph=graph,
            )
            for index, name in enumerate(graph.names)
        ]
        # log_config=False: leave the process's logging as it is.
        return aiomisc.entrypoint(*services, log_config=False)

    run: Callable[[], AbstractAsyncContextManager[object]] = entrypoint
    return run


ADAPTERS = [
    Adapter(
        label="aiomisc",
        distribution="aiomisc",
        backends=("asyncio",),
        build=build,
        fastapi_app=None,
        notes=(
            "starts every service at once (a service waits for its dependencies "
            "through the entrypoint's Context) and stops every service at once: "
            "no teardown order, so dependents and their dependencies stop "
            "together (the W1 violations). Each run makes its Service objects and "
            "entrypoint before the clock starts. asyncio only; no FastAPI "
            "integration.",
        ),
    )
]
