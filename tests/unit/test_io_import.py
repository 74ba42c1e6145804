"""``stran import``: DICOM study folders into a datastore (4-D NIfTI + sidecar); unreadable ones are skipped and reported."""

from __future__ import annotations

import json

import nibabel as nib

from stran.cli import main
from stran.io import load_study, write_dicom


def test_import_a_folder_of_studies_and_report_what_was_skipped(tmp_path, make_study, capsys):
    source, datastore = tmp_path / "exports", tmp_path / "datastore"
    studies = {"patient A": make_study(n_slices=3, n_phases=5, seed=1),
               "patient-B": make_study(n_slices=4, n_phases=6, seed=2)}
    write_dicom(studies["patient A"], source / "patient A", "series-per-slice")
    write_dicom(studies["patient-B"], source / "patient-B", "single-series-slice-major")
    (source / "broken").mkdir()
    (source / "broken" / "IM0001.dcm").write_bytes(b"DICM but not really")

    assert main(["import", str(source), "--datastore", str(datastore)]) == 0
    out, err = capsys.readouterr()
    assert "2 studies imported" in out and "1 skipped" in out
    assert "broken: No cine MR images found" in err and "not a DICOM file" in err and "Traceback" not in err
    assert sorted(p.name for p in datastore.glob("*.nii.gz")) == ["patient-B.nii.gz", "patient_A.nii.gz"]
    for image_id, study in (("patient_A", studies["patient A"]), ("patient-B", studies["patient-B"])):
        nii = nib.load(datastore / f"{image_id}.nii.gz")
        assert nii.shape[2:] == (study.n_slices, study.n_phases)
        sidecar = json.loads((datastore / f"{image_id}.cine.json").read_text())
        assert sidecar["study_uid"] == study.study_uid  # identity survives from DICOM to the datastore
        assert load_study(datastore / f"{image_id}.nii.gz").study_uid == study.study_uid
    assert not [p for p in datastore.iterdir() if p.name.startswith(".")]  # no temporary files left

    before = {p.name: p.stat().st_mtime_ns for p in datastore.iterdir()}
    assert main(["import", str(source / "patient A"), "--datastore", str(datastore)]) == 1  # nothing new
    assert "already in the datastore" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in datastore.iterdir()} == before
