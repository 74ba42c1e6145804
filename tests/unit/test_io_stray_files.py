"""One stray broken file must not sink a study: left out when the cine is complete, a named error when it is not.

The same rule through every entry point of the command line: ``load_study``, ``stran inspect``, ``stran import``
and ``stran detect`` (the server's DICOM import and the Slicer module's "open DICOM folder" are tested against a
real server in tests/integration and tests/slicer).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from stran.cli import main
from stran.io import MissingPhaseError, load_study, write_dicom
from stran.io.dicom_writer import write_series

ROOT = Path(__file__).resolve().parents[2]
LAYOUTS = ["single-series-slice-major", "series-per-slice"]


def _truncated_copy(src: Path, dst: Path, cut: str) -> None:
    raw = src.read_bytes()
    dst.write_bytes({"pixels": raw[: len(raw) - 700], "header": raw[:900], "meta": raw[:200]}[cut])


def _strays(folder: Path, files: list[Path], other_series: list[Path]) -> dict[str, str]:
    """Write one of each stray kind; returns {path: words its left-out reason must contain}."""
    (folder / "sub").mkdir(exist_ok=True)
    strays = {
        folder / "empty.dcm": "not a DICOM file",
        folder / ".DS_Store": "not a DICOM file",
        folder / "sub" / "notes.txt": "not a DICOM file",
        folder / "copy_of_frame.dcm": "not needed",  # truncated copy of a cine frame (same SOPInstanceUID)
        folder / "sub" / "cut_header.dcm": "not needed",  # cut inside the header: which image it was is unknown
        folder / "other_series_cut.dcm": "another series",  # a truncated file of another series
    }
    (folder / "empty.dcm").write_bytes(b"")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(range(256)) * 8)
    (folder / "sub" / "notes.txt").write_text("exported by the scanner console\n")
    _truncated_copy(files[3], folder / "copy_of_frame.dcm", "pixels")
    _truncated_copy(files[5], folder / "sub" / "cut_header.dcm", "meta")
    _truncated_copy(other_series[0], folder / "other_series_cut.dcm", "pixels")
    return {str(p): why for p, why in strays.items()}


@pytest.fixture
def other_series(tmp_path, make_study):
    other = make_study(n_slices=3, n_phases=5, seed=9)
    return write_series(other, tmp_path / "elsewhere", slices=[0], series_number=99)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_stray_broken_files_are_left_out_and_the_cine_loads(tmp_path, make_study, other_series, layout):
    study = make_study(n_slices=3, n_phases=4)
    clean, messy = tmp_path / "clean", tmp_path / "messy"
    files = write_dicom(study, clean, layout)
    shutil.copytree(clean, messy)
    moved = [messy / f.relative_to(clean) for f in files]
    strays = _strays(messy, moved, other_series)

    reference = load_study(clean)
    loaded = load_study(messy)
    np.testing.assert_array_equal(loaded.pixels, reference.pixels)
    assert loaded.sop_uids.tolist() == reference.sop_uids.tolist()
    reasons = {e.path: e.reason for e in loaded.left_out}
    for path, words in strays.items():
        assert path in reasons, (path, reasons)
        assert words in reasons[path], (path, reasons[path])
    assert not any(str(f) in reasons for f in moved)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cut", ["pixels", "header", "meta"])
def test_a_broken_cine_frame_names_the_slice_the_phase_and_the_file(tmp_path, make_study, layout, cut):
    study = make_study(n_slices=3, n_phases=4)
    files = write_dicom(study, tmp_path, layout)
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    frames = {(s, t): f for f, (s, t) in zip(files, _cells(files), strict=True)}
    bad = frames[(1, 2)]
    _truncated_copy(bad, bad, cut)
    with pytest.raises(MissingPhaseError) as info:
        load_study(tmp_path)
    message = str(info.value)
    assert "slice 2 of 3" in message and "lacks phase 3 of 4" in message and str(bad) in message
    assert info.value.missing == [(1, 2, str(bad))]


def _cells(files: list[Path]) -> list[tuple[int, int]]:
    """(slice, phase) of each written file, read back from its header (layouts order files differently)."""
    import pydicom

    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    normal = np.cross(np.array(headers[0].ImageOrientationPatient[:3], float),
                      np.array(headers[0].ImageOrientationPatient[3:], float))
    pos = [round(float(np.dot(np.array(h.ImagePositionPatient, float), normal)), 2) for h in headers]
    slices = sorted(set(pos))
    cells = []
    for h, p in zip(headers, pos, strict=True):
        times = sorted(float(g.TriggerTime) for g, q in zip(headers, pos, strict=True) if q == p)
        cells.append((slices.index(p), times.index(float(h.TriggerTime))))
    return cells


def _messy_study(tmp_path, make_study, other_series) -> tuple[Path, dict[str, str]]:
    folder = tmp_path / "exports" / "patient-1"
    files = write_dicom(make_study(n_slices=4, n_phases=6, seed=3), folder, "series-per-slice")
    return folder, _strays(folder, files, other_series)


def test_inspect_lists_the_stray_files_under_files_left_out(tmp_path, make_study, other_series, capsys):
    folder, strays = _messy_study(tmp_path, make_study, other_series)
    assert main(["inspect", str(folder)]) == 0
    out = capsys.readouterr().out
    assert f"Left out ({len(strays)} file(s)):" in out
    for path in strays:
        assert path in out
    assert main(["inspect", str(folder), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {e["path"] for e in info["left_out"]} == set(strays)


def test_inspect_of_a_broken_cine_frame_fails_in_one_line(tmp_path, make_study, capsys):
    files = write_dicom(make_study(n_slices=3, n_phases=4), tmp_path, "series-per-slice")
    _truncated_copy(files[6], files[6], "pixels")
    assert main(["inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "lacks phase" in err and str(files[6]) in err and "Traceback" not in err


def test_import_keeps_the_study_and_reports_what_it_left_out(tmp_path, make_study, other_series, capsys):
    folder, strays = _messy_study(tmp_path, make_study, other_series)
    datastore = tmp_path / "datastore"
    assert main(["import", str(folder.parent), "--datastore", str(datastore)]) == 0
    out = capsys.readouterr().out
    assert "1 studies imported" in out and f"{len(strays)} files left out" in out
    for path in strays:
        assert f"left out {path}" in out
    sidecar = json.loads((datastore / "patient-1.cine.json").read_text())
    assert sidecar["study_uid"] == load_study(datastore / "patient-1.nii.gz").study_uid


@pytest.mark.slow
def test_detect_runs_on_a_folder_with_stray_files(tmp_path, make_study, other_series, capsys):
    from stran.phantom import generate_study, sample_config

    phantom = generate_study(sample_config(4242, scenario="B"))
    folder = tmp_path / "study"
    files = write_dicom(phantom.cine, folder, "series-per-slice")
    strays = _strays(folder, files, other_series)
    out = tmp_path / "results"
    model = ROOT / "apps" / "stran" / "model" / "pretrained_scar.pt"
    assert main(["detect", str(folder), "--model", str(model), "--out", str(out), "--mc-samples", "0"]) == 0
    printed = capsys.readouterr().out
    for path in strays:
        assert f"left out {path}" in printed
    result = json.loads((out / "study.json").read_text())
    assert {e["path"] for e in result["input"]["left_out"]} == set(strays)
    assert result["study"]["study_uid"] == phantom.cine.study_uid
