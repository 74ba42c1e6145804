"""Studies from a real PACS (Debian's Orthanc with its DICOMweb plugin) and results back to it, from the command line.

Every layout the cine loader accepts arrives intact through QIDO-RS + WADO-RS; ``stran detect --dicomweb`` stores a
TID 1500 SR and a fractional SEG once per model and study, whose numbers read back equal the JSON result; and every
fault (no answer, wrong password, no cine, a series missing images, a transfer cut half way) ends in one line that
names the study, with nothing half-written in the cache.
"""

from __future__ import annotations

import json
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from stran.cli import main
from stran.io import load_study, write_dicom
from stran.io.dicom_writer import frame_of_reference_uid, write_series
from stran.io.synthetic import SAX_ANGLES_DEG, orientation_from_angles
from stran.pacs.client import Credentials, PacsClient
from stran.pacs.fetch import PACS_DIR
from stran.pacs.report import read_detection_sr
from stran.resultsdb import ResultsDB

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from net_faults import CuttingProxy  # noqa: E402
from server_fixture import free_port  # noqa: E402

PASSWORD = "s3cret-pacs-pw"


@pytest.fixture(scope="module")
def phantom() -> Any:
    """A phantom study with scar (the detector localises the heart on it), 10 slices x 25 phases."""
    from stran.phantom import generate_study, sample_config

    return generate_study(sample_config(4243, scenario="A")).cine


def send(pacs: Any, files: list[Path]) -> None:
    pacs.upload([str(f) for f in files])


def only_line(capsys: pytest.CaptureFixture[str], status: int, *words: str) -> str:
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, (word, err)
    return err


def nothing_half_written(cache: Path) -> None:
    """No study, no sidecar and no temporary folder in the cache."""
    assert not list(cache.glob("*.nii.gz")) and not list(cache.glob("*.cine.json"))
    assert not [p for p in (cache / PACS_DIR).glob("*")] if (cache / PACS_DIR).exists() else True


# ------------------------------------------------------------------------------------------------ studies from it


@pytest.mark.parametrize("layout", ["series-per-slice", "single-series-slice-major", "single-series-phase-major",
                                    "enhanced"])
def test_every_layout_arrives_as_the_loader_groups_a_folder(pacs, make_study, tmp_path, capsys, layout) -> None:
    study = make_study(n_slices=4, n_phases=6, seed=5)
    send(pacs, write_dicom(study, tmp_path / "dcm", layout))
    status = main(["import", "--dicomweb", pacs.dicomweb_url, "--study", study.study_uid,
                   "--datastore", str(tmp_path / "ds")])
    assert status == 0, capsys.readouterr().err
    cached = load_study(tmp_path / "ds" / f"{study.study_uid}.nii.gz")
    local = load_study(tmp_path / "dcm")
    assert np.array_equal(cached.pixels, local.pixels) and np.array_equal(cached.pixels, study.pixels)
    assert cached.study_uid == study.study_uid and cached.series_uids == local.series_uids
    assert (cached.sop_uids == local.sop_uids).all()
    assert cached.source == f"dicomweb {pacs.dicomweb_url} study {study.study_uid}"
    origin = json.loads((tmp_path / "ds" / PACS_DIR / study.study_uid / "pacs.json").read_text())
    assert origin["study_uid"] == study.study_uid and origin["series_uids"] == list(dict.fromkeys(local.series_uids))


def test_repeats_localizers_and_our_own_results_are_left_out(pacs, make_study, tmp_path, capsys) -> None:
    study = make_study(n_slices=3, n_phases=4, seed=1)
    redo = make_study(n_slices=3, n_phases=4, seed=7)
    same = {"study_uid": study.study_uid, "frame_of_reference_uid": frame_of_reference_uid(study)}
    files = write_dicom(study, tmp_path / "dcm", "series-per-slice", series_number=5, acquisition_time="120000")
    files += write_series(redo, tmp_path / "dcm", slices=[0], series_number=5, acquisition_time="121500",
                          prefix="RE", **same)  # slice 0 acquired again (a repeated breath-hold)
    tagged = make_study(n_slices=1, n_phases=1, iop=orientation_from_angles(SAX_ANGLES_DEG), origin=(5, 5, 5), seed=40)
    files += write_series(tagged, tmp_path / "dcm", series_number=2, prefix="TAG", **same,
                          image_type=("ORIGINAL", "PRIMARY", "M", "LOCALIZER"))
    send(pacs, files)
    assert main(["import", "--dicomweb", pacs.dicomweb_url, "--study", study.study_uid,
                 "--datastore", str(tmp_path / "ds")]) == 0, capsys.readouterr().err
    cached = load_study(tmp_path / "ds" / f"{study.study_uid}.nii.gz")
    assert np.array_equal(cached.pixels[0], redo.pixels[0]) and np.array_equal(cached.pixels[1:], study.pixels[1:])
    assert any("acquired 2 times" in n for n in cached.notes)


