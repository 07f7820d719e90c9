"""Typed factories for the libraries that find dependencies by annotation.

dishka and wireup read a factory's parameters and return type to wire the
graph. A benchmark graph has hundreds of resources, so its factories are made
in a loop; this gives each one the signature a hand-written factory would have.
"""

import inspect
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from common import Graph


def typed_factory(
    graph: Graph, index: int, types: Sequence[type]
) -> Callable[..., AsyncIterator[Any]]:
    """Return an async generator factory for resource `index`.

    Its parameters are annotated with the dependencies' types and its return
    type is ``AsyncIterator[type of index]``.
    """
    hooks = graph.hooks
    produced = types[index]
    if hooks is None:

        async def factory(**dependencies: object) -> AsyncIterator[Any]:
            yield produced()

    else:

        async def factory(**dependencies: object) -> AsyncIterator[Any]:
            await hooks.start(index)
            yield produced()
            await hooks.stop(index)

    parameters = [
        inspect.Parameter(f"d{k}", inspect.Parameter.KEYWORD_ONLY, annotation=types[d])
        for k, d in enumerate(graph.dependencies[index])
    ]
    returns = AsyncIterator[produced]  # type: ignore[valid-type]
    factory.__signature__ = inspect.Signature(parameters, return_annotation=returns)  # type: ignore[attr-defined]
    factory.__annotations__ = {p.name: p.annotation for p in parameters}
    factory.__annotations__["return"] = returns
    factory.__name__ = factory.__qualname__ = f"make_{graph.names[index]}"
    return factory
