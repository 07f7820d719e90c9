"""The quickstart example runs end to end on both backends."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from examples.quickstart.app import Database, main, registry


async def test_main_uses_the_resources_and_returns_the_notes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The example starts its resources, reads back a note and prints the report."""
    assert await main() == ["hello"]
    output = capsys.readouterr().out
    assert "critical path: settings -> db" in output
    assert '"status":"healthy"' in output


async def test_database_is_closed_after_the_lifespan() -> None:
    """Leaving the lifespan closes the database connection."""
    async with registry.lifespan() as resources:
        database = resources["db"]
        assert isinstance(database, Database)
    assert database.is_closed


def test_script_runs_as_the_demo(anyio_backend: str) -> None:
    """`python examples/quickstart/app.py` runs and logs each start and stop."""
    script = Path(__file__).with_name("app.py")
    result = subprocess.run(
        [sys.executable, str(script), anyio_backend],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "notes: hello" in result.stdout
    assert "lifespan_kit DEBUG Resource 'db' stopped in" in result.stderr
