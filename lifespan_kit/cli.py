"""The `lifespan-kit` command: run a worker, check a registry, draw its graph.

```text
lifespan-kit run pkg.module:main          run a worker, as lifespan_kit.run does
lifespan-kit check pkg.module:registry    validate the graph; start nothing
lifespan-kit graph pkg.module:registry    print the graph as text, Mermaid or DOT
lifespan-kit --version                    print the installed version
```

`python -m lifespan_kit` is the same command. A target's module may also be
the path of its file (``app.py:registry``). Exit statuses: those of
[lifespan_kit.run][lifespan_kit.run] for `run`; 0, or 1 for an invalid graph
(drawn all the same by `graph`), for `check` and `graph`; 2 for bad input (a
module that does not import, a missing attribute, an object of the wrong kind,
and for `run` an invalid graph), reported in one line without a traceback
unless `--traceback` is given.

Added in 0.1.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import sys
import traceback
from collections.abc import Awaitable, Callable, Generator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Final, cast

import lifespan_kit
from lifespan_kit import Registry
from lifespan_kit._bundle import bundle_resource_names
from lifespan_kit._console import Display, DisplayHandler
from lifespan_kit._drawing import (
    create_nodes,
    reachable_names,
    render_dot,
    render_mermaid,
    render_text,
)
from lifespan_kit._redirect import redirect_outside_writes
from lifespan_kit._runner import DEFAULT_SHUTDOWN_TIMEOUT
from lifespan_kit._target import (
    InputError,
    fail,
    find_registry,
    load,
    load_bundle,
    load_registry,
)
from lifespan_kit.errors import DefinitionError, GraphError

__all__ = ["main"]

EXIT_INVALID: Final = 1
EXIT_USAGE: Final = 2
PROG: Final = "lifespan-kit"
LOG_FORMAT: Final = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with `argv` (default: `sys.argv[1:]`).

    Returns:
        The exit status.

    Example:
        ```python
        from lifespan_kit.cli import main

        status = main(["check", "app:registry"])  # as `lifespan-kit check app:registry`
        sys.exit(status)
        ```

    Added in 0.1.
    """
    args = _parser().parse_args(argv)
    _add_working_directory_to_path()
    command = cast("Callable[[argparse.Namespace], int]", args.command)
    try:
        return command(args)
    except InputError as exc:
        if args.traceback:
            traceback.print_exception(exc.__cause__ or exc, file=sys.stderr)
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return EXIT_USAGE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run a lifespan_kit worker, or check and draw its resource graph.",
    )
    parser.add_argument(
        "--version", action="version", version=f"lifespan_kit {_version()}"
    )
    commands = parser.add_subparsers(required=True, metavar="command")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--traceback",
        action="store_true",
        help="show the full traceback when the input cannot be loaded",
    )

    run = commands.add_parser(
        "run",
        parents=[common],
        help="run a worker's async main function with its resources",
        description=(
            "Start the resources main() needs, run it, stop them in reverse; "
            "exit 0, 1 (failure), 3 (startup failed), 130 or 143 (signal)."
        ),
    )
    run.add_argument("target", help="the main function, as package.module:main")
    run.add_argument(
        "--registry",
        metavar="TARGET",
        help="the registry, as package.module:registry (default: the only "
        "Registry in main's module)",
    )
    run.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    run.add_argument(
        "--shutdown-timeout",
        type=float,
        default=DEFAULT_SHUTDOWN_TIMEOUT,
        metavar="SECONDS",
        help="seconds the whole shutdown may take (default: %(default)g)",
    )
    run.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="start at most N resources at once (1: one by one, in order)",
    )
    run.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="the level of log lines shown (default: info)",
    )
    run.add_argument(
        "--report-file",
        type=Path,
        metavar="PATH",
        help="write each resource's outcome as JSON, for `graph --report`",
    )
    run.set_defaults(command=_run)

    for name, handler, summary in (
        ("check", _check, "validate a registry's graph without starting anything"),
        ("graph", _graph, "print a registry's dependency graph"),
    ):
        sub = commands.add_parser(name, parents=[common], help=summary)
        sub.add_argument("target", help="the registry, as package.module:registry")
        sub.add_argument(
            "--bundle",
            metavar="TARGET",
            help="only what this Bundle class needs, as package.module:Resources",
        )
        sub.set_defaults(command=handler)
        if name == "graph":
            sub.add_argument(
                "--format", choices=("text", "mermaid", "dot"), default="text"
            )
            sub.add_argument(
                "--report",
                type=Path,
                metavar="PATH",
                help="mark each resource's outcome, from `run --report-file`",
            )
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("lifespan_kit")
    except importlib.metadata.PackageNotFoundError:
        return "(version unknown: not installed as a distribution)"


