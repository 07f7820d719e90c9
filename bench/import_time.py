"""Time `from lifespan_kit import Registry, Bundle` after anyio and pydantic, per tree.

The figure `python3 tasks.py compare` reports as "lifespan_kit after anyio +
pydantic.BaseModel", measured the same way (`workloads.time_import`: a fresh
interpreter per sample, wall time) for one or more source trees, in
interleaved rounds so that a busy machine weighs on each tree alike. The
reference import itself is timed in the same rounds, to show how busy the
machine was; CPU time is reported as well, being less sensitive to that.

Usage::

    python bench/import_time.py [--rounds N] TREE [TREE ...]

where each TREE is a folder that holds a ``lifespan_kit`` package, such as a
git worktree of another branch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from workloads import time_import

BEFORE = ("anyio", "pydantic:BaseModel")
CPU_SCRIPT = """\
import time
import anyio
import pydantic
pydantic.BaseModel
began = time.process_time()
from lifespan_kit import Registry, Bundle
print(time.process_time() - began)
"""


def cpu_time(tree: Path) -> float:
    """CPU seconds of the import from `tree`, in a fresh interpreter."""
    result = subprocess.run(
        (sys.executable, "-c", CPU_SCRIPT),
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(tree)},
        timeout=120,
    )
    return float(result.stdout)


def wall_time(tree: Path) -> float:
    """Wall seconds of the import from `tree`, as the comparison takes it."""
    os.environ["PYTHONPATH"] = str(tree)
    found = time_import(BEFORE, ("lifespan_kit:Registry", "lifespan_kit:Bundle"))
    if isinstance(found, str):
        sys.exit(f"importing lifespan_kit from {tree} failed: {found}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", type=Path, metavar="TREE")
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    trees: list[Path] = [tree.resolve() for tree in args.trees]
    for tree in trees:  # write the bytecode caches first
        wall_time(tree)
    wall: dict[Path, list[float]] = {tree: [] for tree in trees}
    cpu: dict[Path, list[float]] = {tree: [] for tree in trees}
    reference: list[float] = []
    for _ in range(args.rounds):
        for tree in trees:
            wall[tree].append(wall_time(tree))
            cpu[tree].append(cpu_time(tree))
        found = time_import((), BEFORE)
        if not isinstance(found, str):
            reference.append(found)
    print(f"median of {args.rounds} fresh interpreters, interleaved, in ms")
    for tree in trees:
        print(
            f"  {tree}: wall {statistics.median(wall[tree]) * 1000:.1f}, "
            f"CPU {statistics.median(cpu[tree]) * 1000:.1f}"
        )
    print(f"  reference, anyio + pydantic.BaseModel: wall {_ms(reference)}")


def _ms(seconds: list[float]) -> str:
    return f"{statistics.median(seconds) * 1000:.1f}" if seconds else "failed"


if __name__ == "__main__":
    main()
