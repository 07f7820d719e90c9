"""Run a replica as a worker: ``python -m examples.replicas``.

SIGTERM (or Ctrl+C) stops it: the report job, then the resources, in reverse.
"""

from __future__ import annotations

import logging
import sys

import lifespan_kit
from examples.replicas.app import main, registry

if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    sys.exit(lifespan_kit.run(main, registry))
