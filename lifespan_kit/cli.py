"""The `lifespan-kit` command: run a worker, check a registry, draw its graph.

```text
lifespan-kit run pkg.module:main          run a worker, as lifespan_kit.run does
lifespan-kit check pkg.module:registry    validate the graph; start nothing
lifespan-kit graph pkg.module:registry    print the graph as text, Mermaid or DOT
```

`python -m lifespan_kit` is the same command. Exit statuses: those of
[lifespan_kit.run][lifespan_kit.run] for `run`; 0, or 1 for an invalid graph,
for `check` and `graph`; 2 for bad input (a module that does not import, a
missing attribute, an object of the wrong kind), reported in one line without
a traceback unless `--traceback` is given.

Added in 0.1.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Awaitable, Callable, Generator, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import ModuleType
from typing import Final, NoReturn, TypeGuard, cast

import lifespan_kit
from lifespan_kit import Bundle, Registry, Resource
from lifespan_kit._console import Display, DisplayHandler
from lifespan_kit._redirect import redirect_outside_writes
from lifespan_kit._runner import DEFAULT_SHUTDOWN_TIMEOUT
from lifespan_kit.errors import DefinitionError, GraphError

__all__ = ["main"]

EXIT_INVALID: Final = 1
EXIT_USAGE: Final = 2
PROG: Final = "lifespan-kit"
LOG_FORMAT: Final = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

_KIND_LABELS: Final = {
    "async_generator": "async generator",
    "coroutine": "async function",
    "generator": "generator",
    "callable": "callable",
    "value": "value",
    "background": "background task",
}


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
    except _InputError as exc:
        if args.traceback:
            traceback.print_exception(exc.__cause__ or exc, file=sys.stderr)
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return EXIT_USAGE


class _InputError(Exception):
    """The command's input cannot be used; its message is the one line shown."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run a lifespan_kit worker, or check and draw its resource graph.",
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


def _add_working_directory_to_path() -> None:
    """Import the user's modules from the working directory, as `python -m` does."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


# --- loading -----------------------------------------------------------------


def _load(target: str, default_attribute: str) -> tuple[object, ModuleType]:
    """Import ``module:attribute`` and return the attribute and its module."""
    module_name, _, attribute = target.partition(":")
    attribute = attribute or default_attribute
    if not module_name:
        _fail(f"'{target}' names no module; write 'package.module:{attribute}'.")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        _fail(
            f"cannot import module '{module_name}': {type(exc).__name__}: {exc}",
            cause=exc,
        )
    found: object = module
    for part in attribute.split("."):
        parent, found = found, getattr(found, part, _MISSING)
        if found is _MISSING:
            close = difflib.get_close_matches(part, dir(parent), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else "."
            _fail(f"module '{module_name}' has no attribute '{attribute}'{hint}")
    return found, module


_MISSING: Final = object()


def _load_registry(target: str) -> Registry:
    found, _ = _load(target, "registry")
    if not isinstance(found, Registry):
        _fail(f"'{target}' is {_describe(found)}, not a lifespan_kit.Registry.")
    return found


def _load_bundle(target: str | None) -> type[Bundle] | None:
    if target is None:
        return None
    found, _ = _load(target, "Resources")
    if not _is_bundle(found):
        _fail(f"'{target}' is {_describe(found)}, not a lifespan_kit.Bundle subclass.")
    return found


def _is_bundle(found: object) -> TypeGuard[type[Bundle]]:
    return isinstance(found, type) and issubclass(found, Bundle)


def _find_registry(module: ModuleType) -> Registry:
    """Return the one `Registry` among a module's globals."""
    found = {id(v): v for v in vars(module).values() if isinstance(v, Registry)}
    if len(found) == 1:
        return next(iter(found.values()))
    many = f"{len(found)} registries" if found else "no Registry"
    _fail(
        f"module '{module.__name__}' has {many}; pass --registry "
        "package.module:registry."
    )


def _describe(found: object) -> str:
    if isinstance(found, ModuleType):
        return f"the module {found.__name__}"
    if isinstance(found, type):
        return f"the class {found.__qualname__}"
    if callable(found):
        return f"the callable {getattr(found, '__qualname__', repr(found))}"
    return f"an instance of {type(found).__qualname__}"


def _fail(message: str, *, cause: BaseException | None = None) -> NoReturn:
    raise _InputError(message) from cause


