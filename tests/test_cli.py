"""The `lifespan-kit` command line, in-process: run, check, graph and bad input."""

from __future__ import annotations

import importlib
import importlib.metadata
import io
import json
import logging
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifespan_kit import Registry, ResourceEvent
from lifespan_kit._console import Display, DisplayHandler, Tracker, describe_error
from lifespan_kit.cli import main
from lifespan_kit.errors import BackgroundTaskError, StartupError
from tests import cli_apps

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def restore_signal_handlers() -> Iterator[None]:
    """`run` restores the handlers itself; this only guards the test process."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in previous.items():
        signal.signal(signum, handler)


class Terminal(io.StringIO):
    """An in-memory stream that says it is a terminal."""

    def __init__(self) -> None:
        super().__init__()
        self.starting_draws = 0
        self.redrawn = threading.Event()

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if "starting" in text:
            self.starting_draws += 1
            if self.starting_draws >= 2:  # the first draw is the event's own
                self.redrawn.set()
        return super().write(text)


# --- run ---------------------------------------------------------------------


def test_run_prints_log_lines_and_a_final_table_off_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    anyio_backend: str,
) -> None:
    """Off a terminal: one log line per start and stop, then the table; status 0."""
    monkeypatch.setenv("FAKE_WORKER_MODE", "return")
    status = main(
        ["run", "tests.fake_worker:main", "--backend", anyio_backend, "--concurrency=1"]
    )
    output = capsys.readouterr()
    assert status == 0
    assert output.out.splitlines()[:4] == [
        "start first",
        "start second",
        "start third",
        "running",
    ]
    lines = output.err.splitlines()
    assert any(line.endswith("Resource 'first' starting.") for line in lines)
    assert "\x1b[" not in output.err
    table = lines[lines.index(next(x for x in lines if x.startswith("resource "))) :]
    assert [row.split()[0] for row in table] == [
        "resource",
        "first",
        "second",
        "third",
        "main_is_running",
        "pulse",
    ]
    assert all(row.endswith("stopped") for row in table[1:])


@pytest.mark.parametrize(
    ("level", "shows_events"),
    [
        pytest.param("debug", True, id="debug"),
        pytest.param("info", True, id="info"),
        pytest.param("warning", False, id="warning"),
    ],
)
def test_log_level_is_respected_off_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    anyio_backend: str,
    level: str,
    shows_events: bool,
) -> None:
    """Each start and stop is an INFO line; nothing below the level is shown."""
    monkeypatch.setenv("FAKE_WORKER_MODE", "return")
    args = ["run", "tests.fake_worker:main", "--backend", anyio_backend]
    assert main([*args, "--log-level", level]) == 0
    err = capsys.readouterr().err
    assert " DEBUG " not in err
    event = "INFO    lifespan_kit: Resource 'first' started in "
    assert (event in err) is shows_events
    assert ("INFO    lifespan_kit: Resource 'first' starting." in err) is shows_events


def test_run_exits_with_the_runner_status(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    anyio_backend: str,
) -> None:
    """`run` has the runner's exit statuses: 3 when a resource failed to start."""
    monkeypatch.setenv("FAKE_WORKER_MODE", "fail-start:second")
    status = main(["run", "tests.fake_worker:main", "--backend", anyio_backend])
    table = capsys.readouterr().err.split("\nresource ")[-1].splitlines()
    assert status == 3
    assert [re.split(r"\s{2,}", row)[-1] for row in table[1:]] == [
        "rolled back",
        "failed to start: Resource 'second' failed during startup. "
        "(RuntimeError: second cannot start)",
    ]


def test_run_draws_a_live_table_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    """On a terminal, rows are redrawn in place, and tick while a start waits."""
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr(cli_apps, "TICK_SEEN", terminal.redrawn)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    status = main(
        [
            "run",
            "tests.cli_apps:slow_main",
            "--registry",
            "tests.cli_apps:slow",
            "--backend",
            anyio_backend,
        ]
    )
    output = terminal.getvalue()
    assert status == 0
    assert terminal.starting_draws >= 2
    assert "\r\x1b[1A\x1b[J" in output  # back up over the block, clear it
    assert "\x1b[33mstarting" in output  # in colour
    assert "Resource 'warming_up' starting." not in output  # the table says it
    # The app's log line is written above the block, which is drawn again.
    assert "INFO    tests.cli_apps: warm\n  warming_up" in output
    assert output.endswith("stopped\n")


