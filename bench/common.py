"""What the benchmark scripts share: the W1 graph, its checks, the baselines.

``run.py`` (lifespan_kit alone) and ``compare.py`` (lifespan_kit against other
libraries) measure the same graphs against the same hand-written baselines,
which live here: the seeded random DAG of W1 with its critical path and its
order checker, the sequential ``AsyncExitStack`` and the ideal task-group
scheduler, the no-op resources of W2, and the description of the machine.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import os
import platform
import random
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

import anyio

W1_SIZE: Final = 40
W1_MAX_DEPENDENCIES: Final = 3
W1_START_MS: Final = (5.0, 40.0)
W1_TIMEOUT: Final = 60.0  # seconds; a run that takes longer is reported as a hang

Trace = list[tuple[str, int]]
"""Start and stop events in the order they happened: (kind, resource index)."""


# --- W1: the random DAG ----------------------------------------------------------


@dataclass(frozen=True)
class Dag:
    """A random resource graph; dependencies always point to earlier indexes."""

    names: tuple[str, ...]
    dependencies: tuple[tuple[int, ...], ...]
    start: tuple[float, ...]  # seconds
    stop: tuple[float, ...]  # seconds

    @property
    def dependents(self) -> tuple[tuple[int, ...], ...]:
        found: list[list[int]] = [[] for _ in self.names]
        for index, dependencies in enumerate(self.dependencies):
            for dependency in dependencies:
                found[dependency].append(index)
        return tuple(tuple(d) for d in found)


def make_dag(seed: int, size: int = W1_SIZE) -> Dag:
    rng = random.Random(seed)
    dependencies: list[tuple[int, ...]] = []
    start: list[float] = []
    for index in range(size):
        count = rng.randint(0, min(W1_MAX_DEPENDENCIES, index))
        dependencies.append(tuple(sorted(rng.sample(range(index), count))))
        start.append(rng.uniform(*W1_START_MS) / 1000)
    return Dag(
        names=tuple(f"r{index:02d}" for index in range(size)),
        dependencies=tuple(dependencies),
        start=tuple(start),
        stop=tuple(duration / 2 for duration in start),
    )


def critical_path(dag: Dag, durations: Sequence[float]) -> tuple[float, list[int]]:
    """Return the longest path through the DAG, weighting each node by duration.

    The same path bounds the teardown, which walks the graph the other way.
    """
    finish: list[float] = []
    previous: list[int | None] = []
    for index, dependencies in enumerate(dag.dependencies):
        before = max(dependencies, key=finish.__getitem__, default=None)
        previous.append(before)
        finish.append(durations[index] + (0.0 if before is None else finish[before]))
    last = max(range(len(finish)), key=finish.__getitem__)
    path = [last]
    while (before := previous[path[-1]]) is not None:
        path.append(before)
    return finish[last], path[::-1]


def count_violations(dag: Dag, trace: Trace) -> int:
    """Count dependency-order violations and missing or repeated events.

    A resource must begin its start after every dependency finished starting,
    and begin its stop after every dependent finished stopping.
    """
    seen: dict[tuple[str, int], int] = {}
    violations = 0
    for sequence, event in enumerate(trace):
        if event in seen:
            violations += 1
        seen[event] = sequence
    missing = object()
    for index in range(len(dag.names)):
        for kind in ("start_begin", "start_end", "stop_begin", "stop_end"):
            if seen.get((kind, index), missing) is missing:
                violations += 1
    for index, dependencies in enumerate(dag.dependencies):
        for dependency in dependencies:
            began = seen.get(("start_begin", index))
            ready = seen.get(("start_end", dependency))
            if began is not None and ready is not None and began < ready:
                violations += 1
            stopping = seen.get(("stop_begin", dependency))
            stopped = seen.get(("stop_end", index))
            if stopping is not None and stopped is not None and stopping < stopped:
                violations += 1
    return violations


# --- What the libraries under comparison are given ------------------------------


@dataclass(frozen=True)
class Hooks:
    """The work of W1's resources: sleep on start and stop, record each event."""

    dag: Dag
    trace: Trace

    async def start(self, index: int) -> None:
        self.trace.append(("start_begin", index))
        await anyio.sleep(self.dag.start[index])
        self.trace.append(("start_end", index))

    async def stop(self, index: int) -> None:
        self.trace.append(("stop_begin", index))
        await anyio.sleep(self.dag.stop[index])
        self.trace.append(("stop_end", index))


