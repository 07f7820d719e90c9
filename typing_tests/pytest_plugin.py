"""Types of `lifespan_kit.pytest_plugin`: the public constants.

The plugin's fixtures reach users through pytest, which types them by the test
function's own annotations; these are the names a conftest may import.
Checked by mypy and pyright in strict mode; never executed.
"""

from __future__ import annotations

from typing import Literal

from typing_extensions import assert_type

from lifespan_kit.pytest_plugin import MARKER, SCOPES, Scope

assert_type(MARKER, Literal["lifespan_kit"])
assert_type(SCOPES, tuple[Scope, ...])
assert_type(SCOPES[0], Literal["session", "package", "module", "class", "function"])
