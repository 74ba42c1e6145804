"""A process that must not outlive the one that started it (a training under its server, a pool worker under its
trainer): ``exit_with_parent`` ends it within a second of its parent's death."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable


def exit_with_parent(on_exit: Callable[[], object] | None = None, interval_s: float = 0.5,
                     parent: int | None = None) -> threading.Thread:
    """Watch the parent process (``parent``, default the current one) from a daemon thread; when it is gone, call
    ``on_exit`` and end this process with status 75 (EX_TEMPFAIL)."""
    parent = os.getppid() if parent is None else parent

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        if on_exit is not None:
            on_exit()
        os._exit(75)

    thread = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    thread.start()
    return thread