@dataclass(frozen=True)
class Graph:
    """A resource graph for an adapter to declare in its library's own terms.

    ``dependencies[i]`` lists the earlier resources that resource ``i`` needs,
    so the indexes are a topological order. Without ``hooks`` every resource
    is a no-op (W2); with them, it starts and stops through the hooks (W1).
    """

    names: tuple[str, ...]
    dependencies: tuple[tuple[int, ...], ...]
    hooks: Hooks | None
    types: tuple[type, ...]
    """One class per resource, for the libraries that key resources by type.

    Made with the graph, so that no build time includes them: in an
    application they are the classes of the resources, already there.
    """

    @classmethod
    def from_dag(cls, dag: Dag, trace: Trace) -> Graph:
        return cls(dag.names, dag.dependencies, Hooks(dag, trace), _classes(dag.names))

    @classmethod
    def independent(cls, size: int) -> Graph:
        names = tuple(f"r{i}" for i in range(size))
        return cls(names, ((),) * size, None, _classes(names))


def keyword_resource(graph: Graph, index: int) -> Callable[..., AsyncIterator[object]]:
    """Resource `index` as an async generator taking its dependencies by keyword.

    It yields its index; with the graph's hooks it starts and stops through them.
    """
    hooks = graph.hooks
    if hooks is None:

        async def noop(**dependencies: object) -> AsyncIterator[object]:
            yield index

        return noop

    async def factory(**dependencies: object) -> AsyncIterator[object]:
        await hooks.start(index)
        yield index
        await hooks.stop(index)

    return factory


def _classes(names: Sequence[str]) -> tuple[type, ...]:
    return tuple(type(f"R_{name}", (), {"__slots__": ()}) for name in names)


# --- W1 baselines ----------------------------------------------------------------


async def _sleeping_resource(
    index: int, start: float, stop: float, trace: Trace
) -> AsyncIterator[None]:
    trace.append(("start_begin", index))
    await anyio.sleep(start)
    trace.append(("start_end", index))
    yield None
    trace.append(("stop_begin", index))
    await anyio.sleep(stop)
    trace.append(("stop_end", index))


sleeping_context = contextlib.asynccontextmanager(_sleeping_resource)


def sleeping_factory(
    dag: Dag, index: int, trace: Trace
) -> Callable[..., AsyncIterator[None]]:
    """W1 resource `index` as an async generator function for lifespan_kit.

    It takes its dependencies by keyword and sleeps as `_sleeping_resource` does;
    it is a generator function of its own, as an application's would be.
    """
    start, stop = dag.start[index], dag.stop[index]

    async def factory(**dependencies: object) -> AsyncIterator[None]:
        trace.append(("start_begin", index))
        await anyio.sleep(start)
        trace.append(("start_end", index))
        yield None
        trace.append(("stop_begin", index))
        await anyio.sleep(stop)
        trace.append(("stop_end", index))

    return factory


@dataclass(frozen=True)
class Timing:
    """One W1 run: wall times in seconds and the dependency-order violations."""

    startup: float
    teardown: float
    violations: int


async def time_context(
    dag: Dag,
    trace: Trace,
    context: Callable[[], contextlib.AbstractAsyncContextManager[object]],
) -> Timing:
    """Time entering and leaving one context manager that runs the whole graph."""
    cm = context()
    with anyio.fail_after(W1_TIMEOUT):
        began = time.perf_counter()
        async with cm:
            ready = time.perf_counter()
            leaving = time.perf_counter()
        ended = time.perf_counter()
    return Timing(ready - began, ended - leaving, count_violations(dag, trace))


async def w1_exit_stack(dag: Dag) -> Timing:
    """Enter every resource in index (topological) order on one AsyncExitStack."""
    trace: Trace = []

    @contextlib.asynccontextmanager
    async def everything() -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for index in range(len(dag.names)):
                await stack.enter_async_context(
                    sleeping_context(index, dag.start[index], dag.stop[index], trace)
                )
            yield

    return await time_context(dag, trace, everything)


async def w1_ideal(dag: Dag) -> Timing:
    """One task per resource, each waiting on its dependencies' events."""
    trace: Trace = []
    size = len(dag.names)
    dependents = dag.dependents
    started = [anyio.Event() for _ in range(size)]
    stopped = [anyio.Event() for _ in range(size)]
    all_started = anyio.Event()
    release = anyio.Event()
    pending = [size]

    async def host(index: int) -> None:
        for dependency in dag.dependencies[index]:
            await started[dependency].wait()
        async with sleeping_context(index, dag.start[index], dag.stop[index], trace):
            started[index].set()
            pending[0] -= 1
            if pending[0] == 0:
                all_started.set()
            await release.wait()
            for dependent in dependents[index]:
                await stopped[dependent].wait()
        stopped[index].set()

    @contextlib.asynccontextmanager
    async def everything() -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            for index in range(size):
                tg.start_soon(host, index)
            await all_started.wait()
            yield
            release.set()

    return await time_context(dag, trace, everything)


