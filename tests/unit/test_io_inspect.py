"""``stran inspect``: text table, --json, and exit code 2 without a traceback on a load error."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from stran.cli import main
from stran.io import write_dicom


def _folder(tmp_path, make_study):
    study = make_study(n_slices=3, n_phases=5, rr_jitter=0.05)
    write_dicom(study, tmp_path, "series-per-slice")
    (tmp_path / "README.txt").write_text("not dicom")
    return study


def test_inspect_text(tmp_path, make_study, capsys):
    study = _folder(tmp_path, make_study)
    assert main(["inspect", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "slices x phases       3 x 5" in out
    assert "32 x 40" in out and "1.5 x 1.5 mm" in out and "8 mm" in out
    assert "SIEMENS" in out and "1.5 T" in out
    assert study.study_uid in out and study.series_uids[1] in out and study.patient_id in out
    assert "Left out (1 file(s)):" in out and "README.txt" in out and "not a DICOM file" in out
    assert "RR interval differs" in out


def test_inspect_json(tmp_path, make_study, capsys):
    study = _folder(tmp_path, make_study)
    assert main(["inspect", str(tmp_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["slices"] == 3 and info["phases"] == 5 and info["matrix"] == [32, 40]
    assert info["study_uid"] == study.study_uid
    assert info["series_uids"] == study.series_uids
    assert np.allclose(info["rr_intervals_ms"], study.rr_intervals)
    assert np.allclose(info["trigger_times_ms"], study.trigger_times, atol=0.01)
    assert len(info["slice_positions_mm"]) == 3
    assert info["left_out"] == [{"path": str(tmp_path / "README.txt"), "reason": "not a DICOM file"}]


def test_inspect_error_exit_code(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("x")
    assert main(["inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stran inspect: error: No cine MR images") and err.count("\n") == 1
    proc = subprocess.run(
        [sys.executable, "-m", "stran.cli", "inspect", str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert f"{tmp_path / 'nope'} does not exist" in proc.stderr and "Traceback" not in proc.stderr
