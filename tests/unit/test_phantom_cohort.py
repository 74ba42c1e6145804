"""Cohort writer and the ``python -m sample_data`` entry point (small n)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from stran.phantom import generate_cohort, generate_study, load_masks, sample_config
from stran.phantom.cohort import CSV_COLUMNS, cohort_plan, study_seed


def test_plan_is_balanced_deterministic_and_seed_disjoint():
    for n in (4, 10, 12, 37):
        plan = cohort_plan(n, 5)
        scar = sum(p["scenario"] in "AB" for p in plan)
        assert abs(scar - (n - scar)) <= 1
        counts = [sum(p["scenario"] == s for p in plan) for s in "ABCD"]
        assert max(counts) - min(counts) <= 1
    assert cohort_plan(12, 5) == cohort_plan(12, 5)
    assert {p["seed"] for p in cohort_plan(50, 1)}.isdisjoint(p["seed"] for p in cohort_plan(50, 2))
    assert cohort_plan(3, 0)[2]["id"] == "PHANTOM-000002" and study_seed(7, 3) == 700003
    mix = cohort_plan(20, 1, {"A": 1, "D": 3})
    assert sum(p["scenario"] == "A" for p in mix) == 5 and sum(p["scenario"] == "D" for p in mix) == 15
    with pytest.raises(ValueError):
        cohort_plan(4, 1, {"X": 1})


def test_generate_cohort_datastore(tmp_path):
    from stran.io import read_datastore_study

    out = tmp_path / "cohort"
    m = generate_cohort(out, 2, 3, workers=1, progress=False)
    assert m["n"] == 2 and m["layout"] == "datastore" and m["generated"] == 2 and m["seconds"] > 0
    assert m["label_counts"] == {"0": 1, "1": 1}
    assert m["generator_version"] and m["seed"] == 3
    assert json.loads((out / "manifest.json").read_text()) == m
    with open(out / "cohort.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == m["ids"] and tuple(rows[0]) == CSV_COLUMNS
    for row in rows:
        i = row["id"]
        label = json.loads((out / "labels" / f"{i}.scar.json").read_text())
        truth = json.loads((out / "truth" / f"{i}.truth.json").read_text())
        assert label["study_label"] == int(row["study_label"]) == truth["study_label"]
        assert label["slice_labels"] == truth["slice_labels"] and label["source"] == "LGE"
        assert sum(label["slice_labels"]) == int(row["n_scar_slices"])
        assert (row["scenario"] in "AB") == (label["study_label"] == 1)
        masks = load_masks(out / "truth" / f"{i}.masks.npz")
        study = read_datastore_study(out / "images" / f"{i}.nii.gz")
        assert masks.shape == study.pixels.shape
        assert study.patient_id == i and len(label["slice_labels"]) == study.n_slices
    # the files hold exactly what the generator makes for that study seed (exact round trip)
    first = rows[0]
    again = generate_study(sample_config(int(first["seed"]), first["scenario"], first["profile"]))
    stored = read_datastore_study(out / "images" / f"{first['id']}.nii.gz")
    assert np.array_equal(stored.pixels, again.cine.pixels)
    assert np.allclose(stored.affine, again.cine.affine) and stored.study_uid == again.cine.study_uid
    assert not list(out.rglob("*.tmp")) and not (out / ".partial").exists()

    # a rerun keeps the complete studies
    m2 = generate_cohort(out, 2, 3, workers=1, progress=False)
    assert m2["generated"] == 0 and m2["reused"] == 2 and m2["ids"] == m["ids"]


def test_generate_cohort_dicom_two_workers(tmp_path):
    from stran.io import load_study

    out = tmp_path / "dicom"
    m = generate_cohort(out, 2, 11, layout="dicom", workers=2, progress=False)
    assert m["generated"] == 2 and m["label_counts"] == {"0": 1, "1": 1}
    for i in m["ids"]:
        folder = out / "images" / i
        assert folder.is_dir() and any(folder.rglob("*.dcm"))
    first = cohort_plan(2, 11)[0]
    loaded = load_study(out / "images" / first["id"])
    again = generate_study(sample_config(first["seed"], first["scenario"], first["profile"]))
    assert np.array_equal(loaded.pixels, again.cine.pixels)
    assert np.allclose(loaded.trigger_times, again.cine.trigger_times, atol=0.01)


def test_sample_data_entry_point(tmp_path, capsys, monkeypatch):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))  # repo root: sample_data is not installed
    from sample_data.__main__ import main

    out = tmp_path / "samples"
    assert main(["--out", str(out), "--n", "2", "--seed", "4", "--workers", "1", "--quiet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("PHANTOM-400000")
    assert "x" in lines[0] and (" T" in lines[0]) and "2 studies (1 scar, 1 no scar)" in lines[-1]
    assert (out / "manifest.json").exists()


def test_cli_command_parses_mix_and_runs(tmp_path, capsys):
    import argparse

    from stran.phantom import command

    assert command.parse_mix("A=1, d=3") == {"A": 1.0, "D": 3.0} and command.parse_mix(None) is None
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args([str(tmp_path / "c"), "--n", "1", "--mix", "D=1", "--workers", "1", "--quiet"])
    assert command.run(args) == 0
    assert "1 studies" in capsys.readouterr().out
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["scenario_counts"] == {"D": 1}
