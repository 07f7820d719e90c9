"""Benchmark lifespan_kit against hand-written baselines run in the same process.

Two workloads, each on asyncio and on trio:

W1 latency
    A seeded random DAG of 40 resources whose starts and stops sleep. The
    concurrent mode should start and stop it in about the critical path of the
    graph; the run also records the order of every start and stop and counts
    the dependency-order violations. Baselines: a sequential
    ``contextlib.AsyncExitStack`` and an "ideal" anyio task-group scheduler.

W2 overhead
    N independent no-op resources, started and stopped, against an
    ``AsyncExitStack`` entering N no-op ``asynccontextmanager`` generators.
    Measurements are interleaved round by round; ratios are medians of the
    per-round ratios.

Every ratio compares measurements taken in the same run and process, so ratios
carry over between machines far better than absolute times do.

Usage::

    python bench/run.py [--backend asyncio|trio|all] [--quick] [--seed N]

See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

import anyio
from common import (
    W1_TIMEOUT,
    Dag,
    Timing,
    Trace,
    count_violations,
    critical_path,
    machine_lines,
    make_dag,
    noop_resource,
    sleeping_factory,
    time_cycles,
    time_exit_stack,
    w1_exit_stack,
    w1_ideal,
)

from lifespan_kit import Lifespan, Registry, ResourceMap, StartupReport

BACKENDS: Final = ("asyncio", "trio")
DEFAULT_SEED: Final = 1

# The targets of the comparison with other libraries (bench/README.md).
W1_TARGET: Final = 1.05

W2_HEADLINE_N: Final = 1000
W2_SEQUENTIAL_TARGET: Final = 1.3
W2_CONCURRENT_TARGET: Final = 4.0
W2_WORK_PER_SAMPLE: Final = 1000  # resources per timed sample, for small N


@dataclass(frozen=True)
class Settings:
    """How much work one run does."""

    seed: int
    quick: bool

    @property
    def w1_runs(self) -> int:
        return 2 if self.quick else 5

    @property
    def w2_sizes(self) -> tuple[int, ...]:
        return (10, 100, 1000) if self.quick else (10, 100, 1000, 10000)

    def w2_rounds(self, size: int) -> int:
        if size >= 10000:
            return 9
        return 7 if self.quick else 31


# --- W1: latency on a random DAG ---------------------------------------------


async def w1_lifespan_kit(
    dag: Dag, concurrency: int | None, reports: list[StartupReport] | None = None
) -> Timing:
    trace: Trace = []
    registry = Registry()
    for index, name in enumerate(dag.names):
        depends = {f"d{k}": dag.names[d] for k, d in enumerate(dag.dependencies[index])}
        registry.add(name, sleeping_factory(dag, index, trace), depends=depends)
    lifespan = registry.lifespan(concurrency=concurrency)
    with anyio.fail_after(W1_TIMEOUT):
        began = time.perf_counter()
        async with lifespan:
            ready = time.perf_counter()
            leaving = time.perf_counter()
        ended = time.perf_counter()
    if reports is not None:
        reports.append(lifespan.report)
    return Timing(ready - began, ended - leaving, count_violations(dag, trace))


@dataclass(frozen=True)
class W1Row:
    """The median W1 figures of one runner on one backend."""

    runner: str
    startup: float
    teardown: float
    violations: int
    runs: int


@dataclass(frozen=True)
class W1Result:
    """W1 on one backend, with what the library's own report said."""

    rows: list[W1Row]
    report_total: float
    report_path: tuple[str, ...]


