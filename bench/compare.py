"""Compare lifespan_kit with the libraries users would pick instead.

Runs every workload for lifespan_kit, for dishka, svcs, that-depends,
dependency-injector, wireup, aiomisc and fastapi-lifespan-manager, and for
hand-written baselines, each workload and backend in its own process
(``bench/workloads.py``); prints the tables and writes them into
``bench/RESULTS.md`` between its ``compare`` markers.

Usage::

    python3 tasks.py compare [--quick] [--seed N] [--no-write]

which creates ``.venv-bench`` with ``bench/requirements-peers.txt`` and runs
this script in it. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, cast

from common import critical_path, machine_lines, make_dag

HERE: Final = Path(__file__).resolve().parent
RESULTS: Final = HERE / "RESULTS.md"
BEGIN: Final = "<!-- compare:begin -->"
END: Final = "<!-- compare:end -->"
TIMEOUT: Final = 900.0  # seconds per workload process

W1_TARGET: Final = 1.05
W2_SEQUENTIAL_TARGET: Final = 1.3
W2_CONCURRENT_TARGET: Final = 4.0
W2_GROWTH_TARGET: Final = 12.0
W3_TARGET: Final = 0.97
IMPORT_TARGET: Final = 0.030  # seconds on top of anyio and pydantic

BASELINES: Final = ("AsyncExitStack", "ideal task group")
LIFESPAN_KIT: Final = ("lifespan_kit concurrent", "lifespan_kit sequential")
DISTRIBUTIONS: Final = (
    "anyio",
    "trio",
    "pydantic",
    "fastapi",
    "starlette",
    "dishka",
    "svcs",
    "that-depends",
    "dependency-injector",
    "wireup",
    "aiomisc",
    "fastapi-lifespan-manager",
)

JSON = dict[str, object]
Row = dict[str, object]


# --- Running the workloads ------------------------------------------------------


def run_workload(name: str, backend: str | None, arguments: argparse.Namespace) -> JSON:
    """Run one workload in a fresh interpreter; return its JSON, or an error."""
    command = [
        sys.executable,
        str(HERE / "workloads.py"),
        name,
        "--seed",
        str(arguments.seed),
    ]
    if backend is not None:
        command += ["--backend", backend]
    if arguments.quick:
        command.append("--quick")
    title = f"{name} {backend or ''}".strip()
    print(f"running {title} ...", file=sys.stderr, flush=True)
    began = time.perf_counter()
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        return {"failed": f"{title} did not finish within {TIMEOUT:.0f} s"}
    print(
        f"  {title}: {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        return {"failed": f"{title} exited with {done.returncode}:\n{tail}"}
    return cast("JSON", json.loads(lines[-1]))


# --- Formatting ------------------------------------------------------------------


@dataclass
class Footnotes:
    """Numbered reasons for n/a cells, printed under a table."""

    reasons: list[str] = field(default_factory=list)

    def mark(self, reason: str) -> str:
        if reason not in self.reasons:
            self.reasons.append(reason)
        return f"n/a [{self.reasons.index(reason) + 1}]"

    def lines(self) -> list[str]:
        return [f"  [{i}] {reason}" for i, reason in enumerate(self.reasons, 1)]


def _rows(result: JSON) -> list[Row]:
    return cast("list[Row]", result.get("rows", []))


def _strings(result: JSON, key: str) -> dict[str, str]:
    return cast("dict[str, str]", result.get(key, {}))


def _float(row: Row, key: str) -> float:
    return float(cast("float", row[key]))


def _labels(result: JSON) -> list[str]:
    """Every library row, in the order the adapters were loaded."""
    return list(cast("dict[str, object]", result.get("backends", {})))


def _absent(result: JSON, label: str, backend: str, notes: Footnotes) -> str:
    backends = cast("dict[str, list[str]]", result.get("backends", {}))
    errors = _strings(result, "errors")
    if label in errors:
        return notes.mark(f"{label} failed: {errors[label]}")
    if backend not in backends.get(label, [backend]):
        return notes.mark(f"{label} does not run on {backend}")
    return notes.mark(f"{label}: no result")


def _failed(title: str, result: JSON) -> list[str] | None:
    if "failed" in result:
        return [title, f"  FAILED: {result['failed']}"]
    return None


def _verdict(met: bool) -> str:
    return "met" if met else "NOT MET"


def format_w1(backend: str, seed: int, result: JSON) -> tuple[list[str], list[str]]:
    """Return W1's table and its target lines."""
    dag = make_dag(seed)
    start_cp, start_path = critical_path(dag, dag.start)
    stop_cp, _ = critical_path(dag, dag.stop)
    title = f"[{backend}] W1 latency"
    failed = _failed(title, result)
    if failed:
        return failed, [f"  W1 {backend}: no result"]
    rows = {cast("str", row["label"]): row for row in _rows(result)}
    runs = next(iter(rows.values()))["runs"] if rows else 0
    ideal = rows.get("ideal task group")
    edges = sum(len(d) for d in dag.dependencies)
    lines = [
        f"{title}: {len(dag.names)} resources, {edges} dependencies (seed {seed}), "
        f"median of {runs} runs",
        f"  start: critical path {start_cp * 1000:.1f} ms over {len(start_path)} "
        f"resources, sum {sum(dag.start) * 1000:.1f} ms",
        f"  stop:  critical path {stop_cp * 1000:.1f} ms, "
        f"sum {sum(dag.stop) * 1000:.1f} ms",
        "",
        f"  {'library':<28} {'startup ms':>10} {'/ cp':>6} {'/ ideal':>7}  "
        f"{'teardown ms':>11} {'/ cp':>6} {'/ ideal':>7}  {'violations/run':>14}",
    ]
    notes = Footnotes()
    for label in [*BASELINES, *_labels(result)]:
        name = f"{label} (baseline)" if label in BASELINES else label
        row = rows.get(label)
        if row is None:
            lines.append(f"  {name:<28} {_absent(result, label, backend, notes):>10}")
            continue
        startup, teardown = _float(row, "startup"), _float(row, "teardown")
        per_run = cast("int", row["violations"]) / cast("int", row["runs"])
        ideal_start = _float(ideal, "startup") if ideal else math.nan
        ideal_stop = _float(ideal, "teardown") if ideal else math.nan
        lines.append(
            f"  {name:<28} {startup * 1000:>10.1f} {startup / start_cp:>6.2f} "
            f"{startup / ideal_start:>7.2f}  {teardown * 1000:>11.1f} "
            f"{teardown / stop_cp:>6.2f} {teardown / ideal_stop:>7.2f}  {per_run:>14g}"
        )
    lines += notes.lines()
    targets = []
    row = rows.get("lifespan_kit concurrent")
    if row is not None:
        start_ratio = _float(row, "startup") / start_cp
        stop_ratio = _float(row, "teardown") / stop_cp
        met = start_ratio <= W1_TARGET and stop_ratio <= W1_TARGET
        met = met and cast("int", row["violations"]) == 0
        targets.append(
            f"  W1 {backend}, lifespan_kit concurrent: startup {start_ratio:.2f} and "
            f"teardown {stop_ratio:.2f} x critical path <= {W1_TARGET:.2f}, "
            f"{row['violations']} violations: {_verdict(met)}"
        )
        if ideal is not None:
            targets.append(
                f"    (ideal task group, same run: startup "
                f"{_float(ideal, 'startup') / start_cp:.2f}, teardown "
                f"{_float(ideal, 'teardown') / stop_cp:.2f})"
            )
    return lines, targets