def _add_working_directory_to_path() -> None:
    """Import the user's modules from the working directory, as `python -m` does."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


# --- run ---------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    function, module = load(args.target, "main")
    if isinstance(function, Registry):
        fail(
            f"'{args.target}' is a Registry; `run` needs the worker's async main "
            f"function (to validate a registry: {PROG} check {args.target})."
        )
    registry = (
        find_registry(module) if args.registry is None else load_registry(args.registry)
    )
    stream = sys.stderr
    is_live = stream.isatty() and os.environ.get("TERM") != "dumb"
    display = Display(
        stream, is_live=is_live, has_color=is_live and "NO_COLOR" not in os.environ
    )
    with (
        _logging(display, args.log_level.upper(), is_live=is_live),
        display,
        redirect_outside_writes(display.write_above, stream)
        if is_live
        else nullcontext(),
    ):
        try:
            status = lifespan_kit.run(
                # run() checks what it is given, and raises InvalidMainError.
                cast("Callable[[], Awaitable[None]]", function),
                registry,
                backend=args.backend,
                shutdown_timeout=args.shutdown_timeout,
                concurrency=args.concurrency,
                listeners=[display.listen],
            )
        except DefinitionError as exc:
            fail(str(exc), cause=exc)
    if args.report_file is not None:
        _write_report(args.report_file, display, status)
    return status


@contextmanager
def _logging(
    display: Display, level: str, *, is_live: bool
) -> Generator[None, None, None]:
    """Send log records through the display while the worker runs.

    lifespan_kit's own records always go there, the root logger's only when
    the app configured no handler of its own. Off a terminal, each resource's
    start and stop is a line at INFO (the logger writes them at DEBUG), in
    place of the live block.
    """
    handler = DisplayHandler(display)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.setLevel(level)
    ours = logging.getLogger("lifespan_kit")
    root = logging.getLogger()
    saved = (ours.level, ours.propagate, root.level)
    configures_root = not root.handlers
    events = _EventsAtInfo()
    ours.addHandler(handler)
    ours.addFilter(events)
    ours.propagate = False
    ours.setLevel("DEBUG" if not is_live else level)
    if configures_root:
        root.addHandler(handler)
        root.setLevel(level)
    try:
        yield
    finally:
        ours.removeHandler(handler)
        ours.removeFilter(events)
        root.removeHandler(handler)
        # setLevel, not the attribute: it also clears the loggers' level cache.
        ours.setLevel(saved[0])
        ours.propagate = saved[1]
        root.setLevel(saved[2])


class _EventsAtInfo(logging.Filter):
    """Raise the records of resource events (starting, started...) to INFO.

    The library logs them at DEBUG; under the command line they are the
    progress of the run, shown at the default level.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.DEBUG and hasattr(record, "lifespan_kit_event"):
            record.levelno = logging.INFO
            record.levelname = logging.getLevelName(logging.INFO)
        return True


def _write_report(path: Path, display: Display, status: int) -> None:
    tracker = display.tracker
    report = {
        "exit_status": status,
        "resources": {
            name: {
                "outcome": tracker.outcome(row),
                "start_seconds": row.start_duration,
                "stop_seconds": row.stop_duration,
                "error": row.error,
            }
            for name, row in tracker.rows.items()
        },
    }
    try:
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        fail(
            f"cannot write the report to '{path}': {exc}",
            cause=exc,
        )


# --- check and graph ---------------------------------------------------------


def _check(args: argparse.Namespace) -> int:
    registry = load_registry(args.target)
    bundle = load_bundle(args.bundle)
    try:
        names = registry.check(bundle)
    except GraphError as exc:
        return _invalid(args.target, exc)
    sys.stdout.write(
        f"{args.target}: OK; {len(names)} resource(s) would start, in this order: "
        f"{', '.join(names) or '(none)'}.\n"
    )
    return 0


def _invalid(target: str, exc: GraphError) -> int:
    sys.stderr.write(f"{target}: {exc}\n")
    return EXIT_INVALID


def _graph(args: argparse.Namespace) -> int:
    registry = load_registry(args.target)
    bundle = load_bundle(args.bundle)
    outcomes = None if args.report is None else _read_report(args.report)
    error: GraphError | None = None
    try:
        names = list(registry.check(bundle))
    except GraphError as exc:
        # Drawn all the same: the picture of what is wrong.
        error = exc
        roots = None if bundle is None else bundle_resource_names(bundle)
        names = reachable_names(registry, roots)
    nodes = create_nodes(
        registry,
        names,
        outcomes=outcomes,
        problems=() if error is None else error.problems,
    )
    render = {"text": render_text, "mermaid": render_mermaid, "dot": render_dot}
    sys.stdout.write("\n".join(render[args.format](nodes)) + "\n")
    if error is not None:
        sys.stdout.flush()  # the drawing first, then the problems
        return _invalid(args.target, error)
    return 0


def _read_report(path: Path) -> dict[str, str]:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        resources = report["resources"]
        return {str(name): str(entry["outcome"]) for name, entry in resources.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        fail(
            f"cannot read the report '{path}' ({type(exc).__name__}: {exc}); "
            f"write one with `{PROG} run --report-file`.",
            cause=exc,
        )
