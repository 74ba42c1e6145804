"""CineScarLib.study_report: the module's one-click report is the command line's page (stran/report/render.py loaded
as CineScarLib.report), written atomically into the folder the user chose, with plain errors."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "slicer_extension" / "CineScar"))

from CineScarLib import study_report  # noqa: E402
from CineScarLib.volume import Volume4D  # noqa: E402

PIL = pytest.importorskip("PIL.Image")
pytest.importorskip("matplotlib")

T, S, H, W = 6, 4, 40, 40


def detection() -> tuple[dict, Volume4D, Volume4D]:
    yy, xx = np.mgrid[0:H, 0:W]
    ring = np.abs(np.hypot(yy - 20, xx - 20) - 10) < 3
    cine = np.zeros((T, S, H, W), np.float32)
    scar = np.zeros((T, S, H, W), np.float32)
    cine[:, :, ring] = 500.0
    scar[:, 2][:, ring & (xx > 22)] = 0.9
    affine = np.diag([1.5, 1.5, 8.0, 1.0])
    result = {"detection_id": "d1", "image_id": "PHANTOM/../x 1", "study_probability": 0.81, "threshold": 0.5,
              "prediction": 1, "prediction_label": "scar", "slice_probabilities": [0.1, 0.3, 0.9, None],
              "segment_probabilities": [0.1] * 8 + [0.9] * 9, "created_utc": "2026-12-03T10:00:00Z",
              "model": {"name": "stran", "version": "1", "sha256": "a" * 64},
              "uncertainty": {"std": 0.05}, "study": {"study_uid": "2.25.7", "slices": S, "phases": T}}
    return result, Volume4D(cine, affine, 40.0), Volume4D(scar, affine, 40.0)


def test_writes_png_and_pdf_named_after_the_study(tmp_path) -> None:
    result, cine, scar = detection()
    paths = study_report.write_study_report(result, cine, scar, tmp_path, image_id="PHANTOM-1")
    assert [p.name for p in paths] == ["PHANTOM-1.report.png", "PHANTOM-1.report.pdf"]
    image = PIL.open(io.BytesIO(paths[0].read_bytes()))
    assert image.format == "PNG" and min(image.size) > 500
    assert paths[1].read_bytes().startswith(b"%PDF")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temporary file left


def test_the_page_is_the_command_lines(tmp_path) -> None:
    """Same inputs, same bytes as CineScarLib.report.report_bytes (the stran page) with (S, T, H, W) arrays."""
    from CineScarLib import report

    result, cine, scar = detection()
    png, pdf = study_report.write_study_report(result, cine, scar, tmp_path, image_id="x")
    expected = report.report_bytes(result, cine.array.transpose(1, 0, 2, 3), scar.array.transpose(1, 0, 2, 3))
    assert (png.read_bytes(), pdf.read_bytes()) == expected
    assert Path(report.__file__).name in ("render.py", "report.py")


def test_a_file_name_never_leaves_the_folder(tmp_path) -> None:
    result, cine, scar = detection()
    assert study_report.report_stem(result) == "PHANTOM_.._x_1.report"
    assert study_report.report_stem({"study": {}}, "../../etc/passwd") == "etc_passwd.report"
    paths = study_report.write_study_report(result, cine, scar, tmp_path)
    assert all(p.parent == tmp_path for p in paths)


def test_map_off_the_cine_grid_is_left_out() -> None:
    _, cine, scar = detection()
    other = Volume4D(scar.array[:, :, :20], scar.affine, 40.0)
    pixels, map_ = study_report.page_arrays(cine, other)
    assert pixels.shape == (S, T, H, W) and map_ is None


def test_plain_errors_and_nothing_written(tmp_path, monkeypatch) -> None:
    result, cine, scar = detection()
    with pytest.raises(study_report.ReportError, match="does not exist"):
        study_report.write_study_report(result, cine, scar, tmp_path / "missing")
    with pytest.raises(study_report.ReportError, match="click Detect first"):
        study_report.write_study_report({}, cine, scar, tmp_path)
    with pytest.raises(study_report.ReportError, match="is not on the study's grid|cannot be drawn"):
        bad = dict(result, slice_probabilities=[0.5] * (S + 3))
        study_report.write_study_report(bad, cine, scar, tmp_path)
    monkeypatch.setattr(study_report, "matplotlib_available", lambda: False)
    with pytest.raises(study_report.ReportError, match="needs matplotlib"):
        study_report.write_study_report(result, cine, scar, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_new_report_replaces_the_old_one(tmp_path) -> None:
    result, cine, scar = detection()
    first = study_report.write_study_report(result, cine, scar, tmp_path, image_id="s")
    old = first[0].read_bytes()
    second = study_report.write_study_report(dict(result, study_probability=0.12, prediction=0,
                                                  prediction_label="no scar"), cine, scar, tmp_path, image_id="s")
    assert second == first and second[0].read_bytes() != old
    assert len(list(tmp_path.iterdir())) == 2
