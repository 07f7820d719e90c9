"""`python -m lifespan_kit`: the `lifespan-kit` command line."""

from __future__ import annotations

import sys

from lifespan_kit.cli import main

if __name__ == "__main__":
    sys.exit(main())
