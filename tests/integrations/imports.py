"""Import a module in a fresh interpreter in which one top-level package is missing."""

from __future__ import annotations

import subprocess
import sys

BLOCK_AND_IMPORT = """
import importlib.abc
import sys


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname.partition(".")[0] == sys.argv[1]:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


sys.meta_path.insert(0, Block())
import lifespan_kit
__import__(sys.argv[2])
"""


def import_with_blocked(blocked: str, module: str) -> subprocess.CompletedProcess[str]:
    """Import `module` in a fresh interpreter in which `blocked` cannot be imported."""
    return subprocess.run(
        [sys.executable, "-I", "-W", "error", "-c", BLOCK_AND_IMPORT, blocked, module],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
