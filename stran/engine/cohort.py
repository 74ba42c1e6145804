"""``stran detect`` over many studies: the detection loop, with loading ahead in worker processes
(``stran.engine.cohort_loading``), a progress bar with studies/min and ETA, and the throughput line.

The study list and resume are in ``stran.engine.study_list``; the torchrun share, cores and threads in
``stran.engine.cohort_launch``.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from stran.engine.cohort_loading import Failed, prepared_stream
from stran.engine.study_list import Job


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """A tqdm bar on stderr with studies/min and the ETA (on a terminal); elsewhere a plain line every
    ``every_s`` seconds. Study lines go to stdout around the bar."""

    def __init__(self, total: int, label: str, *, enabled: bool = True, every_s: float = 30.0) -> None:
        self.total, self.label, self.every_s = total, label, every_s
        self.n = 0
        self.start = self.last_line = time.perf_counter()
        self.bar = None
        self.lines = enabled and total > 1
        if self.lines and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=label, unit="study", file=sys.stderr, dynamic_ncols=True,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                       "[{elapsed}<{remaining}, {postfix}]")
            self.lines = False

    def rate(self) -> float:
        """Studies per minute so far."""
        elapsed = time.perf_counter() - self.start
        return 60.0 * self.n / elapsed if elapsed > 0 else 0.0

    def update(self) -> None:
        self.n += 1
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.rate():.1f} studies/min", refresh=False)
            self.bar.update()
        elif self.lines and time.perf_counter() - self.last_line >= self.every_s and self.n < self.total:
            self.last_line = time.perf_counter()
            rate = self.rate()
            eta = _duration(60.0 * (self.total - self.n) / rate) if rate > 0 else "?"
            print(f"{self.label}: {self.n}/{self.total} studies, {rate:.1f} studies/min, ETA {eta}", file=sys.stderr,
                  flush=True)

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stdout)
        else:
            print(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@dataclass
class Tally:
    """What a run did, for the throughput line."""

    detected: int = 0
    already_done: int = 0
    failed: int = 0
    workers: int = 0
    threads: int = 1
    label: str = "stran detect"
    start: float = field(default_factory=time.perf_counter)
    stages_ms: dict[str, float] = field(default_factory=lambda: {"load": 0.0, "preprocess": 0.0, "network": 0.0,
                                                                 "write": 0.0, "wait": 0.0})

    def line(self, *, interrupted: bool = False) -> str:
        wall = time.perf_counter() - self.start
        rate = 60.0 * self.detected / wall if wall > 0 else 0.0
        total = self.detected + self.already_done + self.failed
        ms = {k: v / max(1, self.detected) for k, v in self.stages_ms.items()}
        where = (f"; per study: load {ms['load']:.0f} ms, preprocess {ms['preprocess']:.0f} ms "
                 f"({'in workers' if self.workers else 'here'}), network {ms['network']:.0f} ms, "
                 f"outputs {ms['write']:.0f} ms"
                 + (f", waiting for the workers {ms['wait']:.0f} ms" if self.workers else ""))
        stopped = "interrupted after " if interrupted else ""
        return (f"{self.label}: {stopped}{total} studies: {self.detected} detected, "
                f"{self.already_done} already done (skipped), {self.failed} failed, in {_duration(wall)}: "
                f"{rate:.1f} studies/min ({self.workers} worker{'s' if self.workers != 1 else ''}, "
                f"{self.threads} inference thread{'s' if self.threads != 1 else ''})"
                + (where if self.detected else ""))


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_cohort(
    jobs: Sequence[Job], detector: Any, handle: Callable[[Job, Any, Any, Progress], None], *, tally: Tally,
    keep_pixels: bool, with_attention: bool, progress: bool = True, debug: bool = False,
    say: Callable[[str], object] = lambda line: print(line, file=sys.stderr),
) -> Tally:
    """Detect every job (loading ahead in ``tally.workers`` processes) and pass each detection to ``handle(job,
    study, detection, progress)``; a study that cannot be loaded is reported through ``say`` and counted. SIGTERM
    ends the run like Ctrl+C (KeyboardInterrupt: finished results stay, temporary files are removed)."""
    config = asdict(detector.preprocess)
    bar = Progress(len(jobs), tally.label, enabled=progress)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    stream = prepared_stream(jobs, config, workers=tally.workers, keep_pixels=keep_pixels)
    try:
        t_wait = time.perf_counter()
        for job, item in stream:
            tally.stages_ms["wait"] += (time.perf_counter() - t_wait) * 1e3
            if isinstance(item, Failed):
                if debug and item.detail:
                    say(item.detail.rstrip())
                say(f"stran detect: skipped {job.image_id}: {item.reason}")
                tally.failed += 1
            else:
                study, image = item.restore()
                t0 = time.perf_counter()
                detection = detector.detect_prepared(study, image, item.prep, preprocess_ms=item.preprocess_ms,
                                                     image_id=job.image_id, with_attention=with_attention)
                t1 = time.perf_counter()
                handle(job, study, detection, bar)
                tally.stages_ms["load"] += item.load_ms
                tally.stages_ms["preprocess"] += item.preprocess_ms
                tally.stages_ms["network"] += (t1 - t0) * 1e3
                tally.stages_ms["write"] += (time.perf_counter() - t1) * 1e3
                tally.detected += 1
                del study, image, detection, item
            bar.update()
            t_wait = time.perf_counter()
    except KeyboardInterrupt:
        bar.close()
        sys.stdout.flush()
        say(tally.line(interrupted=True) + "; run the same command again to resume")
        raise
    finally:
        stream.close()  # ends the workers now, also on Ctrl+C
        bar.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return tally
