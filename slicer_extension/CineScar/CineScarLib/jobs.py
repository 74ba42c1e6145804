"""Long work off the GUI thread: a worker thread posts events to a queue that the GUI drains.

GUI-free: in Slicer a ``qt.QTimer`` calls :meth:`Job.poll` every 100-200 ms on
the main thread, so every callback (progress, done, error) runs there and may
touch widgets and MRML nodes. In tests and on the command line, :meth:`Job.wait`
drives the same loop.

    job = Job(session.detect, image_id, progress=..., cancel=...)   # worker(*args, progress=, cancel=)
    job.start(on_progress=bar.update, on_done=show, on_error=report)
    timer.timeout.connect(job.poll)          # Slicer
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from .client import Cancelled, CancelToken

_PROGRESS, _DONE, _ERROR, _LOG = "progress", "done", "error", "log"


class Job:
    """Runs ``fn(*args, progress=<cb>, cancel=<token>, **kwargs)`` in a daemon thread.

    ``fn`` reports progress as ``progress(fraction_or_None, message)``; it should
    check ``cancel`` (a :class:`CancelToken`) at safe points. Callbacks given to
    :meth:`start` run only inside :meth:`poll`, on the polling (GUI) thread.
    """

    def __init__(self, fn: Callable[..., Any], *args: Any, name: str = "", **kwargs: Any) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.name = name or getattr(fn, "__name__", "job")
        self.cancel_token = CancelToken()
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._finished = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.error_traceback = ""
        self.cancelled = False
        self._on_progress: Callable[[float | None, str], None] | None = None
        self._on_done: Callable[[Any], None] | None = None
        self._on_error: Callable[[BaseException, str], None] | None = None
        self._on_cancelled: Callable[[], None] | None = None

    # ---------------------------------------------------------------- control

    def start(
        self,
        *,
        on_progress: Callable[[float | None, str], None] | None = None,
        on_done: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException, str], None] | None = None,
        on_cancelled: Callable[[], None] | None = None,
    ) -> Job:
        self._on_progress, self._on_done, self._on_error, self._on_cancelled = on_progress, on_done, on_error, on_cancelled
        self._thread = threading.Thread(target=self._run, name=f"cinescar-{self.name}", daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Ask the worker to stop; the job ends (``on_cancelled``) at its next check."""
        self.cancel_token.cancel()

    @property
    def finished(self) -> bool:
        """True once :meth:`poll` has delivered the final event."""
        return self._finished

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._finished

    def poll(self) -> bool:
        """Deliver queued events on the calling thread. Returns True while the job is still running."""
        while True:
            try:
                kind, payload = self._queue.get_nowait()
            except queue.Empty:
                return not self._finished
            if kind == _PROGRESS:
                if self._on_progress is not None:
                    self._on_progress(*payload)
            elif kind == _DONE:
                self._finished = True
                self.result = payload
                if self._on_done is not None:
                    self._on_done(payload)
            elif kind == _ERROR:
                self._finished = True
                error, text = payload
                self.error, self.error_traceback = error, text
                if isinstance(error, Cancelled):
                    self.cancelled = True
                    if self._on_cancelled is not None:
                        self._on_cancelled()
                elif self._on_error is not None:
                    self._on_error(error, text)

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> Any:
        """Poll until finished (tests, command line). Returns the result or raises the job's error."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll():
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.name} still running after {timeout} s")
            time.sleep(interval)
        if self.error is not None:
            raise self.error
        return self.result

    # ---------------------------------------------------------------- worker side

    def _progress(self, fraction: float | None, message: str) -> None:
        self._queue.put((_PROGRESS, (fraction, message)))

    def _run(self) -> None:
        try:
            value = self.fn(*self.args, progress=self._progress, cancel=self.cancel_token, **self.kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the GUI thread
            self._queue.put((_ERROR, (exc, traceback.format_exc())))
        else:
            if self.cancel_token.cancelled:
                self._queue.put((_ERROR, (Cancelled("cancelled"), "")))
            else:
                self._queue.put((_DONE, value))
