"""The cost of tracing: W1 and W2 with the OpenTelemetry listener off and on.

Three variants of the same lifespans, measured in the same process, round by
round in a rotating order:

off
    No listener: what every app pays without ``lifespan_kit[opentelemetry]``
    (the core never imports OpenTelemetry).
api
    ``Telemetry()`` over the API's no-op providers: the extra installed, no
    SDK configured.
sdk
    ``Telemetry()`` over the SDK: every span goes through a
    ``BatchSpanProcessor`` (to an exporter that drops it) and every metric to
    an in-memory reader, as in a traced service.

W1 is bench/run.py's 40-resource graph whose starts and stops sleep: the
ratios say what tracing adds to a real startup. W2 is N no-op resources:
the ratios say what tracing costs per resource, against a lifespan without it.
Every ratio is a median of per-round ratios.

Usage::

    python bench/otel.py [--backend asyncio|trio|all] [--quick] [--seed N]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import anyio
from common import (
    W1_TIMEOUT,
    Dag,
    Trace,
    count_violations,
    critical_path,
    machine_lines,
    make_dag,
    noop_resource,
    sleeping_factory,
    time_cycles,
)
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from lifespan_kit import Lifespan, Listener, Registry, ResourceMap
from lifespan_kit.opentelemetry import Telemetry

BACKENDS: Final = ("asyncio", "trio")
VARIANTS: Final = ("off", "api", "sdk")
W2_SIZES: Final = (100, 1000)
W2_WORK_PER_SAMPLE: Final = 1000  # resources per timed sample


class DroppingExporter(SpanExporter):
    """Takes every batch of spans and throws it away."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


@dataclass
class Providers:
    """The SDK's providers of the "sdk" variant, shut down at the end."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    @classmethod
    def create(cls) -> Providers:
        tracer_provider = TracerProvider(shutdown_on_exit=False)
        tracer_provider.add_span_processor(BatchSpanProcessor(DroppingExporter()))
        meter_provider = MeterProvider(
            metric_readers=[InMemoryMetricReader()], shutdown_on_exit=False
        )
        return cls(tracer_provider, meter_provider)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def listeners(variant: str, providers: Providers) -> list[Listener]:
    if variant == "off":
        return []
    if variant == "api":
        return [
            Telemetry(
                tracer_provider=trace.NoOpTracerProvider(),
                meter_provider=metrics.NoOpMeterProvider(),
            )
        ]
    return [
        Telemetry(
            tracer_provider=providers.tracer_provider,
            meter_provider=providers.meter_provider,
        )
    ]


def ratios(samples: dict[str, list[float]]) -> dict[str, float]:
    """Each variant's median per-round ratio to "off"."""
    return {
        variant: statistics.median(
            s / o for s, o in zip(samples[variant], samples["off"], strict=True)
        )
        for variant in VARIANTS
    }


# --- W1: the sleeping graph --------------------------------------------------------


async def w1_once(dag: Dag, listening: list[Listener]) -> tuple[float, float, int]:
    """Start and stop the graph once: startup and teardown seconds, violations."""
    trace_: Trace = []
    registry = Registry()
    for index, name in enumerate(dag.names):
        depends = {f"d{k}": dag.names[d] for k, d in enumerate(dag.dependencies[index])}
        registry.add(name, sleeping_factory(dag, index, trace_), depends=depends)
    lifespan = registry.lifespan(listeners=listening)
    with anyio.fail_after(W1_TIMEOUT):
        began = time.perf_counter()
        async with lifespan:
            ready = time.perf_counter()
        ended = time.perf_counter()
    return ready - began, ended - ready, count_violations(dag, trace_)


@dataclass(frozen=True)
class W1Result:
    startup: dict[str, float]
    teardown: dict[str, float]
    startup_ratio: dict[str, float]
    teardown_ratio: dict[str, float]
    violations: int
    runs: int


async def w1(dag: Dag, runs: int, providers: Providers) -> W1Result:
    startup: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    teardown: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    violations = 0
    for variant in VARIANTS:  # warm up
        await w1_once(dag, listeners(variant, providers))
    for round_ in range(runs):
        for offset in range(len(VARIANTS)):
            variant = VARIANTS[(round_ + offset) % len(VARIANTS)]
            up, down, wrong = await w1_once(dag, listeners(variant, providers))
            startup[variant].append(up)
            teardown[variant].append(down)
            violations += wrong
    return W1Result(
        startup={v: statistics.median(s) for v, s in startup.items()},
        teardown={v: statistics.median(s) for v, s in teardown.items()},
        startup_ratio=ratios(startup),
        teardown_ratio=ratios(teardown),
        violations=violations,
        runs=runs,
    )