def _w2_cell(row: Row | None) -> str:
    if row is None:
        return ""
    return f"{_float(row, 'ratio'):.2f} ({_float(row, 'per_resource') * 1e6:.1f})"


def _growth(first: Row | None, second: Row | None, key: str, factor: float) -> float:
    if first is None or second is None:
        return math.nan
    return _float(second, key) / _float(first, key) * factor


def format_w2(backend: str, result: JSON) -> tuple[list[str], list[str]]:
    """Return W2's two tables (start + stop, build) and its target lines."""
    title = f"[{backend}] W2 overhead"
    failed = _failed(title, result)
    if failed:
        return failed, [f"  W2 {backend}: no result"]
    per_size = cast("list[JSON]", result["sizes"])
    sizes = [cast("int", s["size"]) for s in per_size]
    tables = {
        cast("int", s["size"]): {cast("str", r["label"]): r for r in _rows(s)}
        for s in per_size
    }
    errors: dict[str, str] = {}
    for s in per_size:
        errors.update(_strings(s, "errors"))
    skipped = _strings(result, "skipped")
    rounds = ", ".join(
        f"N={size}: {tables[size]['AsyncExitStack']['rounds']}" for size in sizes
    )
    big = 10000 in sizes and 1000 in sizes
    header = f"  {'library':<28}" + "".join(f" {'N=' + str(n):>15}" for n in sizes)
    header += f" {'10000/1000':>10}" if big else ""
    lines = [
        f"{title}: N independent no-op resources, start + stop all",
        "  ratio to AsyncExitStack in the same round, median over rounds "
        "(in brackets: us per resource)",
        f"  rounds (fewer for a library whose samples are slow): {rounds}",
        "",
        header,
    ]
    build_lines = [
        f"{title}: declaring and validating the graph, ms (build; median of up to 5)",
        "",
        f"  {'library':<28}"
        + "".join(f" {'N=' + str(n):>10}" for n in sizes)
        + (f" {'10000/1000':>10}" if big else ""),
    ]
    notes = Footnotes()
    for label in ["AsyncExitStack", *_labels(result)]:
        name = f"{label} (baseline)" if label == "AsyncExitStack" else label
        found = [tables[size].get(label) for size in sizes]
        if all(row is None for row in found):
            reason = skipped.get(label)
            cell = notes.mark(f"{label}: {reason}") if reason else None
            cell = cell or _absent(result, label, backend, notes)
            lines.append(f"  {name:<28} {cell:>15}")
            continue
        cells = []
        for row in found:
            if row is not None:
                cells.append(_w2_cell(row))
            elif label in errors:
                cells.append(notes.mark(f"{label} failed: {errors[label]}"))
            else:
                cells.append(notes.mark(f"{label}: {skipped.get(label, 'no result')}"))
        line = f"  {name:<28}" + "".join(f" {cell:>15}" for cell in cells)
        if big:
            growth = _growth(
                tables[1000].get(label), tables[10000].get(label), "per_resource", 10
            )
            line += f" {growth:>10.1f}" if not math.isnan(growth) else f" {'':>10}"
        lines.append(line)
        if label != "AsyncExitStack":
            builds = [
                f"{_float(row, 'build') * 1000:>10.2f}"
                if row is not None
                else f"{'':>10}"
                for row in found
            ]
            line = f"  {name:<28}" + "".join(f" {b}" for b in builds)
            if big:
                growth = _growth(
                    tables[1000].get(label), tables[10000].get(label), "build", 1
                )
                line += f" {growth:>10.1f}" if not math.isnan(growth) else ""
            build_lines.append(line)
    lines += notes.lines()
    if big:
        lines.append("  10000/1000: time for N=10000 / time for N=1000 (linear: 10)")
        build_lines.append(
            "  10000/1000: build time for N=10000 / for N=1000 (linear: 10)"
        )
    targets = []
    at_1000 = tables.get(1000, {})
    for label, target in zip(
        LIFESPAN_KIT, (W2_CONCURRENT_TARGET, W2_SEQUENTIAL_TARGET), strict=True
    ):
        row = at_1000.get(label)
        if row is not None:
            ratio = _float(row, "ratio")
            targets.append(
                f"  W2 {backend}, {label}, N=1000: ratio {ratio:.2f} <= {target:.1f}: "
                f"{_verdict(ratio <= target)}"
            )
        if big:
            growth = _growth(
                at_1000.get(label), tables[10000].get(label), "per_resource", 10
            )
            base = _growth(
                at_1000.get("AsyncExitStack"),
                tables[10000].get("AsyncExitStack"),
                "per_resource",
                10,
            )
            if not math.isnan(growth):
                targets.append(
                    f"  W2 {backend}, {label}: N=10000 takes {growth:.1f} x N=1000 "
                    f"<= {W2_GROWTH_TARGET:.0f}: {_verdict(growth <= W2_GROWTH_TARGET)}"
                    f" (AsyncExitStack: {base:.1f})"
                )
    return [*lines, "", *build_lines], targets


