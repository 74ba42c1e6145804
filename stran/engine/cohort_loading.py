"""Loading and preprocessing the studies of a cohort, in worker processes while the main process runs the network.

Workers are a ``torch.utils.data.DataLoader`` with spawned processes (``--workers N``): each loads one study and
runs the shared preprocessing chain (``preprocess_study``, the detector's own configuration), and hands back the
network input, the ``PrepInfo`` and the study without its pixels (their shape, geometry and identity are what the
detection and the map writer read; the pixels travel only for ``--report``). So loading study k+1 overlaps the
network on study k. Workers ignore Ctrl+C (the main process ends them) and end with their parent
(``stran.lifetime``).
"""

from __future__ import annotations

import copy
import os
import signal
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stran.engine.study_list import Job


@dataclass
class Prepared:
    """A loaded, preprocessed study. From a worker, ``image`` (and ``pixels``, only when asked for) travel as numpy
    arrays, pickled through the DataLoader's queue (no shared-memory file descriptors to pass), and ``study`` without
    its pixels: ``restore()`` gives the study back with a read-only zero view of the right shape in their place
    (the detection and the map writer read only the shape) or the pixels themselves."""

    study: Any
    image: Any  # torch.Tensor (1, S', T', H, W); numpy in transit
    prep: Any
    load_ms: float
    preprocess_ms: float
    pixels: Any = None
    shape: tuple[int, ...] = ()

    def restore(self) -> tuple[Any, Any]:
        """(study, image tensor)."""
        import numpy as np
        import torch

        if self.pixels is not None:
            self.study.pixels = self.pixels
        elif self.shape:
            self.study.pixels = np.broadcast_to(np.zeros((), np.float32), self.shape)
        image = torch.from_numpy(self.image) if isinstance(self.image, np.ndarray) else self.image
        return self.study, image


@dataclass
class Failed:
    """A study that could not be loaded or preprocessed: the one-line reason (and the traceback of a bug)."""

    reason: str
    detail: str = ""


def _reason(exc: BaseException) -> tuple[str, str]:
    from stran.io.errors import CineLoadError

    if isinstance(exc, CineLoadError):
        return str(exc), ""
    hint = getattr(exc, "hint", "")
    if type(exc).__module__.startswith("stran.pacs"):
        return f"{exc}" + (f" ({hint})" if hint else ""), ""
    if isinstance(exc, OSError):
        return f"{exc}", ""
    return (f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
            traceback.format_exc())


def _fatal(exc: BaseException) -> bool:
    """The PACS is unreachable or refuses us: the same for every study, so the run ends on one line."""
    cls = type(exc)
    return cls.__name__ in ("PacsUnreachableError", "PacsAuthError") and cls.__module__.startswith("stran.pacs")


def prepare(
    source: Path | Callable[[], Any], config: dict[str, Any], keep_pixels: bool, strip: bool
) -> Prepared | Failed:
    """Load (a path, or a loader callable) and preprocess one study; errors come back as ``Failed``."""
    from stran.io import load_study
    from stran.transforms.preprocess import PreprocessConfig, preprocess_study

    try:
        t0 = time.perf_counter()
        study = load_study(source) if isinstance(source, Path) else source()
        t1 = time.perf_counter()
        image, prep = preprocess_study(study, PreprocessConfig(**config))
        t2 = time.perf_counter()
    except Exception as exc:  # noqa: BLE001 - one bad study does not end the cohort: reported, counted, skipped
        if _fatal(exc):
            raise
        return Failed(*_reason(exc))
    item = Prepared(study, image, prep, (t1 - t0) * 1e3, (t2 - t1) * 1e3)
    if strip:  # the pixels stay in the worker unless asked for: they are the study's bulk
        item.image = image.numpy()
        item.shape = tuple(study.pixels.shape)
        item.pixels = study.pixels if keep_pixels else None
        item.study = copy.copy(study)
        item.study.pixels = None
    return item


class StudyDataset:
    """Study files -> ``Prepared`` | ``Failed``: a map-style dataset for the DataLoader's worker processes."""

    def __init__(self, paths: Sequence[Path], config: dict[str, Any], keep_pixels: bool) -> None:
        self.paths = [str(p) for p in paths]
        self.config = config  # a dict: unpickling a PreprocessConfig would import MONAI before the lean import
        self.keep_pixels = keep_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Prepared | Failed:
        return prepare(Path(self.paths[index]), self.config, self.keep_pixels, strip=True)


def _identity(item: Any) -> Any:
    return item


def _worker_init(_worker_id: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C reaches the whole process group: the main process decides
    import torch

    from stran.cli import import_monai_lean
    from stran.lifetime import exit_with_parent
    from stran.memory import keep_freed_memory

    import_monai_lean()
    exit_with_parent()
    keep_freed_memory()
    torch.set_num_threads(1)
    nice = int(os.environ.get("STRAN_WORKER_NICE", "0") or 0)  # docs/cli.md "Cohorts": not a default (starves)
    if nice:
        os.nice(nice)


def prepared_stream(
    jobs: Sequence[Job], config: dict[str, Any], *, workers: int, keep_pixels: bool
) -> Iterator[tuple[Job, Prepared | Failed]]:
    """Each job with its loaded, preprocessed study (or why not), in order: files in ``workers`` spawned processes
    (two studies in flight per worker at most, so memory stays flat), loader callables (PACS) in this process."""
    files = [j for j in jobs if j.load is None and j.path is not None]
    if workers > 0 and files:
        import torch

        loader = torch.utils.data.DataLoader(
            StudyDataset([j.path for j in files], config, keep_pixels), batch_size=None, shuffle=False,
            num_workers=workers, collate_fn=_identity, multiprocessing_context="spawn",
            worker_init_fn=_worker_init, prefetch_factor=2, persistent_workers=False)
        stream = iter(loader)
        try:
            for job in files:
                yield job, next(stream)
        finally:
            shutdown = getattr(stream, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
    else:
        for job in files:
            yield job, prepare(job.path, config, keep_pixels, strip=False)
    for job in jobs:
        if job.load is not None:
            yield job, prepare(job.load, config, keep_pixels, strip=False)