async def w1(dag: Dag, settings: Settings) -> W1Result:
    reports: list[StartupReport] = []
    runners: dict[str, Callable[[], Awaitable[Timing]]] = {
        "lifespan_kit concurrent": lambda: w1_lifespan_kit(dag, None, reports),
        "lifespan_kit sequential": lambda: w1_lifespan_kit(dag, 1),
        "ideal task group": lambda: w1_ideal(dag),
        "AsyncExitStack": lambda: w1_exit_stack(dag),
    }
    # Warm up the cheap runners (imports, first task group, first timers).
    await w1_lifespan_kit(dag, None)
    await w1_ideal(dag)
    timings: dict[str, list[Timing]] = {name: [] for name in runners}
    for _ in range(settings.w1_runs):
        for name, runner in runners.items():
            timings[name].append(await runner())
    rows = [
        W1Row(
            runner=name,
            startup=statistics.median(t.startup for t in runs),
            teardown=statistics.median(t.teardown for t in runs),
            violations=sum(t.violations for t in runs),
            runs=len(runs),
        )
        for name, runs in timings.items()
    ]
    return W1Result(rows, reports[-1].total, reports[-1].critical_path)


def format_w1(backend: str, dag: Dag, result: W1Result) -> list[str]:
    start_cp, start_path = critical_path(dag, dag.start)
    stop_cp, _ = critical_path(dag, dag.stop)
    edges = sum(len(d) for d in dag.dependencies)
    runs = result.rows[0].runs
    lines = [
        f"[{backend}] W1 latency: {len(dag.names)} resources, {edges} dependencies, "
        f"median of {runs} runs",
        f"  start: critical path {start_cp * 1000:.1f} ms over "
        f"{len(start_path)} resources, sum {sum(dag.start) * 1000:.1f} ms",
        f"  stop:  critical path {stop_cp * 1000:.1f} ms, "
        f"sum {sum(dag.stop) * 1000:.1f} ms",
        f"  critical path: {' -> '.join(dag.names[i] for i in start_path)}",
        "",
        f"  {'runner':<24} {'startup ms':>10} {'/ cp':>6} "
        f"{'teardown ms':>11} {'/ cp':>6} {'violations':>10}",
    ]
    lines.extend(
        f"  {row.runner:<24} {row.startup * 1000:>10.1f} "
        f"{row.startup / start_cp:>6.2f} {row.teardown * 1000:>11.1f} "
        f"{row.teardown / stop_cp:>6.2f} {row.violations:>10d}"
        for row in result.rows
    )
    concurrent = result.rows[0]
    met = (
        concurrent.startup / start_cp <= W1_TARGET
        and concurrent.teardown / stop_cp <= W1_TARGET
        and concurrent.violations == 0
    )
    same = [dag.names[i] for i in start_path] == list(result.report_path)
    lines += [
        "",
        f"  target, lifespan_kit concurrent: both ratios <= {W1_TARGET:.2f} and "
        f"0 violations: {'met' if met else 'NOT MET'}",
        f"  lifespan_kit report (last run): total {result.report_total * 1000:.1f} "
        f"ms, critical path {'matches' if same else 'differs from'} the computed one",
    ]
    if not same:
        lines.append(f"    report path: {' -> '.join(result.report_path)}")
    return lines


# --- W2: per-resource overhead -----------------------------------------------


def _noop_lifespan(size: int, concurrency: int | None) -> Lifespan[ResourceMap]:
    registry = Registry()
    for index in range(size):
        registry.add(f"r{index}", noop_resource)
    return registry.lifespan(concurrency=concurrency)


@dataclass(frozen=True)
class W2Row:
    """Median W2 figures for one N: seconds per resource and ratios."""

    size: int
    rounds: int
    baseline: float
    sequential: float
    concurrent: float
    sequential_ratio: float
    concurrent_ratio: float


