"""Run one workload of the comparison in this process and print its results as JSON.

``compare.py`` starts one process per workload and backend, so no library
warms up, leaks into or slows down another workload::

    python bench/workloads.py w1 --backend asyncio --seed 1
    python bench/workloads.py w2 --backend trio [--quick]
    python bench/workloads.py w3 --backend asyncio [--quick]
    python bench/workloads.py imports [--quick]

See bench/README.md for what each workload measures.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import math
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, cast

import anyio
from common import (
    W3_BODY,
    W3_PATH,
    Adapter,
    AppSettings,
    Cache,
    Dag,
    Database,
    Enter,
    Graph,
    Sampler,
    Timing,
    Trace,
    item_body,
    make_dag,
    time_context,
    time_cycles,
    time_exit_stack,
    w1_exit_stack,
    w1_ideal,
)
from fastapi import FastAPI, Request

W1_BASELINES: Final = ("AsyncExitStack", "ideal task group")
W2_WORK_PER_SAMPLE: Final = 1000  # resources per timed sample, for small N
W2_SAMPLE_BUDGET: Final = 6.0  # seconds of samples per library and N, at most
W2_SKIP_OVER: Final = (
    20.0  # seconds: an N whose one sample would take longer is skipped
)
W2_MIN_ROUNDS: Final = 3
W3_BASELINE: Final = "request.state (baseline)"

JSON = dict[str, object]


# --- Loading the libraries -------------------------------------------------------


@dataclass
class Loaded:
    """The adapters that loaded, and why the others did not."""

    adapters: list[Adapter]
    missing: dict[str, str]


def load_adapters() -> Loaded:
    """Import lifespan_kit's adapters and every peer's that is installed."""
    import peers  # the peers are imported only when measured
    import subject

    loaded = Loaded(list(subject.ADAPTERS), {})
    for module in peers.MODULES:
        try:
            imported = importlib.import_module(f"peers.{module}")
        except ImportError as exc:
            loaded.missing[module] = f"not installed ({exc.name})"
            continue
        loaded.adapters.extend(cast("list[Adapter]", imported.ADAPTERS))
    return loaded


def _error(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


# --- W1 --------------------------------------------------------------------------


async def w1(seed: int, runs: int, backend: str, loaded: Loaded) -> JSON:
    dag = make_dag(seed)
    small = make_dag(seed, size=5)

    def adapter_runner(adapter: Adapter, graph: Dag) -> Callable[[], Awaitable[Timing]]:
        async def run() -> Timing:
            trace: Trace = []
            enter = adapter.build(Graph.from_dag(graph, trace), backend)
            return await time_context(graph, trace, enter)

        return run

    runners: dict[str, Callable[[], Awaitable[Timing]]] = {
        "AsyncExitStack": lambda: w1_exit_stack(dag),
        "ideal task group": lambda: w1_ideal(dag),
    }
    errors: dict[str, str] = {}
    for adapter in loaded.adapters:
        if backend not in adapter.backends:
            continue
        try:  # warm up on a small graph: imports, first compilations
            await adapter_runner(adapter, small)()
        except Exception as exc:  # a peer's failure is reported, not fatal
            errors[adapter.label] = _error(exc)
            continue
        runners[adapter.label] = adapter_runner(adapter, dag)
    await w1_ideal(small)
    timings: dict[str, list[Timing]] = {name: [] for name in runners}
    for _ in range(runs):
        for name, runner in runners.items():
            if name in errors:
                continue
            try:
                timings[name].append(await runner())
            except Exception as exc:
                errors[name] = _error(exc)
    rows = [
        {
            "label": name,
            "startup": statistics.median(t.startup for t in found),
            "teardown": statistics.median(t.teardown for t in found),
            "violations": sum(t.violations for t in found),
            "runs": len(found),
        }
        for name, found in timings.items()
        if found and name not in errors
    ]
    return {"rows": rows, "errors": errors}


# --- W2 --------------------------------------------------------------------------


@dataclass
class Variant:
    """One library's samples at one N."""

    label: str
    sampler: Sampler
    rounds: int
    build: float = math.nan
    samples: list[float] = field(default_factory=list)


