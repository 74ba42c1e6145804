"""Long work off the GUI thread: a worker thread posts events to a queue that the GUI drains.

GUI-free: in Slicer a ``qt.QTimer`` calls :meth:`Job.poll` (through :class:`JobSlots`) every 100-200 ms on
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

from .cancel import CancelToken
from .errors import Cancelled

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


class JobSlots:
    """A panel's worker jobs: one operation at a time, and one training that may run beside it.

    The widget's timer calls :meth:`poll` until it returns False; every job callback runs there."""

    def __init__(self) -> None:
        self._jobs: dict[bool, Job | None] = {False: None, True: None}  # training? -> its job

    def running(self, training: bool = False) -> bool:
        job = self._jobs[training]
        return job is not None and not job.finished

    def add(self, job: Job, training: bool = False) -> Job:
        """Take ``job`` (started) into the operation or the training slot; that slot must be free."""
        if self.running(training):
            raise RuntimeError(f"a {'training' if training else 'job'} is still running")
        self._jobs[training] = job
        return job

    def poll(self) -> bool:
        """Deliver the running jobs' events on this thread; True while one still runs."""
        for job in self._jobs.values():
            if job is not None and not job.finished:
                job.poll()
        return self.running(False) or self.running(True)

    def cancel(self, training: bool = False) -> bool:
        """Cancel the slot's job, if there is one (finished or not); returns whether there was one."""
        job = self._jobs[training]
        if job is not None:
            job.cancel()
        return job is not None

    def cancel_all(self) -> None:
        self.cancel(False)
        self.cancel(True)


class ProgressView:
    """A job's progress on a progress bar and a text line: Qt's QProgressBar and QLabel in the panel, anything
    with ``setVisible``, ``setRange``, ``setValue`` and ``text`` elsewhere. ``after()`` runs when the job ended."""

    def __init__(self, bar: Any, label: Any, after: Callable[[], None] | None = None) -> None:
        self.bar, self.label, self.after = bar, label, after

    def progress(self, fraction: float | None, message: str) -> None:
        self.bar.setVisible(True)
        if fraction is None:
            self.bar.setRange(0, 0)  # Qt's "busy" bar
        else:
            self.bar.setRange(0, 100)
            self.bar.setValue(int(round(100 * fraction)))
        self.label.text = message

    def ended(self, value: int, text: str | None = None) -> None:
        """The job ended: the bar full (100) or empty (0), the line ``text`` if given, then ``after()``."""
        self.bar.setRange(0, 100)
        self.bar.setValue(value)
        if text is not None:
            self.label.text = text
        if self.after is not None:
            self.after()