@pytest.mark.parametrize(
    ("variable", "value", "escapes"),
    [
        pytest.param("NO_COLOR", "1", ["\r\x1b[1A"], id="no-color"),
        pytest.param("TERM", "dumb", [], id="dumb-terminal"),
    ],
)
def test_run_respects_no_color_and_dumb_terminals(
    monkeypatch: pytest.MonkeyPatch,
    anyio_backend: str,
    variable: str,
    value: str,
    escapes: list[str],
) -> None:
    """NO_COLOR keeps the live table without colours; TERM=dumb turns it off."""
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setenv(variable, value)
    terminal.redrawn.set()
    monkeypatch.setattr(cli_apps, "TICK_SEEN", terminal.redrawn)
    args = ["run", "tests.cli_apps:slow_main", "--registry", "tests.cli_apps:slow"]
    assert main([*args, "--backend", anyio_backend]) == 0
    output = terminal.getvalue()
    assert "\x1b[3" not in output
    assert [e for e in ["\r\x1b[1A"] if e in output] == escapes


def test_run_configures_the_root_logger_only_when_the_app_did_not(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    anyio_backend: str,
) -> None:
    """With no root handler, app logs are shown too; afterwards all is restored."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    level = root.level
    root.setLevel(logging.WARNING)
    monkeypatch.setattr(cli_apps, "TICK_SEEN", threading.Event())
    cli_apps.TICK_SEEN.set()
    args = ["run", "tests.cli_apps:slow_main", "--registry", "tests.cli_apps:slow"]
    assert main([*args, "--log-level", "debug", "--backend", anyio_backend]) == 0
    err = capsys.readouterr().err
    assert "INFO    tests.cli_apps: warm" in err
    assert root.handlers == []
    assert root.level == logging.WARNING
    root.setLevel(level)
    ours = logging.getLogger("lifespan_kit")
    assert ours.handlers == []
    assert not ours.isEnabledFor(logging.DEBUG)


def test_run_writes_a_report_for_graph(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    anyio_backend: str,
) -> None:
    """--report-file records each outcome; graph --report marks them."""
    monkeypatch.setenv("FAKE_WORKER_MODE", "return,fail-stop:second")
    report = tmp_path / "report.json"
    args = ["run", "tests.fake_worker:main", "--backend", anyio_backend]
    assert main([*args, "--report-file", str(report)]) == 1
    written = json.loads(report.read_text())
    assert written["exit_status"] == 1
    outcomes = {n: r["outcome"] for n, r in written["resources"].items()}
    assert outcomes == {
        "first": "stopped",
        "second": "failed to stop",
        "third": "stopped",
        "main_is_running": "stopped",
        "pulse": "stopped",
    }
    assert written["resources"]["second"]["error"] == (
        "Resource 'second' failed during shutdown. (RuntimeError: second cannot stop)"
    )
    capsys.readouterr()
    assert main(["graph", "tests.fake_worker:registry", "--report", str(report)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "wave  resource         kind             timeouts            depends on"
        "              outcome",
        "0     first            async generator  start 60s, stop 5s  -"
        "                       stopped",
        "0     main_is_running  callable         start 60s, stop 5s  -"
        "                       stopped",
        "1     second           async generator  start 60s, stop 5s  first"
        "                   failed to stop",
        "2     third            async generator  start 60s, stop 5s  second"
        "                  stopped",
        "3     pulse            background task  stop 5s             third, "
        "main_is_running  stopped",
    ]


def test_run_with_an_invalid_graph_exits_2(
    capsys: pytest.CaptureFixture[str], anyio_backend: str
) -> None:
    """A graph that cannot start is bad input for `run`: status 2, nothing started."""
    args = ["run", "tests.cli_apps:main", "--registry", "tests.cli_apps:tangled"]
    assert main([*args, "--backend", anyio_backend]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lifespan-kit: error: ")
    assert "'db'" in err.splitlines()[0]
    assert "\nresource " not in err  # no table: nothing ran


def test_a_report_that_cannot_be_written_is_bad_input(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    anyio_backend: str,
) -> None:
    """A report path that is a directory: exit 2, after the worker ran."""
    monkeypatch.setenv("FAKE_WORKER_MODE", "return")
    args = ["run", "tests.fake_worker:main", "--backend", anyio_backend]
    status = main([*args, "--report-file", str(tmp_path)])
    assert status == 2
    assert "lifespan-kit: error: cannot write the report to" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["run", "tests.cli_apps:registry"],
            "'tests.cli_apps:registry' is a Registry; `run` needs the worker's async "
            "main function (to validate a registry: lifespan-kit check "
            "tests.cli_apps:registry).",
            id="registry-as-main",
        ),
        pytest.param(
            ["run", "tests.cli_apps:main"],
            "module 'tests.cli_apps' has 4 registries; pass --registry "
            "package.module:registry.",
            id="several-registries",
        ),
        pytest.param(
            ["run", "tests.fakes:Recorder"],
            "module 'tests.fakes' has no Registry; pass --registry "
            "package.module:registry.",
            id="no-registry",
        ),
        pytest.param(
            ["run", "tests.cli_apps:main", "--registry", "tests.cli_apps:Resources"],
            "'tests.cli_apps:Resources' is the class Resources, not a "
            "lifespan_kit.Registry.",
            id="registry-option-not-a-registry",
        ),
        pytest.param(
            ["run", "tests.cli_apps:sync_main", "--registry", "tests.cli_apps"],
            "The main function sync_main cannot be run: it is a synchronous "
            "function, not an async function.",
            id="invalid-main",
        ),
        pytest.param(
            ["check", "tests.cli_apps:main"],
            "'tests.cli_apps:main' is the callable main, not a lifespan_kit.Registry.",
            id="function-as-registry",
        ),
        pytest.param(
            ["check", "tests.cli_apps:TICK_SEEN"],
            "'tests.cli_apps:TICK_SEEN' is an instance of Event, not a "
            "lifespan_kit.Registry.",
            id="instance-as-registry",
        ),
        pytest.param(
            ["check", "tests.cli_apps:registry", "--bundle", "tests.cli_apps:db"],
            "'tests.cli_apps:db' is an instance of Resource, not a "
            "lifespan_kit.Bundle subclass.",
            id="bundle-not-a-bundle",
        ),
        pytest.param(
            ["graph", "tests.cli_apps:anyio"],
            "'tests.cli_apps:anyio' is the module anyio, not a lifespan_kit.Registry.",
            id="module-as-registry",
        ),
        pytest.param(
            ["check", "tests.no_such_module"],
            "cannot import module 'tests.no_such_module': ModuleNotFoundError: No "
            "module named 'tests.no_such_module'",
            id="missing-module",
        ),
        pytest.param(
            ["check", "tests.cli_broken_import:registry"],
            "cannot import module 'tests.cli_broken_import': RuntimeError: "
            "configuration missing: DATABASE_URL",
            id="module-raises",
        ),
        pytest.param(
            ["check", "tests.cli_apps:regsitry"],
            "module 'tests.cli_apps' has no attribute 'regsitry'; did you mean "
            "'registry'?",
            id="typo",
        ),
        pytest.param(
            ["graph", "tests.cli_apps:Holder.zzz"],
            "module 'tests.cli_apps' has no attribute 'Holder.zzz'.",
            id="missing-nested",
        ),
        pytest.param(
            ["check", ":registry"],
            "':registry' names no module; write 'package.module:registry'.",
            id="no-module",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """Input that cannot be used: one line on stderr (the first), no traceback."""
    assert main(args) == 2
    output = capsys.readouterr()
    first = output.err.splitlines()[0]
    assert first == f"lifespan-kit: error: {message}"
    assert "Traceback" not in output.err


def test_traceback_shows_where_the_import_failed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--traceback prints the original exception's traceback before the line."""
    assert main(["check", "tests.cli_broken_import:registry", "--traceback"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert 'raise RuntimeError("configuration missing: DATABASE_URL")' in err
    assert err.endswith("RuntimeError: configuration missing: DATABASE_URL\n")


def test_traceback_of_an_error_without_a_cause(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--traceback on an error raised by the command itself shows that error."""
    assert main(["check", "tests.cli_apps:main", "--traceback"]) == 2
    assert "lifespan_kit._target.InputError:" in capsys.readouterr().err


def test_usage_errors_come_from_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    """A missing command or an unknown option exits 2 with the usage."""
    with pytest.raises(SystemExit) as info:
        main(["graph", "tests.cli_apps:registry", "--format", "svg"])
    assert info.value.code == 2
    assert "invalid choice: 'svg'" in capsys.readouterr().err


# --- check -------------------------------------------------------------------


def test_run_with_an_explicit_registry(
    capsys: pytest.CaptureFixture[str], anyio_backend: str
) -> None:
    """--registry picks the registry when main's module has several."""
    args = ["run", "tests.cli_apps:main", "--registry", "tests.cli_apps:registry"]
    assert main([*args, "--backend", anyio_backend]) == 0
    table = capsys.readouterr().err.split("\nresource ")[-1].splitlines()
    assert [row.split()[0] for row in table[1:]] == ["db"]


def test_check_lists_the_start_order(capsys: pytest.CaptureFixture[str]) -> None:
    """A valid graph: status 0 and the resources in start order."""
    assert main(["check", "tests.cli_apps"]) == 0
    assert capsys.readouterr().out == (
        "tests.cli_apps: OK; 4 resource(s) would start, in this order: settings, "
        "db, cache, consumer.\n"
    )


def test_check_with_a_bundle_and_a_dotted_attribute(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--bundle narrows the check to what the bundle needs."""
    args = ["check", "tests.cli_apps:Holder.registry", "--bundle", "tests.cli_apps"]
    assert main(args) == 0
    assert capsys.readouterr().out.endswith("in this order: settings, db.\n")


def test_check_of_an_empty_registry(capsys: pytest.CaptureFixture[str]) -> None:
    """An empty registry is valid, and says so."""
    assert main(["check", "tests.test_cli:EMPTY"]) == 0
    assert capsys.readouterr().out.endswith("would start, in this order: (none).\n")


@pytest.mark.parametrize("command", ["check", "graph"])
def test_an_invalid_graph_lists_every_problem_and_exits_1(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """Every problem is listed, with its fix; the status is 1."""
    assert main([command, "tests.cli_apps:broken"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tests.cli_apps:broken: The resource graph has 2 problems.\n")
    assert err.count("problems") == 1  # said once
    assert "1. Resource 'api' depends on 'db', which is not registered." in err
    assert "2. Resource 'api' depends on 'cahce', which is not registered." in err


@pytest.mark.parametrize("command", ["check", "graph"])
def test_cycles_are_listed_with_a_missing_dependency(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """A missing dependency does not hide the cycles: all three are listed."""
    assert main([command, "tests.cli_apps:tangled"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        "tests.cli_apps:tangled: The resource graph has 3 problems.\n"
    )
    assert "1. Resource 'api' depends on 'cache', which is not registered." in err
    assert "2. Resource 'api' depends on itself through a cycle." in err
    assert "cycle: api -> repo -> api" in err
    assert "3. Resource 'db' depends on itself through a cycle." in err
    assert "cycle: db -> db" in err


# --- graph -------------------------------------------------------------------


def test_graph_as_text_shows_waves_kinds_and_timeouts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The text graph: one row per resource, by wave, with its limits."""
    assert main(["graph", "tests.cli_apps:registry"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "wave  resource  kind             timeouts              depends on",
        "0     settings  value            -                     -",
        "1     db        async generator  start 10s, stop 2s    settings",
        "1     cache     callable         start 60s, stop none  settings",
        "2     consumer  background task  stop 2s               db, cache",
    ]


def test_graph_as_mermaid(capsys: pytest.CaptureFixture[str]) -> None:
    """Mermaid: one subgraph per wave, edges from dependency to dependent."""
    args = ["graph", "tests.cli_apps:registry", "--bundle", "tests.cli_apps"]
    assert main([*args, "--format", "mermaid"]) == 0
    assert capsys.readouterr().out == (
        "flowchart LR\n"
        '    subgraph wave_0 ["wave 0"]\n'
        '        r_settings["settings<br/>value<br/>-"]\n'
        "    end\n"
        '    subgraph wave_1 ["wave 1"]\n'
        '        r_db["db<br/>async generator<br/>start 10s, stop 2s"]\n'
        "    end\n"
        "    r_settings --> r_db\n"
    )


def test_graph_as_dot(capsys: pytest.CaptureFixture[str]) -> None:
    """DOT: a labelled cluster per wave, as in Mermaid; a labelled box per resource."""
    args = ["graph", "tests.cli_apps:registry", "--bundle", "tests.cli_apps"]
    assert main([*args, "--format", "dot"]) == 0
    assert capsys.readouterr().out == (
        "digraph resources {\n"
        "    rankdir=LR;\n"
        "    newrank=true;\n"
        "    node [shape=box];\n"
        "    subgraph cluster_wave_0 {\n"
        '        label="wave 0";\n'
        '        style=dashed; color="#9aa0a6"; rank=same;\n'
        '        "settings" [label="settings\\nvalue\\n-"];\n'
        "    }\n"
        "    subgraph cluster_wave_1 {\n"
        '        label="wave 1";\n'
        '        style=dashed; color="#9aa0a6"; rank=same;\n'
        '        "db" [label="db\\nasync generator\\nstart 10s, stop 2s"];\n'
        "    }\n"
        '    "settings" -> "db";\n'
        "}\n"
    )


TANGLED_TEXT = [
    "wave  resource  kind            timeouts            depends on",
    "0     repo      callable        start 60s, stop 5s  api (cycle)",
    "0     db        callable        start 60s, stop 5s  db (cycle)",
    "0     cache     not registered  -                   -",
    "1     api       callable        start 60s, stop 5s  repo (cycle), "
    "cache (not registered)",
]
TANGLED_MERMAID = [
    "flowchart LR",
    '    subgraph wave_0 ["wave 0"]',
    '        r_repo["repo<br/>callable<br/>start 60s, stop 5s"]',
    '        r_db["db<br/>callable<br/>start 60s, stop 5s"]',
    '        r_cache["cache<br/><b>not registered</b>"]',
    "    end",
    '    subgraph wave_1 ["wave 1"]',
    '        r_api["api<br/>callable<br/>start 60s, stop 5s"]',
    "    end",
    "    r_repo -->|cycle| r_api",
    "    r_cache --> r_api",
    "    r_api -->|cycle| r_repo",
    "    r_db -->|cycle| r_db",
    "    linkStyle 0,2,3 stroke:#d93025,stroke-width:2px",
    "    classDef missing fill:#fce8e6,stroke:#d93025,stroke-dasharray:4 2",
    "    class r_cache missing",
]
CYCLE_EDGE = '[color="#d93025", fontcolor="#d93025", penwidth=2, label="cycle"]'
TANGLED_DOT_EDGES = [
    f'    "repo" -> "api" {CYCLE_EDGE};',
    '    "cache" -> "api";',
    f'    "api" -> "repo" {CYCLE_EDGE};',
    f'    "db" -> "db" {CYCLE_EDGE};',
    "}",
]


@pytest.mark.parametrize(
    ("output_format", "expected"),
    [
        pytest.param("text", TANGLED_TEXT, id="text"),
        pytest.param("mermaid", TANGLED_MERMAID, id="mermaid"),
        pytest.param("dot", TANGLED_DOT_EDGES, id="dot"),
    ],
)
def test_graph_draws_an_invalid_graph_and_exits_1(
    capsys: pytest.CaptureFixture[str], output_format: str, expected: list[str]
) -> None:
    """Cycles and missing names are drawn, marked; the problems follow; status 1."""
    args = ["graph", "tests.cli_apps:tangled", "--format", output_format]
    assert main(args) == 1
    output = capsys.readouterr()
    lines = output.out.splitlines()
    assert lines[-len(expected) :] == expected
    assert output.err.startswith("tests.cli_apps:tangled: The resource graph has 3")
    if output_format == "dot":
        assert (
            '        "cache" [label="cache\\nnot registered", style=dashed, '
            'color="#d93025", fontcolor="#d93025"];'
        ) in lines


def test_graph_of_a_bundle_with_an_unknown_field(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Only what the bundle needs is drawn, and its unknown field, as missing."""
    args = ["graph", "tests.cli_apps:tangled", "--bundle", "tests.cli_apps:Tangled"]
    assert main(args) == 1
    assert capsys.readouterr().out.splitlines() == [
        "wave  resource  kind            timeouts            depends on",
        "0     repo      callable        start 60s, stop 5s  api (cycle)",
        "0     queue     not registered  -                   -",
        "0     cache     not registered  -                   -",
        "1     api       callable        start 60s, stop 5s  repo (cycle), "
        "cache (not registered)",
    ]


def test_graph_of_a_cycle_through_two_paths(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every edge on a cycle is marked, also on one the error does not print."""
    assert main(["graph", "tests.test_cli:TWO_CYCLES"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "wave  resource  kind      timeouts            depends on",
        "0     b         callable  start 60s, stop 5s  a (cycle)",
        "0     c         callable  start 60s, stop 5s  a (cycle)",
        "1     a         callable  start 60s, stop 5s  b (cycle), c (cycle)",
        "2     d         callable  start 60s, stop 5s  a",
    ]


@pytest.fixture
def report(tmp_path: Path) -> Path:
    """A report in which each outcome appears once (consumer never started)."""
    path = tmp_path / "report.json"
    outcomes = {
        "settings": "stopped",
        "db": "failed to start",
        "cache": "rolled back",
    }
    resources = {name: {"outcome": outcome} for name, outcome in outcomes.items()}
    path.write_text(json.dumps({"exit_status": 3, "resources": resources}))
    return path


def test_graph_report_in_mermaid_colours_each_outcome(
    capsys: pytest.CaptureFixture[str], report: Path
) -> None:
    """Failed, rolled back, fine and never started each get their own class."""
    args = ["graph", "tests.cli_apps:registry", "--report", str(report)]
    assert main([*args, "--format", "mermaid"]) == 0
    out = capsys.readouterr().out
    assert '        r_db["db<br/>async generator<br/>start 10s, stop 2s' in out
    assert "<br/><b>failed to start</b>" in out
    assert out.splitlines()[-4:] == [
        "    class r_settings ok",
        "    class r_db failed",
        "    class r_cache rolled_back",
        "    class r_consumer not_started",
    ]
    assert "    classDef failed fill:#fce8e6" in out


def test_graph_report_in_dot_colours_each_outcome(
    capsys: pytest.CaptureFixture[str], report: Path
) -> None:
    """DOT nodes carry the outcome in the label and a matching style."""
    args = ["graph", "tests.cli_apps:registry", "--report", str(report)]
    assert main([*args, "--format", "dot"]) == 0
    out = capsys.readouterr().out
    assert (
        '    "db" [label="db\\nasync generator\\nstart 10s, stop 2s\\nfailed to start",'
        ' style=filled, fillcolor="#fce8e6", color="#d93025", penwidth=2];'
    ) in out
    assert '"consumer\\nnot started", style=dashed' in out.replace(
        "background task\\nstop 2s\\n", ""
    )


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(None, id="missing"),
        pytest.param("not json", id="not-json"),
        pytest.param('{"exit_status": 0}', id="no-resources"),
        pytest.param('{"resources": []}', id="wrong-shape"),
    ],
)
def test_an_unreadable_report_is_bad_input(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str | None
) -> None:
    """A report that is missing or malformed: one line, exit 2."""
    path = tmp_path / "report.json"
    if content is not None:
        path.write_text(content)
    assert main(["graph", "tests.cli_apps:registry", "--report", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lifespan-kit: error: cannot read the report '{path}'")
    assert err.endswith("write one with `lifespan-kit run --report-file`.\n")


# --- the pieces --------------------------------------------------------------


def test_the_working_directory_is_importable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A console script imports the user's modules from the working directory."""
    (tmp_path / "here.py").write_text(
        "from lifespan_kit import Registry\nregistry = Registry()\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    monkeypatch.delitem(sys.modules, "here", raising=False)
    assert main(["check", "here"]) == 0
    assert main(["check", "here"]) == 0
    assert sys.path.count(str(tmp_path)) == 1


@pytest.fixture
def project(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A user's folder, the working directory: a script, a package, a subfolder.

    The imports the command makes are undone afterwards.
    """
    registry = "from lifespan_kit import Registry\nregistry = Registry()\n"
    (tmp_path / "service_app.py").write_text(
        "from service_settings import registry  # a sibling module\n"
    )
    (tmp_path / "service_settings.py").write_text(registry)
    (tmp_path / "service_pkg").mkdir()
    (tmp_path / "service_pkg" / "__init__.py").write_text(registry)
    (tmp_path / "service_pkg" / "main.py").write_text(
        "from . import registry  # relative, inside its package\n"
    )
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "service_job.py").write_text(registry)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


@pytest.mark.parametrize(
    ("target", "module"),
    [
        pytest.param("service_app.py:registry", "service_app", id="file"),
        pytest.param("./service_app.py:registry", "service_app", id="dot-slash"),
        pytest.param("service_app.py", "service_app", id="default-attribute"),
        pytest.param("scripts/service_job.py", "service_job", id="in-a-folder"),
        pytest.param("service_pkg/main.py", "service_pkg.main", id="in-a-package"),
        pytest.param("service_pkg/main:registry", "service_pkg.main", id="no-suffix"),
        pytest.param("service_pkg/__init__.py", "service_pkg", id="a-package"),
        pytest.param("{root}/scripts/service_job.py", "service_job", id="absolute"),
    ],
)
def test_a_target_can_be_a_file_path(
    capsys: pytest.CaptureFixture[str], project: Path, target: str, module: str
) -> None:
    """A path to a .py file is imported as a module, its own imports working."""
    target = target.format(root=project)
    assert main(["check", target]) == 0, capsys.readouterr().err
    assert main(["check", target]) == 0  # once imported, the same module
    assert capsys.readouterr().out.startswith(f"{target}: OK; 0 resource(s)")
    assert module in sys.modules


def test_a_file_path_works_for_run(
    capsys: pytest.CaptureFixture[str], project: Path, anyio_backend: str
) -> None:
    """`run ./worker.py:main` finds main and the registry beside it."""
    (project / "service_worker.py").write_text(
        "from lifespan_kit import Registry\n"
        "registry = Registry()\n"
        "registry.add('answer', 42)\n"
        "async def main() -> None:\n"
        "    print('ran')\n"
    )
    status = main(["run", "./service_worker.py:main", "--backend", anyio_backend])
    assert status == 0
    assert capsys.readouterr().out == "ran\n"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        pytest.param(
            "missing_app.py:registry",
            "'missing_app.py' is not a Python file; name the module as "
            "'missing_app:registry', or give the path of a .py file.",
            id="no-such-file",
        ),
        pytest.param(
            "./service/missing.py",
            "'./service/missing.py' is not a Python file; name the module as "
            "'service.missing:registry', or give the path of a .py file.",
            id="no-such-folder",
        ),
    ],
)
def test_a_path_that_is_no_file_suggests_the_module_name(
    capsys: pytest.CaptureFixture[str], project: Path, target: str, message: str
) -> None:
    """A mistyped path: one line that shows the module form of the target."""
    assert main(["check", target]) == 2
    assert capsys.readouterr().err == f"lifespan-kit: error: {message}\n"


@pytest.mark.parametrize(
    ("name", "loaded_from"),
    [
        pytest.param("json", "json/__init__.py", id="standard-library"),
        pytest.param("sys", "built into Python", id="built-in"),
    ],
)
def test_a_file_named_like_a_loaded_module_is_refused(
    capsys: pytest.CaptureFixture[str], project: Path, name: str, loaded_from: str
) -> None:
    """json.py in the working directory cannot be imported as 'json': say so."""
    (project / f"{name}.py").write_text("registry = None\n")
    assert main(["check", f"{name}.py"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"lifespan-kit: error: '{name}.py' would be imported as module '{name}', "
        "but another module of that name is already loaded ("
    )
    assert err.endswith(f"{loaded_from}); rename the file.\n")


@pytest.mark.parametrize(
    ("installed", "expected"),
    [
        pytest.param(True, "lifespan_kit 1.2.3\n", id="installed"),
        pytest.param(
            False,
            "lifespan_kit (version unknown: not installed as a distribution)\n",
            id="not-installed",
        ),
    ],
)
def test_version(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    installed: bool,
    expected: str,
) -> None:
    """--version prints the installed distribution's version, or says it has none."""

    def version(name: str) -> str:
        assert name == "lifespan_kit"
        if not installed:
            raise importlib.metadata.PackageNotFoundError(name)
        return "1.2.3"

    monkeypatch.setattr(importlib.metadata, "version", version)
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == expected


def test_python_m_lifespan_kit_is_the_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`python -m lifespan_kit` runs the same command line; importing it does not."""
    # A subprocess: under pytest, runpy cannot load the package (pytest rewrites
    # the asserts of a plugin's package, and its loader has no get_code).
    command = [sys.executable, "-m", "lifespan_kit", "check", "tests.cli_apps"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "OK; 4 resource(s)" in result.stdout
    try:
        importlib.import_module("lifespan_kit.__main__")
    finally:
        sys.modules.pop("lifespan_kit.__main__", None)
    assert capsys.readouterr().out == ""


def test_the_final_table_and_outcomes() -> None:
    """Failed background tasks, rollbacks and long durations read clearly."""
    tracker = Tracker()
    failure = BackgroundTaskError("consumer")
    failure.__cause__ = ValueError("queue gone")
    for event in [
        ResourceEvent("db", "starting"),
        ResourceEvent("db", "started", duration=1.5),
        ResourceEvent("consumer", "starting"),
        ResourceEvent("consumer", "started", duration=0.0001),
        ResourceEvent("consumer", "failed", error=failure),
        ResourceEvent("consumer", "stopping"),
        ResourceEvent("consumer", "stopped", duration=0.002),
    ]:
        tracker.record(event, now=0.0)
    assert tracker.table() == [
        "resource      start       stop  outcome",
        "db           1.50 s          -  running",
        "consumer     0.1 ms     2.0 ms  failed: Background task 'consumer' failed "
        "while the lifespan was running. (ValueError: queue gone)",
    ]


def test_errors_are_described_in_one_line() -> None:
    """Our errors by their summary (and cause); others by type and message."""
    assert describe_error(KeyError("x")) == "KeyError: 'x'"
    assert describe_error(StartupError("db")) == "Resource 'db' failed during startup."


def test_a_log_line_that_cannot_be_written_does_not_raise(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A broken stream is logging's own error report, never an exception."""
    stream = io.StringIO()
    display = Display(stream, is_live=False, has_color=False)
    handler = DisplayHandler(display)
    stream.close()
    handler.emit(logging.LogRecord("x", logging.INFO, __file__, 1, "lost", None, None))
    assert "--- Logging error ---" in capsys.readouterr().err


def test_display_listens_without_drawing_off_a_terminal() -> None:
    """Off a terminal, events only update the rows; nothing is drawn until the end."""
    stream = io.StringIO()
    with Display(stream, is_live=False, has_color=False) as display:
        display.listen(ResourceEvent("db", "starting"))
        assert stream.getvalue() == ""
    assert stream.getvalue().startswith("resource ")


def test_an_empty_run_prints_no_table() -> None:
    """Nothing started, nothing to show."""
    stream = io.StringIO()
    with Display(stream, is_live=True, has_color=True, interval=60):
        pass
    assert stream.getvalue() == ""


EMPTY = Registry()
"""An empty registry, for `check`."""

TWO_CYCLES = Registry()
"""'a' is in two cycles, through 'b' and through 'c'; 'd' depends on it."""
TWO_CYCLES.add("a", lambda b, c: (b, c))
TWO_CYCLES.add("b", lambda a: a)
TWO_CYCLES.add("c", lambda a: a)
TWO_CYCLES.add("d", lambda a: a)