def _rounds_within_budget(sample_wall: float, rounds: int) -> int:
    if sample_wall <= 0:
        return rounds
    return max(W2_MIN_ROUNDS, min(rounds, int(W2_SAMPLE_BUDGET / sample_wall)))


def _time_builds(adapter: Adapter, size: int, backend: str) -> tuple[Enter, float]:
    """Build the graph (up to 5 times when cheap); return the last and the median."""
    times: list[float] = []
    enter: Enter | None = None
    while enter is None or (len(times) < 5 and sum(times) < 2.0):
        graph = Graph.independent(size)
        gc.collect()
        began = time.perf_counter()
        enter = adapter.build(graph, backend)
        times.append(time.perf_counter() - began)
    return enter, statistics.median(times)


async def _prepare(
    adapter: Adapter, size: int, repeat: int, backend: str
) -> tuple[Sampler, float]:
    """Build, warm up (first compilations, caches) and freeze one library's graph.

    The built graph is moved out of the cyclic collector's reach
    (``gc.freeze``), so that the objects one library keeps alive do not make
    the collections during another library's samples longer; what each run
    allocates is collected as usual.
    """
    enter, build = _time_builds(adapter, size, backend)

    def sampler() -> Awaitable[float]:
        return time_cycles(enter, repeat)

    await sampler()
    gc.collect()
    gc.freeze()
    return sampler, build