def format_w1(backend: str, dag: Dag, result: W1Result) -> list[str]:
    start_cp, _ = critical_path(dag, dag.start)
    stop_cp, _ = critical_path(dag, dag.stop)
    lines = [
        f"[{backend}] W1: {len(dag.names)} sleeping resources, concurrent, "
        f"median of {result.runs} runs",
        f"  critical path: start {start_cp * 1000:.1f} ms, "
        f"stop {stop_cp * 1000:.1f} ms",
        "",
        f"  {'tracing':<8} {'startup ms':>10} {'/ off':>6} "
        f"{'teardown ms':>11} {'/ off':>6}",
    ]
    lines.extend(
        f"  {variant:<8} {result.startup[variant] * 1000:>10.1f} "
        f"{result.startup_ratio[variant]:>6.3f} "
        f"{result.teardown[variant] * 1000:>11.1f} "
        f"{result.teardown_ratio[variant]:>6.3f}"
        for variant in VARIANTS
    )
    lines.append(f"  order violations, all runs: {result.violations}")
    return lines


# --- W2: no-op resources -----------------------------------------------------------


def _noop_lifespan(
    size: int, concurrency: int | None, listening: list[Listener]
) -> Lifespan[ResourceMap]:
    registry = Registry()
    for index in range(size):
        registry.add(f"r{index}", noop_resource)
    return registry.lifespan(concurrency=concurrency, listeners=listening)


@dataclass(frozen=True)
class W2Row:
    size: int
    mode: str
    per_resource: dict[str, float]
    ratio: dict[str, float]


async def w2_row(
    size: int, concurrency: int | None, rounds: int, providers: Providers
) -> W2Row:
    repeat = max(1, W2_WORK_PER_SAMPLE // size)
    lifespans = {
        variant: _noop_lifespan(size, concurrency, listeners(variant, providers))
        for variant in VARIANTS
    }

    async def sample(variant: str) -> float:
        lifespan = lifespans[variant]
        elapsed = await time_cycles(lambda: lifespan, repeat)
        return elapsed / (repeat * size)

    for variant in VARIANTS:  # warm up
        await sample(variant)
    samples: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for round_ in range(rounds):
        gc.collect()
        for offset in range(len(VARIANTS)):
            variant = VARIANTS[(round_ + offset) % len(VARIANTS)]
            samples[variant].append(await sample(variant))
    return W2Row(
        size=size,
        mode="sequential" if concurrency == 1 else "concurrent",
        per_resource={v: statistics.median(s) for v, s in samples.items()},
        ratio=ratios(samples),
    )


def format_w2(backend: str, rows: list[W2Row], rounds: int) -> list[str]:
    lines = [
        f"[{backend}] W2: independent no-op resources, start + stop, {rounds} rounds",
        "",
        f"  {'N':>5} {'mode':<10} {'off us/res':>10} {'api us/res':>10} "
        f"{'/ off':>6} {'sdk us/res':>10} {'/ off':>6}",
    ]
    lines.extend(
        f"  {row.size:>5d} {row.mode:<10} {row.per_resource['off'] * 1e6:>10.2f} "
        f"{row.per_resource['api'] * 1e6:>10.2f} {row.ratio['api']:>6.2f} "
        f"{row.per_resource['sdk'] * 1e6:>10.2f} {row.ratio['sdk']:>6.2f}"
        for row in rows
    )
    return lines


# --- driver --------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    seed: int
    quick: bool

    @property
    def w1_runs(self) -> int:
        return 3 if self.quick else 7

    @property
    def w2_rounds(self) -> int:
        return 5 if self.quick else 15


async def run_backend(settings: Settings) -> tuple[W1Result, list[W2Row]]:
    providers = Providers.create()
    try:
        result = await w1(make_dag(settings.seed), settings.w1_runs, providers)
        rows = [
            await w2_row(size, concurrency, settings.w2_rounds, providers)
            for size in W2_SIZES
            for concurrency in (1, None)
        ]
    finally:
        providers.shutdown()
    return result, rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The cost of tracing lifespans.")
    parser.add_argument(
        "--backend", choices=(*BACKENDS, "all"), default="all", help="default: all"
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--seed", type=int, default=1, help="seed of the W1 graph")
    arguments = parser.parse_args(argv)
    settings = Settings(seed=arguments.seed, quick=arguments.quick)
    backends = BACKENDS if arguments.backend == "all" else (arguments.backend,)
    print(
        f"lifespan_kit tracing overhead: python bench/otel.py {' '.join(sys.argv[1:])}"
    )
    dag = make_dag(settings.seed)
    for backend in backends:
        result, rows = anyio.run(run_backend, settings, backend=backend)
        print()
        print("\n".join(format_w1(backend, dag, result)))
        print()
        print("\n".join(format_w2(backend, rows, settings.w2_rounds)))
        sys.stdout.flush()
    print()
    print("\n".join(machine_lines(("anyio", "trio", "opentelemetry-sdk"))))


if __name__ == "__main__":
    main()
