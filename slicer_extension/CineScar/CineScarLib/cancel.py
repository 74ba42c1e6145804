"""Progress and cancellation of long calls: the ``progress`` callback type, :class:`CancelToken` and
:func:`run_cancellable` (stdlib only).

Every long call of CineScarLib takes ``progress`` (a callable ``(fraction or None, message)``, or None) and
``cancel`` (a :class:`CancelToken`), so that the Slicer widget can run it in a :class:`~.jobs.Job`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .errors import Cancelled

Progress = Callable[[float | None, str], None] | None


class CancelToken:
    """A thread-safe cancel flag shared by the GUI (sets it) and a worker (checks it)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled")

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if cancelled meanwhile."""
        return self._event.wait(seconds)


def run_cancellable(
    fn: Callable[[], Any],
    *,
    cancel: CancelToken | None = None,
    progress: Progress = None,
    message: str = "waiting for the server",
    expected_s: float | None = None,
    tick_s: float = 0.25,
) -> Any:
    """Run a blocking call in a helper thread; report elapsed time and stop waiting on cancel.

    A cancelled HTTP request cannot be withdrawn from the server: it runs to its
    end there and its answer is dropped here.
    """
    if cancel is None and progress is None:
        return fn()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="cinescar-request", daemon=True)
    start = time.monotonic()
    thread.start()
    while thread.is_alive():
        thread.join(tick_s)
        if cancel is not None and cancel.cancelled:
            raise Cancelled(f"cancelled while {message}")
        if progress is not None and thread.is_alive():
            elapsed = time.monotonic() - start
            fraction = min(0.95, elapsed / expected_s) if expected_s else None
            progress(fraction, f"{message} ({elapsed:.0f} s)")
    if "error" in box:
        raise box["error"]
    return box.get("value")