async def w2_size(
    size: int,
    rounds: int,
    backend: str,
    adapters: Sequence[Adapter],
    skipped: dict[str, str],
    history: dict[str, list[tuple[int, float]]],
) -> JSON:
    repeat = max(1, W2_WORK_PER_SAMPLE // size)
    variants = [
        Variant("AsyncExitStack", lambda: time_exit_stack(size, repeat), rounds)
    ]
    errors: dict[str, str] = {}
    for adapter in adapters:
        label = adapter.label
        if label in skipped:
            continue
        predicted = _predict(history.get(label, []), size)
        if predicted > W2_SKIP_OVER:
            skipped[label] = (
                f"skipped from N={size}: one start + stop would take about "
                f"{predicted:.0f} s"
            )
            continue
        try:
            sampler, build = await _prepare(adapter, size, repeat, backend)
        except Exception as exc:  # a peer's failure is reported
            errors[label] = _error(exc)
            skipped[label] = f"failed at N={size}"
            continue
        variants.append(Variant(label, sampler, rounds, build))
    await variants[0].sampler()  # warm the baseline up too
    for round_ in range(rounds):
        gc.collect()
        active = [v for v in variants if round_ < v.rounds]
        # Rotate the order every round so no variant always runs first.
        for offset in range(len(active)):
            variant = active[(round_ + offset) % len(active)]
            began = time.perf_counter()
            try:
                elapsed = await variant.sampler()
            except Exception as exc:
                errors[variant.label] = _error(exc)
                variant.rounds = round_
                continue
            if round_ == 0:  # slow libraries get fewer rounds
                wall = time.perf_counter() - began
                variant.rounds = _rounds_within_budget(wall, rounds)
            variant.samples.append(elapsed / (repeat * size))
    base = variants[0].samples
    rows: list[JSON] = []
    for v in variants:
        if not v.samples:
            continue
        median = statistics.median(v.samples)
        history.setdefault(v.label, []).append((size, median * size))
        pairs = zip(v.samples, base[: len(v.samples)], strict=True)
        rows.append(
            {
                "label": v.label,
                "rounds": len(v.samples),
                "per_resource": median,
                "ratio": statistics.median(s / b for s, b in pairs),
                "build": v.build,
            }
        )
    return {"size": size, "rows": rows, "errors": errors}


def _predict(history: list[tuple[int, float]], size: int) -> float:
    """Extrapolate one start + stop at `size` from the sizes measured before."""
    if not history:
        return 0.0
    last_size, last = history[-1]
    exponent = 1.0
    if len(history) >= 2:
        before_size, before = history[-2]
        if before > 0 and last > before:
            exponent = max(
                1.0, math.log(last / before) / math.log(last_size / before_size)
            )
    return float(last * (size / last_size) ** exponent)


async def w2(sizes: Sequence[int], quick: bool, backend: str, loaded: Loaded) -> JSON:
    adapters = [a for a in loaded.adapters if backend in a.backends]
    skipped: dict[str, str] = {}
    history: dict[str, list[tuple[int, float]]] = {}
    results = []
    for size in sizes:
        rounds = 9 if size >= 10000 else (7 if quick else 31)
        try:
            results.append(
                await w2_size(size, rounds, backend, adapters, skipped, history)
            )
        finally:
            # The graphs of this N are gone: let the collector free them.
            gc.unfreeze()
            gc.collect()
    return {"sizes": results, "skipped": skipped}


# --- W3 --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _baseline_lifespan(app: FastAPI) -> AsyncIterator[dict[str, object]]:
    settings = AppSettings()
    yield {"database": Database(settings), "cache": Cache(settings)}


async def _baseline_item(request: Request) -> dict[str, str]:
    return item_body(request.state.database, request.state.cache)


def baseline_app(backend: str) -> FastAPI:
    """A plain FastAPI app: the lifespan yields the state, the handler reads it."""
    app = FastAPI(lifespan=_baseline_lifespan)
    app.get(W3_PATH)(_baseline_item)
    return app


ASGIApp = Callable[
    [
        dict[str, object],
        Callable[[], Awaitable[dict[str, object]]],
        Callable[[dict[str, object]], Awaitable[None]],
    ],
    Awaitable[None],
]


@contextlib.asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[dict[str, object]]:
    """Run `app`'s ASGI lifespan as a server would; yield the lifespan state."""
    state: dict[str, object] = {}
    started = anyio.Event()
    shutting_down = anyio.Event()
    finished = anyio.Event()
    sent: list[dict[str, object]] = []
    asked = [False]

    async def receive() -> dict[str, object]:
        if not asked[0]:
            asked[0] = True
            return {"type": "lifespan.startup"}
        await shutting_down.wait()
        return {"type": "lifespan.shutdown"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)
        if message["type"] in ("lifespan.startup.complete", "lifespan.startup.failed"):
            started.set()
        else:
            finished.set()

    scope: dict[str, object] = {
        "type": "lifespan",
        "asgi": {"version": "3.0", "spec_version": "2.0"},
        "state": state,
    }
    async with anyio.create_task_group() as tg:

        async def run_app() -> None:
            await app(scope, receive, send)

        tg.start_soon(run_app)
        await started.wait()
        if sent[-1]["type"] != "lifespan.startup.complete":
            message = f"startup failed: {sent[-1].get('message')}"
            raise RuntimeError(message)
        try:
            yield state
        finally:
            shutting_down.set()
            await finished.wait()
    if sent[-1]["type"] != "lifespan.shutdown.complete":
        message = f"shutdown failed: {sent[-1].get('message')}"
        raise RuntimeError(message)


async def call(app: ASGIApp, state: dict[str, object]) -> tuple[int, bytes]:
    """Send one GET request to `app` in-process; return the status and body."""
    scope: dict[str, object] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": W3_PATH,
        "raw_path": W3_PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 50000),
        "server": ("bench", 80),
        "state": state.copy(),  # servers give each request a shallow copy
    }
    received = [False]
    status = [0]
    body: list[bytes] = []

    async def receive() -> dict[str, object]:
        if received[0]:
            return {"type": "http.disconnect"}
        received[0] = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            status[0] = cast("int", message["status"])
        elif message["type"] == "http.response.body":
            body.append(cast("bytes", message.get("body", b"")))

    await app(scope, receive, send)
    return status[0], b"".join(body)