def test_inspect_lists_the_cine_studies(pacs, make_study, tmp_path, capsys) -> None:
    cine = make_study(n_slices=3, n_phases=4, seed=2)
    single = make_study(n_slices=1, n_phases=1, seed=3)  # one MR image: not a cine
    send(pacs, write_dicom(cine, tmp_path / "a", "series-per-slice") + write_dicom(single, tmp_path / "b"))
    assert main(["inspect", "--dicomweb", pacs.dicomweb_url, "--json"]) == 0
    rows = {r["study_uid"]: r for r in json.loads(capsys.readouterr().out)["studies"]}
    assert rows[cine.study_uid]["cine_series"] == 3 and rows[single.study_uid]["cine_series"] == 0
    client = PacsClient(pacs.dicomweb_url)
    assert [s.uid for s in client.cine_studies()] == [cine.study_uid]


# ------------------------------------------------------------------------------------------------ results back


def test_detect_stores_sr_and_seg_once_and_they_read_back_as_the_json(pacs, phantom, tmp_path, capsys) -> None:
    send(pacs, write_dicom(phantom, tmp_path / "dcm", "series-per-slice"))
    uid, db_path = phantom.study_uid, tmp_path / "results.sqlite"
    args = ["detect", "--dicomweb", pacs.dicomweb_url, "--study", uid, "--out", str(tmp_path / "out"),
            "--db", str(db_path), "--mc-samples", "4"]
    assert main(args) == 0, capsys.readouterr().err
    first = json.loads((tmp_path / "out" / f"{uid}.json").read_text())
    # The same model again (--overwrite: else the result in --out counts as done): the same UIDs, no second copy.
    assert main([*args, "--overwrite"]) == 0, capsys.readouterr().err
    record = first["pacs"]
    assert record["url"] == pacs.dicomweb_url and record["study_uid"] == uid and record["map_kind"] == "SEG"
    client = PacsClient(pacs.dicomweb_url)
    series = {s.uid: s for s in client.series(uid)}
    assert series[record["sr_series_uid"]].modality == "SR" and series[record["sr_series_uid"]].n_instances == 1
    assert series[record["map_series_uid"]].modality == "SEG" and series[record["map_series_uid"]].n_instances == 1
    assert sum(s.n_instances or 0 for s in series.values()) == phantom.n_slices * phantom.n_phases + 2

    sr = client.instance(uid, record["sr_series_uid"], record["sr_sop_uid"])
    back = read_detection_sr(sr)
    assert back["study_uid"] == uid and back["prediction"] == first["prediction"]
    for key in ("study_probability", "threshold"):
        assert back[key] == pytest.approx(first[key], abs=1e-9)
    assert [p is None for p in back["slice_probabilities"]] == [p is None for p in first["slice_probabilities"]]
    assert np.allclose([p for p in back["slice_probabilities"] if p is not None],
                       [p for p in first["slice_probabilities"] if p is not None], atol=1e-9, rtol=0)
    assert np.allclose(back["segment_probabilities"], first["segment_probabilities"], atol=1e-9, rtol=0)
    assert back["model"]["sha256"] == first["model"]["sha256"]
    assert back["uncertainty"]["std"] == pytest.approx(first["uncertainty"]["std"], abs=1e-9)

    seg = client.instance(uid, record["map_series_uid"], record["map_sop_uid"])
    referenced = {ref.ReferencedSOPInstanceUID for item in seg.ReferencedSeriesSequence
                  for ref in item.ReferencedInstanceSequence}
    assert referenced <= {str(v) for v in phantom.sop_uids.ravel()}

    with ResultsDB(db_path) as db:
        exports = db.pacs_exports(study_uid=uid)
    assert len(exports) == 2 and {e["sr_sop_uid"] for e in exports} == {record["sr_sop_uid"]}
    assert {e["pacs_url"] for e in exports} == {pacs.dicomweb_url}


# ------------------------------------------------------------------------------------------------ faults


def test_no_answer_is_one_line_and_fetches_nothing(tmp_path, capsys) -> None:
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    status = main(["detect", "--dicomweb", url, "--study", "1.2.3", "--out", str(tmp_path / "out")])
    only_line(capsys, status, "no answer from the PACS", url, "check the URL")
    nothing_half_written(tmp_path / "out" / "pacs-cache")


