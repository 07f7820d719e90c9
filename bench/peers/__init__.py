"""One module per library that users compare lifespan_kit with.

Each module declares the workloads' resources the way that library's own
documentation shows and exposes them as ``ADAPTERS``, a list of
``common.Adapter``. These libraries are installed only in the benchmark's own
environment (``bench/requirements-peers.txt``), never with lifespan_kit.
"""

MODULES = (
    "dishka",
    "svcs",
    "that_depends",
    "dependency_injector",
    "wireup",
    "aiomisc",
    "fastapi_lifespan_manager",
)