async def _time_calls(app: ASGIApp, state: dict[str, object], count: int) -> float:
    began = time.perf_counter()
    for _ in range(count):
        await call(app, state)
    return time.perf_counter() - began


async def w3(calls: int, rounds: int, backend: str, loaded: Loaded) -> JSON:
    factories: dict[str, Callable[[str], object]] = {W3_BASELINE: baseline_app}
    unsupported: dict[str, str] = {}
    for adapter in loaded.adapters:
        label = adapter.w3_label or adapter.label
        if adapter.fastapi_app is None:
            unsupported[label] = "no FastAPI integration"
        elif backend not in adapter.backends:
            unsupported[label] = f"does not run on {backend}"
        else:
            factories[label] = adapter.fastapi_app
    errors: dict[str, str] = {}
    per_round = calls // rounds
    samples: dict[str, list[float]] = {}
    async with contextlib.AsyncExitStack() as stack:
        served: dict[str, tuple[ASGIApp, dict[str, object]]] = {}
        for label, factory in factories.items():
            try:
                app = cast("ASGIApp", factory(backend))
                state = await stack.enter_async_context(serving(app))
                answer = await call(app, state)
                if answer != (200, W3_BODY):
                    message = f"unexpected answer {answer!r}"
                    raise RuntimeError(message)
                await _time_calls(app, state, 200)  # warmup
            except Exception as exc:  # a peer's failure is reported
                errors[label] = _error(exc)
                continue
            served[label] = (app, state)
            samples[label] = []
        labels = list(served)
        # As in W2: the apps stay out of the collector's reach while measured.
        gc.collect()
        gc.freeze()
        for round_ in range(rounds):
            gc.collect()
            for offset in range(len(labels)):
                label = labels[(round_ + offset) % len(labels)]
                app, state = served[label]
                samples[label].append(await _time_calls(app, state, per_round))
        gc.unfreeze()
    base = samples.get(W3_BASELINE, [])
    rows = [
        {
            "label": label,
            "calls": per_round * len(found),
            "per_request": statistics.median(found) / per_round,
            "ratio": statistics.median(b / s for s, b in zip(found, base, strict=True))
            if base
            else math.nan,
        }
        for label, found in samples.items()
    ]
    return {"rows": rows, "errors": errors, "unsupported": unsupported}


# --- Import time -----------------------------------------------------------------


@dataclass(frozen=True)
class ImportCase:
    """What one row of the import table imports."""

    label: str
    modules: tuple[str, ...]
    integration: tuple[str, ...]


IMPORT_CASES: Final = (
    # The package loads its names on first use: time the ones an app imports.
    ImportCase(
        "lifespan_kit",
        ("lifespan_kit:Registry", "lifespan_kit:Bundle"),
        ("lifespan_kit.fastapi",),
    ),
    ImportCase("dishka", ("dishka",), ("dishka.integrations.fastapi",)),
    ImportCase("svcs", ("svcs",), ("svcs.fastapi",)),
    ImportCase("that-depends", ("that_depends",), ()),
    ImportCase(
        "dependency-injector",
        ("dependency_injector.containers", "dependency_injector.providers"),
        ("dependency_injector.wiring",),
    ),
    ImportCase("wireup", ("wireup",), ("wireup.integration.fastapi",)),
    ImportCase("aiomisc", ("aiomisc",), ()),
    ImportCase("fastapi-lifespan-manager", ("fastapi_lifespan_manager",), ()),
)

_IMPORT_SCRIPT: Final = """\
import importlib, time
def load(name):
    module, _, attribute = name.partition(":")
    imported = importlib.import_module(module)
    if attribute:
        getattr(imported, attribute)
for name in {before!r}:
    load(name)
began = time.perf_counter()
for name in {modules!r}:
    load(name)
print(time.perf_counter() - began)
"""