async def w2_size(size: int, rounds: int) -> W2Row:
    repeat = max(1, W2_WORK_PER_SAMPLE // size)
    sequential = _noop_lifespan(size, 1)
    concurrent = _noop_lifespan(size, None)
    variants: list[Callable[[], Awaitable[float]]] = [
        lambda: time_exit_stack(size, repeat),
        lambda: time_cycles(lambda: sequential, repeat),
        lambda: time_cycles(lambda: concurrent, repeat),
    ]
    for variant in variants:  # warmup
        await variant()
    samples: list[list[float]] = [[] for _ in variants]
    for round_ in range(rounds):
        gc.collect()
        # Rotate the order every round so no variant always runs first.
        for offset in range(len(variants)):
            position = (round_ + offset) % len(variants)
            elapsed = await variants[position]()
            samples[position].append(elapsed / (repeat * size))
    base, seq, conc = samples
    return W2Row(
        size=size,
        rounds=rounds,
        baseline=statistics.median(base),
        sequential=statistics.median(seq),
        concurrent=statistics.median(conc),
        sequential_ratio=statistics.median(
            s / b for s, b in zip(seq, base, strict=True)
        ),
        concurrent_ratio=statistics.median(
            c / b for c, b in zip(conc, base, strict=True)
        ),
    )


async def w2(settings: Settings) -> list[W2Row]:
    return [await w2_size(size, settings.w2_rounds(size)) for size in settings.w2_sizes]


def format_w2(backend: str, rows: list[W2Row]) -> list[str]:
    lines = [
        f"[{backend}] W2 overhead: independent no-op resources, start + stop, "
        "against AsyncExitStack",
        "  ratios are medians of per-round ratios; us/res are medians",
        "",
        f"  {'N':>6} {'rounds':>6} {'stack us/res':>12} {'seq us/res':>10} "
        f"{'seq ratio':>9} {'conc us/res':>11} {'conc ratio':>10}",
    ]
    lines.extend(
        f"  {row.size:>6d} {row.rounds:>6d} {row.baseline * 1e6:>12.2f} "
        f"{row.sequential * 1e6:>10.2f} {row.sequential_ratio:>9.2f} "
        f"{row.concurrent * 1e6:>11.2f} {row.concurrent_ratio:>10.2f}"
        for row in rows
    )
    headline = next(row for row in rows if row.size == W2_HEADLINE_N)
    lines.append("")
    for mode, ratio, target in (
        ("sequential", headline.sequential_ratio, W2_SEQUENTIAL_TARGET),
        ("concurrent", headline.concurrent_ratio, W2_CONCURRENT_TARGET),
    ):
        verdict = "met" if ratio <= target else "NOT MET"
        lines.append(
            f"  target, N={W2_HEADLINE_N} {mode}: ratio {ratio:.2f} <= "
            f"{target:.1f}: {verdict}"
        )
    return lines


# --- driver --------------------------------------------------------------------


async def run_backend(settings: Settings) -> tuple[W1Result, list[W2Row]]:
    dag = make_dag(settings.seed)
    return await w1(dag, settings), await w2(settings)


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark lifespan_kit against hand-written baselines."
    )
    parser.add_argument(
        "--backend", choices=(*BACKENDS, "all"), default="all", help="default: all"
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer repetitions, no N=10000"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help=f"seed of the W1 graph (default: {DEFAULT_SEED})",
    )
    arguments = parser.parse_args(argv)
    needs_trio = arguments.backend in ("trio", "all")
    if needs_trio and importlib.util.find_spec("trio") is None:
        parser.error("trio is not installed; install it or pass --backend asyncio")
    return arguments


def main(argv: Sequence[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    settings = Settings(seed=arguments.seed, quick=arguments.quick)
    backends = BACKENDS if arguments.backend == "all" else (arguments.backend,)
    command = " ".join(["python bench/run.py", *sys.argv[1:]])
    print(f"lifespan_kit benchmark: {command}")
    print(f"  seed {settings.seed}, {'quick' if settings.quick else 'full'} run")
    dag = make_dag(settings.seed)
    for backend in backends:
        w1_result, w2_rows = anyio.run(run_backend, settings, backend=backend)
        print()
        print("\n".join(format_w1(backend, dag, w1_result)))
        print()
        print("\n".join(format_w2(backend, w2_rows)))
        sys.stdout.flush()
    print()
    print("\n".join(machine_lines()))


if __name__ == "__main__":
    main()