def format_w3(backend: str, result: JSON) -> tuple[list[str], list[str]]:
    title = f"[{backend}] W3 requests"
    failed = _failed(title, result)
    if failed:
        return failed, [f"  W3 {backend}: no result"]
    rows = {cast("str", row["label"]): row for row in _rows(result)}
    calls = max((cast("int", r["calls"]) for r in rows.values()), default=0)
    lines = [
        f"{title}: FastAPI, GET with two app-lifetime resources, "
        f"{calls} in-process ASGI calls per library in interleaved rounds",
        "  / baseline: the baseline's time per round / the library's, "
        "median over rounds",
        "",
        f"  {'library':<28} {'req/s':>8} {'us/req':>8} {'/ baseline':>10}",
    ]
    notes = Footnotes()
    unsupported = _strings(result, "unsupported")
    errors = _strings(result, "errors")
    labels = [*rows, *[label for label in (*errors, *unsupported) if label not in rows]]
    for label in labels:
        row = rows.get(label)
        if row is None:
            reason = errors.get(label) or unsupported[label]
            cell = notes.mark(f"{label}: {reason}")
            lines.append(f"  {label:<28} {cell:>8}")
            continue
        per_request = _float(row, "per_request")
        lines.append(
            f"  {label:<28} {1 / per_request:>8.0f} {per_request * 1e6:>8.1f} "
            f"{_float(row, 'ratio'):>10.2f}"
        )
    lines += notes.lines()
    targets = [
        f"  W3 {backend}, {label}: {_float(row, 'ratio'):.2f} x the request.state "
        f"baseline >= {W3_TARGET:.2f}: {_verdict(_float(row, 'ratio') >= W3_TARGET)}"
        for label, row in rows.items()
        if label.startswith("lifespan_kit")
    ]
    return lines, targets