def time_import(before: Sequence[str], modules: Sequence[str]) -> float | str:
    """Time importing `modules` in a fresh interpreter that imported `before`.

    An entry ``"module:attribute"`` also reads the attribute, which loads what
    a lazy package (pydantic) defers until first use. Returns the seconds, or
    why the import failed.
    """
    script = _IMPORT_SCRIPT.format(before=tuple(before), modules=tuple(modules))
    try:
        result = subprocess.run(
            (sys.executable, "-c", script),
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        return float(result.stdout.strip())
    except (subprocess.SubprocessError, ValueError) as exc:
        return _error(exc)


ImportJob = tuple[tuple[str, ...], tuple[str, ...]]  # (imported before, timed)


def _import_jobs() -> dict[tuple[str, str], ImportJob]:
    jobs: dict[tuple[str, str], ImportJob] = {}
    for case in IMPORT_CASES:
        jobs[case.label, "alone"] = ((), case.modules)
        jobs[case.label, "after_fastapi"] = (("fastapi",), case.modules)
        if case.integration:
            jobs[case.label, "with_integration"] = (
                ("fastapi",),
                case.modules + case.integration,
            )
    pydantic = ("anyio", "pydantic:BaseModel")
    jobs["reference", "fastapi"] = ((), ("fastapi",))
    jobs["reference", "anyio + pydantic.BaseModel"] = ((), pydantic)
    used = ("lifespan_kit:Registry", "lifespan_kit:Bundle")
    jobs["reference", "lifespan_kit after import anyio, pydantic"] = (
        ("anyio", "pydantic"),
        used,
    )
    jobs["reference", "lifespan_kit after anyio + pydantic.BaseModel"] = (
        pydantic,
        used,
    )
    return jobs


def imports(repeat: int) -> JSON:
    """Time every import `repeat` times, one round of all of them after another.

    Interleaving the rounds spreads a busy moment of the machine over every
    library instead of one.
    """
    jobs = _import_jobs()
    for before, modules in jobs.values():  # write the bytecode caches first
        time_import(before, modules)
    times: dict[tuple[str, str], list[float]] = {key: [] for key in jobs}
    errors: dict[str, str] = {}
    for _ in range(repeat):
        for key, (before, modules) in jobs.items():
            found = time_import(before, modules)
            if isinstance(found, str):
                errors[key[0] if key[0] != "reference" else key[1]] = found
            else:
                times[key].append(found)
    median = {key: statistics.median(found) for key, found in times.items() if found}
    rows: list[JSON] = [
        {
            "label": case.label,
            "alone": median[case.label, "alone"],
            "after_fastapi": median[case.label, "after_fastapi"],
            "with_integration": median.get((case.label, "with_integration"), math.nan),
            "integration": ", ".join(case.integration),
        }
        for case in IMPORT_CASES
        if case.label not in errors
    ]
    reference = {
        name: value for (kind, name), value in median.items() if kind == "reference"
    }
    return {"rows": rows, "errors": errors, "reference": reference, "repeat": repeat}


# --- Driver ----------------------------------------------------------------------


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=("w1", "w2", "w3", "imports"))
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    quick: bool = arguments.quick
    backend: str = arguments.backend
    result: JSON
    if arguments.workload == "imports":
        result = imports(repeat=3 if quick else 5)
    else:
        loaded = load_adapters()
        workloads: dict[str, Callable[[], Awaitable[JSON]]] = {
            "w1": lambda: w1(arguments.seed, 2 if quick else 5, backend, loaded),
            "w2": lambda: w2(
                (10, 100, 1000) if quick else (10, 100, 1000, 10000),
                quick,
                backend,
                loaded,
            ),
            "w3": lambda: w3(
                1000 if quick else 5000, 10 if quick else 50, backend, loaded
            ),
        }
        result = anyio.run(workloads[arguments.workload], backend=backend)
        result["missing"] = loaded.missing
        result["notes"] = {a.label: list(a.notes) for a in loaded.adapters}
        result["backends"] = {a.label: list(a.backends) for a in loaded.adapters}
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
