"""``load_study``: one entry point for every input the project accepts."""

from __future__ import annotations

from pathlib import Path

from stran.io.errors import StudyNotFoundError, UnsupportedFormatError
from stran.io.study import CineStudy


def load_study(path: str | Path, *, max_bytes: int | None = None) -> CineStudy:
    """Load a short-axis cine study.

    - a folder: DICOM files found recursively (classic single-frame in any
      series layout, or Enhanced MR multi-frame); other files are left out
      and listed in ``study.left_out``;
    - a ``.nii`` / ``.nii.gz`` file: our datastore format when
      ``<stem>.cine.json`` lies beside it, else a plain 4-D (x, y, z, t) file
      (ACDC / M&Ms layout);
    - any other file: one DICOM file (Enhanced MR multi-frame).

    ``max_bytes`` caps the float32 pixel memory (default: $STRAN_MAX_STUDY_BYTES,
    else 2 GiB); the size is estimated from headers before pixels are read.
    Raises a ``CineLoadError`` subclass naming the problem and the files.
    """
    p = Path(path)
    if not p.exists():
        raise StudyNotFoundError(
            f"{p} does not exist: give a DICOM folder, a DICOM file or a .nii/.nii.gz file.", [str(p)]
        )
    if p.is_dir():
        from stran.io.dicom_reader import read_dicom_study
        from stran.io.errors import NoCineSeriesError

        try:
            return read_dicom_study(p, max_bytes=max_bytes)
        except NoCineSeriesError as exc:
            nifti = [f for f in sorted(p.rglob("*.nii*")) if f.name.endswith((".nii", ".nii.gz"))]
            if not nifti:
                raise
            raise NoCineSeriesError(
                f"{exc.args[0].split(' [files:')[0]} The folder holds NIfTI file(s): load one of them by its own path, "
                f"e.g. {nifti[0]}.",
                [str(f) for f in nifti[:5]] + exc.files,
            ) from exc
    name = p.name.lower()
    if name.endswith(".cine.json") or name.endswith(".nii") or name.endswith(".nii.gz"):
        from stran.io.nifti import read_datastore_study, read_nifti, sidecar_path

        if name.endswith(".cine.json") or sidecar_path(p).exists():
            return read_datastore_study(p, max_bytes=max_bytes)
        return read_nifti(p, max_bytes=max_bytes)
    from stran.io.dicom_reader import read_dicom_study
    from stran.io.errors import NoCineSeriesError

    try:
        return read_dicom_study(p, max_bytes=max_bytes)
    except NoCineSeriesError as exc:
        if not is_dicom_file(p):
            raise UnsupportedFormatError(
                f"{p} is neither DICOM nor NIfTI (.nii/.nii.gz): give a DICOM folder, an Enhanced MR DICOM file or a 4-D NIfTI.",
                [str(p)],
            ) from exc
        raise


def is_dicom_file(path: str | Path) -> bool:
    """Whether the file starts like DICOM: the ``DICM`` preamble, or a data set without it (group 0008 or 0002)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM" or head[:2] in (b"\x08\x00", b"\x02\x00")
