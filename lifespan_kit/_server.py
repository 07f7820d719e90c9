"""Ask the ASGI server this app runs in to shut down, as an orchestrator would.

The ASGI lifespan protocol has no message for it: a server stops on a signal.
"""

from __future__ import annotations

import os
import signal
import sys


def ask_server_to_stop() -> str | None:
    """Send SIGTERM where the server shuts down gracefully; say where, or None.

    The ASGI lifespan protocol has no message to ask a server to stop, so this
    does what an orchestrator does. Under uvicorn, granian, and hypercorn run
    with ``--workers 0``, this process handles SIGTERM itself. A hypercorn
    worker leaves SIGTERM at its default (it would die without a teardown): its
    supervisor, the multiprocessing parent, is told instead, and stops it.
    """
    if sys.platform == "win32":  # pragma: no cover  # no SIGTERM handlers there
        return None
    if callable(signal.getsignal(signal.SIGTERM)):
        os.kill(os.getpid(), signal.SIGTERM)
        return f"sent SIGTERM to this process, {os.getpid()}"
    import multiprocessing  # loaded only on a failure

    parent = multiprocessing.parent_process()
    # Only the live parent that spawned this worker: never whatever adopted it.
    if parent is not None and parent.pid == os.getppid():
        os.kill(os.getppid(), signal.SIGTERM)
        return f"sent SIGTERM to the worker's supervisor, process {os.getppid()}"
    return None