def format_imports(result: JSON) -> tuple[list[str], list[str]]:
    title = "Import time"
    failed = _failed(title, result)
    if failed:
        return failed, ["  import time: no result"]
    lines = [
        f"{title}: ms, median of {result['repeat']} fresh interpreters, "
        "in interleaved rounds (bytecode caches written first)",
        "",
        f"  {'library':<28} {'alone':>8} {'after fastapi':>13} "
        f"{'+ integration':>13}  integration module",
    ]
    for row in _rows(result):
        integration = _float(row, "with_integration")
        cell = (
            f"{integration * 1000:>13.1f}"
            if not math.isnan(integration)
            else f"{'-':>13}"
        )
        lines.append(
            f"  {cast('str', row['label']):<28} {_float(row, 'alone') * 1000:>8.1f} "
            f"{_float(row, 'after_fastapi') * 1000:>13.1f} {cell}  "
            f"{row['integration'] or '-'}"
        )
    lines.extend(
        f"  {label} failed: {error}"
        for label, error in _strings(result, "errors").items()
    )
    reference = cast("dict[str, float]", result["reference"])
    lines.append("")
    lines.extend(
        f"  {label}: {seconds * 1000:.1f}" for label, seconds in reference.items()
    )
    on_top = reference.get("lifespan_kit after anyio + pydantic.BaseModel")
    if on_top is None:
        return lines, ["  import time of lifespan_kit: no result"]
    targets = [
        f"  from lifespan_kit import Registry, Bundle, after anyio + "
        "pydantic.BaseModel: "
        f"{on_top * 1000:.1f} ms <= "
        f"{IMPORT_TARGET * 1000:.0f} ms: {_verdict(on_top <= IMPORT_TARGET)}"
    ]
    return lines, targets


def notes_lines(results: Sequence[JSON]) -> list[str]:
    """How each library was used, and what it cannot do, once for all tables."""
    notes: dict[str, list[str]] = {}
    missing: dict[str, str] = {}
    for result in results:
        notes.update(cast("dict[str, list[str]]", result.get("notes", {})))
        missing.update(_strings(result, "missing"))
    lines = ["Notes on the libraries"]
    for label, found in notes.items():
        lines.extend(f"  {label}: {note}" for note in found)
    lines.extend(f"  {module}: {why}" for module, why in missing.items())
    return lines


# --- Driver ----------------------------------------------------------------------


def write_results(text: str, command: str) -> None:
    section = f"{BEGIN}\n## `{command}`\n\n```text\n{text}\n```\n{END}"
    current = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""
    if BEGIN in current and END in current:
        before, rest = current.split(BEGIN, 1)
        after = rest.split(END, 1)[1]
        updated = before + section + after
    else:
        updated = current.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS.write_text(updated, encoding="utf-8")


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer repetitions, no N=10000"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the W1 graph")
    parser.add_argument(
        "--no-write", action="store_true", help="print only; leave RESULTS.md alone"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    command = " ".join(["python3 tasks.py compare", *sys.argv[1:]])
    began = time.perf_counter()
    sections: list[list[str]] = []
    targets: list[str] = []
    results: list[JSON] = []
    plan: list[
        tuple[str, str | None, Callable[[JSON], tuple[list[str], list[str]]]]
    ] = [
        ("w1", "asyncio", lambda r: format_w1("asyncio", arguments.seed, r)),
        ("w1", "trio", lambda r: format_w1("trio", arguments.seed, r)),
        ("w2", "asyncio", lambda r: format_w2("asyncio", r)),
        ("w2", "trio", lambda r: format_w2("trio", r)),
        ("w3", "asyncio", lambda r: format_w3("asyncio", r)),
        ("w3", "trio", lambda r: format_w3("trio", r)),
        ("imports", None, format_imports),
    ]
    for name, backend, formatter in plan:
        result = run_workload(name, backend, arguments)
        results.append(result)
        table, found = formatter(result)
        sections.append(table)
        targets += found
        print("\n".join(table), "", sep="\n", flush=True)
    minutes = (time.perf_counter() - began) / 60
    head = [
        f"lifespan_kit against other libraries: {command}",
        f"  seed {arguments.seed}, {'quick' if arguments.quick else 'full'} run, "
        f"{minutes:.1f} min; each workload and backend ran in its own process",
    ]
    tail = [
        ["Targets (lifespan_kit)", *targets],
        notes_lines(results),
        machine_lines(DISTRIBUTIONS),
    ]
    for block in tail:
        print("\n".join(block), "", sep="\n", flush=True)
    text = "\n\n".join("\n".join(block) for block in [head, *sections, *tail])
    if not arguments.no_write:
        write_results(text, command)
        print(f"written to {RESULTS.relative_to(HERE.parent)}", file=sys.stderr)


if __name__ == "__main__":
    main()
