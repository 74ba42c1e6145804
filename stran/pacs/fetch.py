"""Fetch a cine study from a PACS into a local cache (a datastore folder), keyed by its Study Instance UID.

The images are pulled with WADO-RS into a private temporary folder, grouped by the same cine loader as a DICOM
folder (``stran.io.load_study``: every layout it accepts), and only then moved into the cache::

    <cache>/<StudyInstanceUID>.nii.gz            the 4-D cine (datastore format)
    <cache>/<StudyInstanceUID>.cine.json         its sidecar (study, series and SOP Instance UIDs, geometry)
    <cache>/.stran-pacs/<StudyInstanceUID>/      the study's image files as the PACS sent them (one folder per
                                                 series; what the results written back reference) + pacs.json

A transfer that stops, an incomplete series or a study the loader refuses raises a ``PacsError`` naming the study;
the temporary folder is removed and the cache keeps what it held before (the sidecar is moved in before the image,
so a study is listed only once both are complete).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stran.pacs.client import NOT_IMAGES, PacsClient, PacsNotFoundError, PacsStudyError, PacsTransferError, SeriesInfo

PACS_DIR = ".stran-pacs"
Progress = Callable[[int, int, str], None] | None


def study_file(cache: str | Path, study_uid: str) -> Path:
    """Where the cached 4-D cine of a study is (whether or not it is there)."""
    return Path(cache) / f"{study_uid}.nii.gz"


def source_dir(cache: str | Path, study_uid: str) -> Path:
    """Where the study's source files are kept (one sub-folder per series, and ``pacs.json``)."""
    return Path(cache) / PACS_DIR / study_uid


def is_cached(cache: str | Path, study_uid: str) -> bool:
    """Whether the study's cine, sidecar and source files are all in the cache."""
    from stran.io.nifti import sidecar_path

    nii = study_file(cache, study_uid)
    return nii.is_file() and sidecar_path(nii).is_file() and (source_dir(cache, study_uid) / "pacs.json").is_file()


