"""``stran detect`` over many studies: the study list (cohort folders; a rank's share under ``torchrun``), resume,
loading + preprocessing in worker processes while this process runs the network, progress and throughput.

Workers are a ``torch.utils.data.DataLoader`` with spawned processes (``--workers N``): each loads one study and
runs the shared preprocessing chain (``preprocess_study``, the detector's own configuration), and hands back the
network input, the ``PrepInfo`` and the study without its pixels (their shape, geometry and identity are what the
detection and the map writer read; the pixels travel only for ``--report``). The main process runs the network,
maps the outputs back and writes the files, so loading study k+1 overlaps the network on study k. Workers ignore
Ctrl+C (the main process ends them) and end with their parent (``stran.lifetime``).

Under ``torchrun`` (``RANK`` / ``WORLD_SIZE`` set) each process takes every WORLD_SIZE-th study of the list sorted
by id, from its RANK; they share nothing but the output folder (distinct files, each written atomically), the
results database (SQLite serialises the writers; a detection id is recorded once) and, at the end, torchrun's own
key-value store (``finish_rank``). No ``torch.distributed`` process group: inference exchanges no tensors between
ranks, and without collectives one slow or failed rank never stalls the others.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stran.errors import UserError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: What ``stran detect`` writes per study, besides ``<id>.json`` (never a study in a cohort folder).
OUTPUT_SUFFIXES = (".attention.nii.gz", ".report.png", ".report.pdf")
MIN_STUDIES_FOR_WORKERS = 8  # below this a worker's start-up (importing torch + MONAI, 3-5 s) costs more than it saves


@dataclass(frozen=True)
class Job:
    """One study to detect: a local ``path`` (loadable in a worker) or a ``load`` callable (main process only:
    a PACS fetch)."""

    image_id: str
    path: Path | None = None
    load: Callable[[], Any] | None = None


# ------------------------------------------------------------------------------------------------ the study list


def image_id_of(path: Path) -> str:
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        name = name.removesuffix(suffix)
    return name


def _is_nifti(name: str) -> bool:
    return name.endswith(NIFTI_SUFFIXES) and not name.endswith(OUTPUT_SUFFIXES) and not name.startswith(".")


def _is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM" or head[:2] in (b"\x08\x00", b"\x02\x00")


def _first_dicom(folder: Path, limit: int = 64) -> Path | None:
    """The first DICOM file under ``folder`` (sorted walk; gives up after ``limit`` files that are not DICOM)."""
    seen = 0
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            if _is_dicom_file(path):
                return path
            seen += 1
            if seen >= limit:
                return None
    return None


def _study_uid(path: Path) -> str:
    import pydicom

    try:
        return str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
                   .get("StudyInstanceUID", ""))
    except Exception:  # noqa: BLE001 - an unreadable header only means "no study UID known"
        return ""


def cohort_members(folder: Path) -> list[Path] | None:
    """The studies in a cohort folder, or None when ``folder`` is one study (a DICOM folder, as before).

    A cohort folder holds NIfTI studies (``.nii``/``.nii.gz``, with or without their ``.cine.json`` sidecars) and/or
    DICOM study sub-folders, and no DICOM file of its own. Without NIfTI files it counts as a cohort only when its
    sub-folders hold at least two different Study Instance UIDs (a study whose series sit in sub-folders is one
    study). Our own outputs (``*.attention.nii.gz``) and hidden files are not studies."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return None
    files = [e for e in entries if e.is_file()]
    nifti = [f for f in files if _is_nifti(f.name)]
    if any(_is_dicom_file(f) for f in files if not f.name.endswith((".nii", ".nii.gz", ".json"))):
        return None
    dicom_dirs: list[Path] = []
    uids: set[str] = set()
    for sub in (e for e in entries if e.is_dir() and not e.name.startswith(".")):
        first = _first_dicom(sub)
        if first is None:
            continue
        dicom_dirs.append(sub)
        if len(uids) < 2:
            uids.add(_study_uid(first))
    if nifti:
        return nifti + dicom_dirs
    if len(uids) >= 2:
        return dicom_dirs
    return None


def find_studies(sources: Sequence[str], say: Callable[[str], object]) -> tuple[list[Job], int]:
    """A ``Job`` per study named by ``sources`` (files, DICOM study folders, cohort folders), in the order given
    (a cohort folder's studies sorted by name); a source that does not exist or a second study with the same id
    is reported through ``say`` and counted."""
    jobs: list[Job] = []
    seen: dict[str, Path] = {}
    skipped = 0
    for source in sources:
        path = Path(source)
        if not path.exists():
            say(f"stran detect: skipped {source}: no such file or folder (give a DICOM folder, a DICOM file or a "
                f".nii/.nii.gz study)")
            skipped += 1
            continue
        members = cohort_members(path) if path.is_dir() else None
        for member in members or [path]:
            image_id = image_id_of(member)
            if image_id in seen and seen[image_id].resolve() != member.resolve():
                say(f"stran detect: skipped {member}: another study, {seen[image_id]}, has the same id {image_id} "
                    f"(their results would overwrite each other: rename one)")
                skipped += 1
                continue
            if image_id not in seen:
                seen[image_id] = member
                jobs.append(Job(image_id, member))
    return jobs, skipped