def test_wrong_password_is_refused_and_never_shown(orthanc_auth, make_study, tmp_path, capsys, monkeypatch) -> None:
    study = make_study(n_slices=3, n_phases=4, seed=8)
    orthanc_auth.upload([str(f) for f in write_dicom(study, tmp_path / "dcm", "series-per-slice")])
    wrong = "not-the-" + PASSWORD
    status = main(["import", "--dicomweb", orthanc_auth.dicomweb_url, "--study", study.study_uid,
                   "--datastore", str(tmp_path / "ds"), "--pacs-user", "reader", "--pacs-password", wrong])
    err = only_line(capsys, status, "refused the credentials", "HTTP 401", "STRAN_PACS_USER")
    assert wrong not in err
    nothing_half_written(tmp_path / "ds")
    # In the URL or from the environment, the right one works; it appears in no output, file or log.
    host = urllib.parse.urlsplit(orthanc_auth.dicomweb_url)
    in_url = f"http://reader:{PASSWORD}@{host.netloc}{host.path}"
    monkeypatch.setenv("STRAN_PACS_USER", "reader")
    monkeypatch.setenv("STRAN_PACS_PASSWORD", PASSWORD)
    assert main(["detect", "--dicomweb", orthanc_auth.dicomweb_url, "--study", study.study_uid, "--out",
                 str(tmp_path / "out"), "--db", str(tmp_path / "r.sqlite"), "--mc-samples", "0"]) == 0
    assert main(["import", "--dicomweb", in_url, "--study", study.study_uid, "--datastore", str(tmp_path / "ds2")]) == 0
    out = capsys.readouterr()
    assert PASSWORD not in out.out + out.err
    for path in [*tmp_path.rglob("*.json"), *tmp_path.rglob("*.sqlite")]:
        assert PASSWORD.encode() not in path.read_bytes(), path


def test_a_study_without_cine_names_the_study(pacs, make_study, tmp_path, capsys) -> None:
    single = make_study(n_slices=1, n_phases=1, seed=3)
    send(pacs, write_dicom(single, tmp_path / "dcm"))
    status = main(["import", "--dicomweb", pacs.dicomweb_url, "--study", single.study_uid,
                   "--datastore", str(tmp_path / "ds")])
    err = capsys.readouterr().err
    assert status == 1 and single.study_uid in err and "no short-axis cine" in err, err
    nothing_half_written(tmp_path / "ds")


def test_a_series_missing_images_names_the_study_and_the_slice(pacs, make_study, tmp_path, capsys) -> None:
    study = make_study(n_slices=3, n_phases=5, seed=4)
    files = write_dicom(study, tmp_path / "dcm", "series-per-slice")
    send(pacs, [f for f in files if f != files[7]])  # slice 2 lacks one phase on the PACS itself
    status = main(["detect", "--dicomweb", pacs.dicomweb_url, "--study", study.study_uid,
                   "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 1 and study.study_uid in err and "holds 4 of its 5 cardiac phases" in err, err
    assert "images are missing on the PACS" in err and "send the complete series" in err
    nothing_half_written(tmp_path / "out" / "pacs-cache")


def test_a_transfer_cut_half_way_keeps_nothing(pacs, make_study, tmp_path, capsys) -> None:
    study = make_study(n_slices=4, n_phases=10, rows=64, cols=64, seed=6)
    send(pacs, write_dicom(study, tmp_path / "dcm", "single-series-slice-major"))
    port = urllib.parse.urlsplit(pacs.dicomweb_url).port
    with CuttingProxy("127.0.0.1", port, cut_after=150_000) as proxy:
        status = main(["import", "--dicomweb", proxy.url_for("/dicom-web"), "--study", study.study_uid,
                       "--datastore", str(tmp_path / "ds")])
    err = capsys.readouterr().err
    assert status in (1, 2) and study.study_uid in err and ("stopped" in err or "sent" in err), err
    nothing_half_written(tmp_path / "ds")
    # The same request straight to the PACS succeeds: the cut, not the study, was the fault.
    assert main(["import", "--dicomweb", pacs.dicomweb_url, "--study", study.study_uid,
                 "--datastore", str(tmp_path / "ds")]) == 0


def test_credentials_in_the_url_are_split_off() -> None:
    client = PacsClient("http://u:pw@127.0.0.1:8042/dicom-web/?token=abc")
    assert client.url == "http://127.0.0.1:8042/dicom-web"
    assert client.credentials == Credentials("u", "pw", "")
    assert "pw" not in repr(client)
    assert PacsClient("https://[::1]:8443/dicom-web").url == "https://[::1]:8443/dicom-web"


def test_the_source_files_are_kept_as_sent_and_read_without_pixels(pacs, make_study, tmp_path) -> None:
    from stran.pacs.fetch import source_headers

    study = make_study(n_slices=3, n_phases=4, seed=9)
    files = write_dicom(study, tmp_path / "dcm", "series-per-slice")
    send(pacs, files)
    assert main(["import", "--dicomweb", pacs.dicomweb_url, "--study", study.study_uid,
                 "--datastore", str(tmp_path / "ds")]) == 0
    kept = sorted((tmp_path / "ds" / PACS_DIR / study.study_uid).rglob("*.dcm"))
    assert len(kept) == 12 and all("PixelData" in pydicom.dcmread(k) for k in kept)
    headers = source_headers(tmp_path / "ds", study.study_uid)
    assert sorted(h.SOPInstanceUID for h in headers) == sorted(str(u) for u in study.sop_uids.ravel())
    assert all("PixelData" not in h for h in headers)
