"""``stran detect`` over a cohort folder: worker processes give the sequential numbers, a killed run resumes without
half-written files, and two torchrun processes split the cohort into one output folder and one results database.

Real studies from the phantom generator (six small ones: 96 x 96 pixels, 12 phases) plus one broken file, which
every run reports and skips (exit status 1) while doing the others.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from stran.cli import main
from stran.io import read_nifti, write_datastore_study
from stran.resultsdb import ResultsDB

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"
N = 6
BROKEN = "BROKEN-1"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from stran.phantom import generate_study, sample_config

    folder = tmp_path_factory.mktemp("cohort")
    for k in range(N):
        config = sample_config(500 + k, scenario="ABCD"[k % 4])
        small = dataclasses.replace(config.acquisition, rows=96, cols=96, n_phases=12)
        write_datastore_study(generate_study(dataclasses.replace(config, acquisition=small)).cine, folder,
                              f"PHANTOM-{500 + k}")
    (folder / f"{BROKEN}.nii.gz").write_bytes(b"not a NIfTI file")
    (folder / "notes.txt").write_text("not a study")
    return folder


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("STRAN_MODEL", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")}
    e.update(OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1")
    return e


def detect(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PYTHON), "-m", "stran.cli", "detect", *args], cwd=REPO, env=env(), capture_output=True,
                          text=True, timeout=timeout)


def results(out: Path) -> dict[str, dict]:
    return {p.name.removesuffix(".json"): json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}


def no_temporaries(out: Path) -> None:
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")]


def test_what_counts_as_a_cohort_folder(tmp_path: Path, make_study) -> None:
    from stran.engine.study_list import cohort_members, find_studies
    from stran.io import write_dicom

    a, b = make_study(seed=1), make_study(seed=2)
    assert a.study_uid != b.study_uid
    write_dicom(a, tmp_path / "one")  # one series per slice, each in its own sub-folder: one study
    write_dicom(a, tmp_path / "flat", "single-series-slice-major")
    assert cohort_members(tmp_path / "one") is None and cohort_members(tmp_path / "flat") is None
    write_dicom(a, tmp_path / "two" / "p1")
    write_dicom(b, tmp_path / "two" / "p2", "single-series-slice-major")
    assert cohort_members(tmp_path / "two") == [tmp_path / "two" / "p1", tmp_path / "two" / "p2"]
    mixed = tmp_path / "mixed"
    write_datastore_study(a, mixed, "n1")
    write_dicom(b, mixed / "p2")
    (mixed / "n1.attention.nii.gz").write_bytes(b"an output")
    (mixed / "notes.txt").write_text("not a study")
    (mixed / "results").mkdir()
    assert cohort_members(mixed) == [mixed / "n1.nii.gz", mixed / "p2"]
    (tmp_path / "n1.nii").write_bytes(b"")
    lines: list[str] = []
    jobs, skipped = find_studies([str(mixed), str(tmp_path / "one"), str(tmp_path / "n1.nii"), "nowhere"],
                                 lines.append)
    assert [j.image_id for j in jobs] == ["n1", "p2", "one"] and skipped == 2
    assert "same id n1" in lines[0] and "nowhere: no such file" in lines[1]


def test_workers_give_the_sequential_numbers(cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sequential, parallel = tmp_path / "sequential", tmp_path / "parallel"
    assert main(["detect", str(cohort), "--out", str(sequential), "--mc-samples", "0", "--workers", "0"]) == 1
    err = capsys.readouterr().err
    assert f"skipped {BROKEN}" in err and f"{N + 1} studies: {N} detected, 0 already done (skipped), 1 failed" in err
    done = detect(str(cohort), "--out", str(parallel), "--mc-samples", "0", "--workers", "2")
    assert done.returncode == 1, done.stderr
    assert f"skipped {BROKEN}" in done.stderr and "(2 workers," in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    a, b = results(sequential), results(parallel)
    assert sorted(a) == sorted(b) == [f"PHANTOM-{500 + k}" for k in range(N)]
    for image_id in a:
        for key in ("study_probability", "slice_probabilities", "segment_probabilities"):
            x = np.array(a[image_id][key], dtype=float)  # None (slices without LV) -> nan in both
            y = np.array(b[image_id][key], dtype=float)
            np.testing.assert_allclose(x, y, atol=1e-6, rtol=0, equal_nan=True, err_msg=f"{image_id} {key}")
        assert a[image_id]["segment_map"] == b[image_id]["segment_map"]
        assert a[image_id]["input"] == b[image_id]["input"] and a[image_id]["study"] == b[image_id]["study"]
        maps = [read_nifti(out / f"{image_id}.attention.nii.gz").pixels for out in (sequential, parallel)]
        np.testing.assert_allclose(maps[0], maps[1], atol=1.01 / 255)
    no_temporaries(parallel)


def test_a_stopped_run_resumes_and_skips_what_it_wrote(cohort: Path, tmp_path: Path) -> None:
    import psutil

    out, db_path = tmp_path / "out", tmp_path / "r.sqlite"
    run = subprocess.Popen([str(PYTHON), "-m", "stran.cli", "detect", str(cohort), "--out", str(out),
                            "--mc-samples", "2", "--workers", "1", "--db", str(db_path)],
                           cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 150
    while len(list(out.glob("*.json"))) < 2 and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.05)
    workers = [p.pid for p in psutil.Process(run.pid).children(recursive=True)]
    run.send_signal(signal.SIGTERM)  # what torchrun sends; Ctrl+C (SIGINT) takes the same path
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    assert "interrupted" in err and "run the same command again to resume" in err and "Traceback" not in err, err
    first = results(out)
    assert 2 <= len(first) < N, err
    no_temporaries(out)
    time.sleep(1.5)  # workers end with their parent (stran.lifetime) within a second
    assert workers and not [pid for pid in workers if psutil.pid_exists(pid)
                            and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]

    again = detect(str(cohort), "--out", str(out), "--mc-samples", "0", "--workers", "1", "--db", str(db_path))
    assert again.returncode == 1, again.stderr  # the broken study, again
    assert f"{len(first)} of {N + 1} studies already have results" in again.stderr, again.stderr
    assert f"{N - len(first)} detected, {len(first)} already done (skipped), 1 failed" in again.stderr, again.stderr
    final = results(out)
    assert len(final) == N and all(final[k]["detection_id"] == first[k]["detection_id"] for k in first)
    no_temporaries(out)
    with ResultsDB(db_path) as db:
        assert sorted(d["detection_id"] for d in db.detections()) == sorted(r["detection_id"] for r in final.values())


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun over local processes")
def test_two_torchrun_processes_split_the_cohort(cohort: Path, tmp_path: Path) -> None:
    out, db_path = tmp_path / "out", tmp_path / "results.sqlite"
    done = subprocess.run(
        [str(PYTHON), "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "stran.cli",
         "detect", str(cohort), "--out", str(out), "--mc-samples", "0", "--db", str(db_path)],
        cwd=REPO, env=env(), capture_output=True, text=True, timeout=240)
    log = done.stdout + done.stderr
    assert done.returncode == 1, log  # the broken study; the other rank was not stopped before it finished
    assert log.count(f"skipped {BROKEN}") == 1, log
    lines = [line for line in log.splitlines() if line.startswith("stran detect (rank ")]
    summaries = sorted(line.split(":")[0] for line in lines if "detected" in line)
    assert summaries == ["stran detect (rank 0 of 2)", "stran detect (rank 1 of 2)"], log
    found = results(out)
    assert sorted(found) == [f"PHANTOM-{500 + k}" for k in range(N)]
    printed = [line.split(":")[0] for line in done.stdout.splitlines() if line.startswith("PHANTOM-")]
    assert sorted(printed) == sorted(found), log  # each study detected once, by one rank
    no_temporaries(out)
    with ResultsDB(db_path) as db:
        rows = db.detections()
        assert sorted(r["detection_id"] for r in rows) == sorted(r["detection_id"] for r in found.values())
        assert db.counts()["studies"] == N
