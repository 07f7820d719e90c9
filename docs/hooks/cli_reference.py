"""MkDocs hook: the command line reference, generated from the command's parser.

A page line that is exactly ``<!-- lifespan-kit --help -->`` becomes one section
per command (``lifespan-kit``, then each subcommand in the parser's order), each
showing that command's ``--help`` output. The options on the site are therefore
those of the installed code, and cannot drift from it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
from collections.abc import Iterator

from lifespan_kit import cli

PLACEHOLDER = "<!-- lifespan-kit --help -->"
# argparse wraps its help at the terminal width, which it reads from COLUMNS.
ENVIRONMENT = {"COLUMNS": "80", "NO_COLOR": "1", "PYTHON_COLORS": "0"}


def on_page_markdown(markdown: str, **kwargs: object) -> str:
    """Replace the placeholder line with the generated reference."""
    if PLACEHOLDER not in markdown.splitlines():
        return markdown
    lines = [render() if line == PLACEHOLDER else line for line in markdown.split("\n")]
    return "\n".join(lines)


def render() -> str:
    """Return a Markdown section with the ``--help`` output of every command."""
    commands = [[], *([name] for name in subcommands())]
    sections = [
        f"### `{' '.join([cli.PROG, *argv])}`\n\n```text\n{help_text(argv)}```\n"
        for argv in commands
    ]
    return "\n".join(sections)


def subcommands() -> list[str]:
    """Return the names of the subcommands, in the order the parser lists them."""
    actions = [
        action
        for action in cli._parser()._actions  # the parser has no public accessor
        if isinstance(action, argparse._SubParsersAction)
    ]
    return [name for action in actions for name in action.choices]


def help_text(argv: list[str]) -> str:
    """Return what ``lifespan-kit ARGV --help`` prints."""
    output = io.StringIO()
    with (
        _environment(),
        contextlib.redirect_stdout(output),
        contextlib.suppress(SystemExit),
    ):
        cli.main([*argv, "--help"])
    return output.getvalue()


@contextlib.contextmanager
def _environment() -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in [*ENVIRONMENT, "FORCE_COLOR"]}
    os.environ.update(ENVIRONMENT)
    os.environ.pop("FORCE_COLOR", None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