# --- run ---------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    function, module = _load(args.target, "main")
    if isinstance(function, Registry):
        _fail(
            f"'{args.target}' is a Registry; `run` needs the worker's async main "
            f"function (to validate a registry: {PROG} check {args.target})."
        )
    registry = (
        _find_registry(module)
        if args.registry is None
        else _load_registry(args.registry)
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
            _fail(str(exc), cause=exc)
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
        _fail(
            f"cannot write the report to '{path}': {exc}",
            cause=exc,
        )


# --- check and graph ---------------------------------------------------------


def _check(args: argparse.Namespace) -> int:
    registry = _load_registry(args.target)
    bundle = _load_bundle(args.bundle)
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
    count = len(exc.problems)
    sys.stderr.write(f"{target}: the graph has {count} problem(s).\n{exc}\n")
    return EXIT_INVALID


def _graph(args: argparse.Namespace) -> int:
    registry = _load_registry(args.target)
    bundle = _load_bundle(args.bundle)
    try:
        names = registry.check(bundle)
    except GraphError as exc:
        return _invalid(args.target, exc)
    outcomes = None if args.report is None else _read_report(args.report)
    nodes = _nodes(registry, names, outcomes)
    render = {"text": _text, "mermaid": _mermaid, "dot": _dot}[args.format]
    sys.stdout.write("\n".join(render(nodes)) + "\n")
    return 0


class _Node:
    """One resource as the graph shows it."""

    def __init__(
        self,
        name: str,
        *,
        kind: str,
        wave: int,
        dependencies: list[str],
        timeouts: str,
        outcome: str | None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.wave = wave
        self.dependencies = dependencies
        self.timeouts = timeouts
        self.outcome = outcome

    @property
    def style(self) -> str:
        """How the outcome is coloured: ok, failed, rolled_back or not_started."""
        if self.outcome in (None, "not started"):
            return "not_started"
        if "fail" in self.outcome:
            return "failed"
        return "rolled_back" if self.outcome == "rolled back" else "ok"


def _nodes(
    registry: Registry, names: Sequence[str], outcomes: dict[str, str] | None
) -> list[_Node]:
    waves: dict[str, int] = {}
    nodes: list[_Node] = []
    for name in names:
        resource = registry[name]
        dependencies = list(
            dict.fromkeys(d.resource_name for d in resource.dependencies)
        )
        waves[name] = 1 + max((waves[d] for d in dependencies), default=-1)
        nodes.append(
            _Node(
                name,
                kind=_KIND_LABELS[resource.kind],
                wave=waves[name],
                dependencies=dependencies,
                timeouts=_timeouts(resource, registry),
                outcome=None if outcomes is None else outcomes.get(name, "not started"),
            )
        )
    return nodes


def _timeouts(resource: Resource[object], registry: Registry) -> str:
    start, stop, _ = resource.timeouts.resolve(registry.defaults)
    if resource.kind == "value":
        return "-"
    if resource.kind == "background":
        return f"stop {_seconds(stop)}"
    return f"start {_seconds(start)}, stop {_seconds(stop)}"


def _seconds(value: float) -> str:
    return "none" if value == float("inf") else f"{value:g}s"


def _read_report(path: Path) -> dict[str, str]:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        resources = report["resources"]
        return {str(name): str(entry["outcome"]) for name, entry in resources.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        _fail(
            f"cannot read the report '{path}' ({type(exc).__name__}: {exc}); "
            f"write one with `{PROG} run --report-file`.",
            cause=exc,
        )


def _text(nodes: list[_Node]) -> Iterator[str]:
    columns = ["wave", "resource", "kind", "timeouts", "depends on"]
    with_outcome = any(node.outcome is not None for node in nodes)
    if with_outcome:
        columns.append("outcome")
    rows = [
        [
            str(node.wave),
            node.name,
            node.kind,
            node.timeouts,
            ", ".join(node.dependencies) or "-",
            *([node.outcome or ""] if with_outcome else []),
        ]
        for node in sorted(nodes, key=lambda node: node.wave)
    ]
    widths = [max(len(row[i]) for row in [columns, *rows]) for i in range(len(columns))]
    for row in [columns, *rows]:
        yield "  ".join(
            cell.ljust(width) for cell, width in zip(row, widths, strict=True)
        ).rstrip()


_MERMAID_STYLES: Final = {
    "ok": "fill:#e6f4ea,stroke:#1e8e3e",
    "failed": "fill:#fce8e6,stroke:#d93025,stroke-width:2px",
    "rolled_back": "fill:#fef7e0,stroke:#e37400",
    "not_started": "fill:#f1f3f4,stroke:#9aa0a6,stroke-dasharray:4 2",
}
_DOT_STYLES: Final = {
    "ok": 'style=filled, fillcolor="#e6f4ea", color="#1e8e3e"',
    "failed": 'style=filled, fillcolor="#fce8e6", color="#d93025", penwidth=2',
    "rolled_back": 'style=filled, fillcolor="#fef7e0", color="#e37400"',
    "not_started": 'style=dashed, color="#9aa0a6"',
}


def _mermaid(nodes: list[_Node]) -> Iterator[str]:
    # Node ids get a prefix: a resource may be named like a Mermaid keyword.
    yield "flowchart LR"
    for wave in sorted({node.wave for node in nodes}):
        yield f'    subgraph wave_{wave} ["wave {wave}"]'
        for node in (n for n in nodes if n.wave == wave):
            label = f"{node.name}<br/>{node.kind}<br/>{node.timeouts}"
            if node.outcome is not None:
                label += f"<br/><b>{node.outcome}</b>"
            yield f'        r_{node.name}["{label}"]'
        yield "    end"
    for node in nodes:
        for dependency in node.dependencies:
            yield f"    r_{dependency} --> r_{node.name}"
    if any(node.outcome is not None for node in nodes):
        for style, css in _MERMAID_STYLES.items():
            yield f"    classDef {style} {css}"
        for node in nodes:
            yield f"    class r_{node.name} {node.style}"


def _dot(nodes: list[_Node]) -> Iterator[str]:
    yield "digraph resources {"
    yield "    rankdir=LR;"
    yield "    node [shape=box];"
    for wave in sorted({node.wave for node in nodes}):
        members = " ".join(f'"{n.name}";' for n in nodes if n.wave == wave)
        yield f"    subgraph wave_{wave} {{ rank=same; {members} }}"
    for node in nodes:
        label = f"{node.name}\\n{node.kind}\\n{node.timeouts}"
        attributes = ""
        if node.outcome is not None:
            label += f"\\n{node.outcome}"
            attributes = f", {_DOT_STYLES[node.style]}"
        yield f'    "{node.name}" [label="{label}"{attributes}];'
    for node in nodes:
        for dependency in node.dependencies:
            yield f'    "{dependency}" -> "{node.name}";'
    yield "}"