# --- W2 baseline -----------------------------------------------------------------


async def noop_resource() -> AsyncIterator[None]:
    yield None


noop_context = contextlib.asynccontextmanager(noop_resource)


async def time_exit_stack(size: int, repeat: int) -> float:
    """Enter `size` no-op context managers on an AsyncExitStack, `repeat` times."""
    began = time.perf_counter()
    for _ in range(repeat):
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(size):
                await stack.enter_async_context(noop_context())
    return time.perf_counter() - began


async def time_cycles(
    context: Callable[[], contextlib.AbstractAsyncContextManager[object]], repeat: int
) -> float:
    """Enter and leave a fresh context manager from `context`, `repeat` times.

    The context managers are made before the clock starts: making one is part
    of declaring the app (a wireup container, an aiomisc entrypoint), not of
    starting and stopping its resources.
    """
    contexts = [context() for _ in range(repeat)]
    began = time.perf_counter()
    for cm in contexts:
        async with cm:
            pass
    return time.perf_counter() - began


Sampler = Callable[[], Awaitable[float]]


# --- The machine ---------------------------------------------------------------


def version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def source_revision() -> str:
    """Return the git commit of lifespan_kit's source, when run from a checkout."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    git = ("git", "-C", root)
    try:
        commit = subprocess.run(
            (*git, "rev-parse", "--short", "HEAD"),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changes = subprocess.run(
            (*git, "status", "--porcelain", "--", "lifespan_kit"),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
    return f" (git {commit}{', with local changes' if changes else ''})"


def cpu_model() -> str:
    with (
        contextlib.suppress(OSError),
        open("/proc/cpuinfo", encoding="utf-8") as cpuinfo,
    ):
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_lines(distributions: Sequence[str] = ("anyio", "trio")) -> list[str]:
    """Describe the machine, Python and the versions of `distributions`."""
    now = datetime.datetime.now(datetime.timezone.utc)
    width = max(len(name) for name in ("lifespan_kit", *distributions)) + 2
    lines = [
        "Machine",
        f"  {'platform:':<{width}}{platform.platform()}",
        f"  {'cpu:':<{width}}{cpu_model()}, {os.cpu_count()} logical CPUs",
        f"  {'python:':<{width}}{platform.python_implementation()} "
        f"{platform.python_version()}",
        f"  {'lifespan_kit:':<{width}}{version('lifespan_kit')}{source_revision()}",
    ]
    lines.extend(f"  {name + ':':<{width}}{version(name)}" for name in distributions)
    lines.append(f"  {'date:':<{width}}{now:%Y-%m-%d %H:%M} UTC")
    return lines


# --- The libraries under comparison ----------------------------------------------

Enter = Callable[[], contextlib.AbstractAsyncContextManager[object]]
"""Return a fresh context manager that starts a whole graph and stops it on exit."""


@dataclass(frozen=True)
class Adapter:
    """One way of running the workloads with one library, as its docs show.

    Attributes:
        label: The row's name in every table.
        distribution: The PyPI distribution, for its version.
        backends: The async backends the library runs on.
        build: Declare a graph in the library's terms (validating it, where the
            library does) and return what starts and stops it; the W2 build
            time is the time of this call. Its second argument is the backend.
        fastapi_app: Return W3's FastAPI app for a backend, or None when the
            library has no FastAPI integration.
        notes: Footnotes for the tables: what the library cannot do, and how
            the adapter uses it.
        w3_label: The row's name in the W3 table, when not `label`.
    """

    label: str
    distribution: str
    backends: tuple[str, ...]
    build: Callable[[Graph, str], Enter]
    fastapi_app: Callable[[str], object] | None
    notes: tuple[str, ...] = ()
    w3_label: str = ""


# --- W3: the resources of the FastAPI app ----------------------------------------

W3_PATH: Final = "/item"
W3_BODY: Final = b'{"database":"db:bench","cache":"cache:bench"}'


class AppSettings:
    """W3's first resource; the two others depend on it."""

    def __init__(self) -> None:
        self.name = "bench"


class Database:
    """W3's second resource, handed to the endpoint."""

    def __init__(self, settings: AppSettings) -> None:
        self.name = f"db:{settings.name}"


class Cache:
    """W3's third resource, handed to the endpoint."""

    def __init__(self, settings: AppSettings) -> None:
        self.name = f"cache:{settings.name}"


def item_body(database: Database, cache: Cache) -> dict[str, str]:
    """What W3's endpoint returns, whichever library handed it the resources."""
    return {"database": database.name, "cache": cache.name}