def rank_share(jobs: list[Job]) -> tuple[list[Job], int, int]:
    """This process's share under torchrun (``RANK`` of ``WORLD_SIZE``): every WORLD_SIZE-th study of the list
    sorted by id, from RANK. All the studies when not launched by torchrun."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    except ValueError as exc:
        raise UserError(f"RANK / WORLD_SIZE are not integers: {exc}", "launch with torchrun, or unset them") from exc
    if world < 1 or not 0 <= rank < world:
        raise UserError(f"RANK {rank} is not within WORLD_SIZE {world}", "launch with torchrun, or unset them")
    if world == 1:
        return jobs, 0, 1
    ordered = sorted(jobs, key=lambda j: (j.image_id, str(j.path)))
    return ordered[rank::world], rank, world


def finish_rank(rank: int, world: int, *, wait: bool) -> None:
    """Under torchrun: note in torchrun's own key-value store (its agent's TCPStore) that this rank is done and,
    with ``wait``, return only once every rank is. A rank that ends with status 1 (some studies skipped) makes
    torchrun stop the other ranks at once, so such a rank waits for them first. No process group: only the store."""
    if world < 2 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return
    from datetime import timedelta

    from torch.distributed import TCPStore

    try:
        store = TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                         timeout=timedelta(seconds=60))
        prefix = f"stran-detect/{os.environ.get('TORCHELASTIC_RUN_ID', '')}/done/"
        store.set(f"{prefix}{rank}", "1")
        if wait:
            store.wait([f"{prefix}{r}" for r in range(world)], timedelta(days=7))
    except (KeyError, ValueError, RuntimeError) as exc:  # no store to reach: end now (the others may be stopped)
        print(f"stran detect (rank {rank} of {world}): could not reach torchrun's store ({exc}); ending without "
              "waiting for the other ranks", file=sys.stderr)


def cores() -> int:
    """CPU cores this process may use, divided among torchrun's processes on this node."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    return max(1, n // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)))


def default_workers(n_studies: int) -> int:
    """0 (load in this process) for a few studies and on up to 3 cores; 1 worker from 4 cores, 2 from 8.

    On 2 cores (training/bench_cohort.py, docs/cli.md "Cohorts") the network in this process scales to both cores,
    so a worker only moves the loading onto a core the network would use: sequential with 2 threads was the fastest
    with the default 8 MC samples and within 15 % of the best worker setting with MC off, and it does not fall
    behind when other jobs load the machine. With more cores the network's threads leave cores to spare (not
    measured here)."""
    n = cores()
    if n_studies < MIN_STUDIES_FOR_WORKERS or n < 4:
        return 0
    return 1 if n < 8 else 2


def set_threads(threads: int | None) -> int:
    """Set this process's inference threads (None: keep torch's); returns the number in use."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def default_threads(workers: int) -> int | None:
    """Inference threads for this process: the cores the workers leave (at least 1); None keeps torch's own choice
    when ``OMP_NUM_THREADS`` is set (torchrun sets it to 1 with several processes per node)."""
    if "OMP_NUM_THREADS" in os.environ:
        return None
    return max(1, cores() - workers)


# ------------------------------------------------------------------------------------------------------- resume


def _changed_since(source: Path | None, when: float) -> bool:
    """Whether the study file (and its sidecar) or folder was modified after ``when`` (a timestamp)."""
    if source is None:
        return False
    paths = [source]
    if source.name.endswith(NIFTI_SUFFIXES):
        paths.append(source.with_name(image_id_of(source) + ".cine.json"))
    try:
        return any(p.stat().st_mtime > when for p in paths if p.exists())
    except OSError:
        return True


def finished_result(out: Path, image_id: str, sha256: str, needs: Sequence[str],
                    source: Path | None = None) -> dict[str, Any] | None:
    """The result already in ``out`` for ``image_id`` when it is complete: ``<id>.json`` parses, was made by the
    model with this ``sha256``, the files ``needs`` (suffixes) lie beside it, and the study ``source`` (file or
    folder) has not been modified since. The JSON is written last."""
    path = out / f"{image_id}.json"
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
        if _changed_since(source, path.stat().st_mtime):
            return None
    except (OSError, ValueError):
        return None
    if not isinstance(result, dict) or (result.get("model") or {}).get("sha256") != sha256:
        return None
    if any(not (out / f"{image_id}{suffix}").exists() for suffix in needs):
        return None
    return result


def remove_stale_temporaries(out: Path, jobs: Sequence[Job]) -> int:
    """Delete the temporary files (``.<name>.XXXXXXXX.tmp``, stran.atomic) a killed run left for these studies'
    outputs: only this process's studies (another torchrun rank may be writing its own now)."""
    names = {f"{job.image_id}{suffix}" for job in jobs for suffix in (".json", *OUTPUT_SUFFIXES)}
    removed = 0
    for entry in os.scandir(out):
        name = entry.name
        if name.startswith(".") and name.endswith(".tmp") and name[1:].rsplit(".", 2)[0] in names:
            Path(entry.path).unlink(missing_ok=True)
            removed += 1
    return removed


# ------------------------------------------------------------------------------------------ loading + preprocessing


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

    import_monai_lean()
    exit_with_parent()
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


# ---------------------------------------------------------------------------------------- progress and throughput


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
