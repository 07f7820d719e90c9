"""fastapi-lifespan-manager: one lifespan function per resource.

As its docs show: ``LifespanManager()``, ``@manager.add`` on async generator
functions that take the app and yield a state mapping, and
``FastAPI(lifespan=manager)``. The manager enters the lifespans one at a time
in the order they were added (here the topological order: it has no
dependency graph of its own) and leaves them in reverse. W3: the endpoint
reads the state from ``request.state``, the only way it offers.
"""

from collections.abc import AsyncIterator, Callable
from typing import Any

from common import (
    W3_PATH,
    Adapter,
    AppSettings,
    Cache,
    Database,
    Enter,
    Graph,
    item_body,
)
from fastapi import FastAPI, Request
from fastapi_lifespan_manager import LifespanManager, State


def _lifespan(graph: Graph, index: int) -> Callable[[Any], AsyncIterator[State]]:
    hooks = graph.hooks
    name = graph.names[index]
    if hooks is None:

        async def noop(app: FastAPI) -> AsyncIterator[State]:
            yield {name: index}

        return noop

    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        await hooks.start(index)
        yield {name: index}
        await hooks.stop(index)

    return lifespan


def build(graph: Graph, backend: str) -> Enter:
    manager = LifespanManager()
    for index in range(len(graph.names)):
        manager.add(_lifespan(graph, index))
    app = FastAPI(lifespan=manager)
    return lambda: manager(app)


def fastapi_app(backend: str) -> FastAPI:
    manager = LifespanManager()

    @manager.add
    async def settings(app: FastAPI) -> AsyncIterator[State]:
        yield {"settings": AppSettings()}

    @manager.add
    async def database(app: FastAPI, state: State) -> AsyncIterator[State]:
        yield {"database": Database(state["settings"])}

    @manager.add
    async def cache(app: FastAPI, state: State) -> AsyncIterator[State]:
        yield {"cache": Cache(state["settings"])}

    app = FastAPI(lifespan=manager)

    @app.get(W3_PATH)
    async def item(request: Request) -> dict[str, str]:
        return item_body(request.state.database, request.state.cache)

    return app


ADAPTERS = [
    Adapter(
        label="fastapi-lifespan-manager",
        distribution="fastapi-lifespan-manager",
        backends=("asyncio", "trio"),
        build=build,
        fastapi_app=fastapi_app,
        notes=(
            "no dependency graph: lifespans run one at a time in the order added "
            "(here the topological order) and stop in reverse; nothing to "
            "validate. W3 reads request.state, as its docs do, so it measures "
            "the same as the baseline.",
        ),
    )
]