def fetch_study(client: PacsClient, study_uid: str, cache: str | Path, *, refresh: bool = False,
                progress: Progress = None) -> Path:
    """The cached cine of ``study_uid`` (fetched when missing or ``refresh``); returns its ``.nii.gz`` path."""
    from stran.names import check_name

    check_name(study_uid, "Study Instance UID")
    cache = Path(cache)
    if is_cached(cache, study_uid) and not refresh:
        return study_file(cache, study_uid)
    (cache / PACS_DIR).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".partial-{study_uid[-16:]}-", dir=cache / PACS_DIR))
    try:
        study = _download_and_load(client, study_uid, work / "images", progress)
        about = {"url": client.url, "study_uid": study_uid, "series_uids": list(dict.fromkeys(study.series_uids)),
                 "fetched_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        (work / "images" / "pacs.json").write_text(json.dumps(about, indent=1))
        from stran.io import write_datastore_study
        from stran.io.nifti import sidecar_path

        staged = write_datastore_study(study, work, study_uid)
        sources = source_dir(cache, study_uid)
        if sources.exists():
            os.replace(sources, work / "old")  # removed with the work folder
        os.replace(work / "images", sources)
        os.replace(sidecar_path(staged), sidecar_path(study_file(cache, study_uid)))
        os.replace(staged, study_file(cache, study_uid))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return study_file(cache, study_uid)


def _download_and_load(client: PacsClient, study_uid: str, folder: Path, progress: Progress) -> Any:
    """WADO-RS every image series of the study into ``folder``, checked against QIDO's counts, then loaded."""
    from stran.io import CineLoadError, load_study
    from stran.io.errors import NoCineSeriesError, SinglePhaseError

    every = client.series(study_uid)
    if not every:
        raise PacsNotFoundError(f"study {study_uid} is not on {client.url}",
                                "check the Study Instance UID (stran inspect --dicomweb URL lists the cine studies)")
    series = [s for s in every if s.modality.upper() not in NOT_IMAGES]
    if not series:
        raise PacsStudyError(f"study {study_uid} on {client.url} holds no image series",
                             "choose a study with a short-axis cine (stran inspect --dicomweb URL lists them)")
    total = sum(s.n_instances or 0 for s in series)
    done = 0
    for info in series:
        def step(n: int, before: int = done) -> None:
            if progress:
                progress(before + n, total, f"fetching study {study_uid}: {before + n} of {total} images")

        got = _download_series(client, study_uid, info, folder / info.uid, step)
        if info.n_instances is not None and got < info.n_instances:
            raise PacsTransferError(
                f"fetching study {study_uid} from {client.url}: series {info.uid} sent {got} of its "
                f"{info.n_instances} images", "nothing was kept; run the command again")
        done += got
    try:
        study = load_study(folder)
    except (NoCineSeriesError, SinglePhaseError) as exc:
        kinds = ", ".join(f"{s.modality} '{s.description}' ({s.n_instances} images)" for s in series)
        raise PacsStudyError(f"study {study_uid} on {client.url} holds no short-axis cine (series: {kinds}): "
                             f"{_loader_reason(exc)}", "choose another study; nothing was kept") from None
    except CineLoadError as exc:
        raise PacsStudyError(f"study {study_uid} on {client.url}: {_loader_reason(exc)}",
                             "fix or re-send the series on the PACS; nothing was kept") from None
    if study.study_uid != study_uid:
        raise PacsStudyError(f"study {study_uid} on {client.url} sent images of study {study.study_uid}",
                             "check the PACS; nothing was kept")
    return study.replace(source=f"dicomweb {client.url} study {study_uid}", left_out=[
        dataclasses.replace(entry, path=os.path.relpath(entry.path, folder)) for entry in study.left_out])


def _download_series(client: PacsClient, study_uid: str, info: SeriesInfo, folder: Path,
                     step: Callable[[int], Any]) -> int:
    """Save the series' instances in ``folder``; refuses a slice position holding fewer images than its
    CardiacNumberOfImages says (images missing on the PACS: a folder would be resampled with a note)."""
    import pydicom

    folder.mkdir(parents=True)
    count = 0
    per_position: Counter[tuple[float, ...]] = Counter()
    expected: dict[tuple[float, ...], int] = {}
    for data in client.iter_instances(study_uid, info.uid):
        (folder / f"{count:05d}.dcm").write_bytes(data)
        count += 1
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True,
                             specific_tags=["ImagePositionPatient", "CardiacNumberOfImages"])
        if "ImagePositionPatient" in ds and ds.get("CardiacNumberOfImages"):
            position = tuple(round(float(v), 1) for v in ds.ImagePositionPatient)
            per_position[position] += 1
            expected[position] = int(ds.CardiacNumberOfImages)
        if count % 25 == 0:
            step(count)
    step(count)
    for position, n in per_position.items():
        if n < expected[position]:
            raise PacsStudyError(
                f"study {study_uid} on {client.url}: series {info.number} '{info.description}' holds {n} of its "
                f"{expected[position]} cardiac phases (CardiacNumberOfImages) at position {list(position)} mm: "
                "images are missing on the PACS", "send the complete series to the PACS again; nothing was kept")
    return count


def _loader_reason(exc: Exception) -> str:
    """The loader's message without its list of temporary file paths."""
    return str(exc.args[0] if exc.args else exc).split(" [files:")[0]


def source_headers(cache: str | Path, study_uid: str) -> list[Any]:
    """The headers (no pixels) of the study's cached source files, for the results written back."""
    import pydicom

    folder = source_dir(cache, study_uid)
    if not (folder / "pacs.json").is_file():
        raise PacsStudyError(f"study {study_uid} was not fetched from a PACS into {cache}",
                             "fetch it again (stran import --dicomweb URL --study UID)")
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.rglob("*.dcm"))]


def pacs_origin(cache: str | Path, study_uid: str) -> dict[str, Any] | None:
    """``pacs.json`` of a cached study (the PACS URL and UIDs it came from), or None for a study of another origin."""
    path = source_dir(cache, study_uid) / "pacs.json"
    return json.loads(path.read_text()) if path.is_file() else None
