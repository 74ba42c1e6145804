"""DICOM study folders with stray broken files (or a broken cine frame) and zips of them, for the tests of the
server's DICOM import (tests/integration) and of the Slicer module's "Open DICOM folder" (tests/slicer).

The stray files are those of tests/unit/test_io_stray_files.py (its ``_strays``). Writing DICOM needs the server
venv (pydicom, stran); the Slicer-side tests run this file with that venv's Python::

    .venv/bin/python tests/dicom_fixture.py OUT_DIR [--broken] [--patient-id ID]   # prints the description (JSON)
"""

from __future__ import annotations

import io
import json
import os
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
N_SLICES, N_PHASES = 3, 4
BROKEN_CELL = (1, 2)  # 0-based (slice, phase) of the truncated frame: "slice 2 of 3 ... lacks phase 3 of 4"


def make_messy_study(out_dir: str | Path, *, broken: bool = False, patient_id: str = "DICOM-IMPORT-1") -> dict:
    """A series-per-slice study (3 slices x 4 phases) in ``out_dir/study`` with one stray file of each kind.

    Returns ``{"folder", "strays": {path relative to the folder: words of its left-out reason}, "broken": the
    truncated cine frame relative to the folder or None, "patient_id", "study_uid", "slices", "phases"}``."""
    sys.path.insert(0, str(HERE / "unit"))
    from test_io_stray_files import _cells, _strays, _truncated_copy

    from stran.io import write_dicom
    from stran.io.dicom_writer import write_series
    from stran.io.synthetic import make_cine_study

    out = Path(out_dir)
    folder = out / "study"
    study = make_cine_study(n_slices=N_SLICES, n_phases=N_PHASES, seed=3, patient_id=patient_id)
    other = write_series(make_cine_study(n_slices=3, n_phases=5, seed=9), out / "elsewhere", slices=[0],
                         series_number=99)
    files = write_dicom(study, folder, "series-per-slice")
    strays = _strays(folder, files, other)
    bad = None
    if broken:
        frames = {cell: f for f, cell in zip(files, _cells(files), strict=True)}
        bad = frames[BROKEN_CELL]
        _truncated_copy(bad, bad, "pixels")
    return {
        "folder": str(folder),
        "strays": {Path(p).relative_to(folder).as_posix(): why for p, why in strays.items()},
        "broken": bad.relative_to(folder).as_posix() if bad else None,
        "patient_id": patient_id,
        "study_uid": study.study_uid,
        "slices": N_SLICES,
        "phases": N_PHASES,
    }


def zip_folder(folder: str | Path, *, top: str = "") -> bytes:
    """Every file under ``folder`` in a ZIP (names relative to it, under ``top/`` if given)."""
    folder = Path(folder)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for base, _dirs, names in os.walk(folder):
            for name in sorted(names):
                path = Path(base) / name
                arcname = path.relative_to(folder).as_posix()
                archive.write(path, f"{top}/{arcname}" if top else arcname)
    return buffer.getvalue()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--broken", action="store_true", help="truncate one cine frame")
    parser.add_argument("--patient-id", default="DICOM-IMPORT-1")
    args = parser.parse_args()
    print(json.dumps(make_messy_study(args.out_dir, broken=args.broken, patient_id=args.patient_id)))
