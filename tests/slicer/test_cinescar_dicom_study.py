"""A study from Slicer's DICOM database (e.g. pulled from the PACS in the DICOM browser), detected by its Study UID.

Slicer's DICOM database (``slicer.dicomDatabase``, a ctkDICOMDatabase) is part of the application, not of
slicer-core: ``StandInDicomDatabase`` below has the methods CineScarLib.dicom_study calls, with ctkDICOMDatabase's
names and answers, over an index of real DICOM files written by the server venv (this venv has no pydicom).

Against real servers: a plain datastore server (the study's files are uploaded once, under its Study UID) and,
when Debian's Orthanc is installed, a server started with ``--conf dicomweb`` over it (detection by UID, no
upload, the SR stored back on the PACS).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
import zipfile
from io import BytesIO
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "slicer_extension" / "CineScar"))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import server_fixture as sf  # noqa: E402
from CineScarLib import errors as E  # noqa: E402
from CineScarLib.cancel import CancelToken  # noqa: E402
from CineScarLib.dicom_folder import zip_files, zip_folder  # noqa: E402
from CineScarLib.dicom_study import (  # noqa: E402
    DicomStudyError,
    NotFromDicom,
    detect_dicom_study,
    is_from_dicom,
    pacs_message,
    study_files,
    study_of_volume,
)
from CineScarLib.records import Detection  # noqa: E402
from CineScarLib.session import ScarSession  # noqa: E402
from test_cinescar_server import load_cinescar_with_stubs, prepare_app, prerequisites_missing  # noqa: E402

WRITE_STUDY = """
import json, sys
from pathlib import Path
import pydicom
from stran.io import write_dicom
from stran.io.synthetic import make_cine_study
out, seed, patient = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
study = make_cine_study(n_slices=3, n_phases=6, seed=seed, patient_id=patient)
index = {}
for path in write_dicom(study, out, "series-per-slice"):
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    index[str(path)] = [str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)]
print(json.dumps({"study_uid": study.study_uid, "files": index, "slices": 3, "phases": 6}))
"""

STUDY_TAG, SERIES_TAG, SOP_TAG = "0020,000D", "0020,000E", "0008,0018"


def write_study(out: Path, seed: int, patient: str) -> dict:
    """A 3-slice x 6-phase cine, one series per slice, written by the server venv; its files -> (study, series, SOP)."""
    done = subprocess.run([str(sf.SERVER_PYTHON), "-c", WRITE_STUDY, str(out), str(seed), patient], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


class StandInDicomDatabase:
    """ctkDICOMDatabase's methods used by CineScarLib.dicom_study (CTK Libs/DICOM/Core/ctkDICOMDatabase.h), over an
    index ``{file: (StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID)}``. As in CTK: unknown UIDs give "" or
    an empty list; ``isOpen`` is a Qt property (an attribute in Python); ``instanceValue``/``fileValue`` read the
    file's header, so they give "" for a file gone from disk, while the tables (``seriesForFile``,
    ``studyForSeries``...) still know it; an instance listed but not retrieved has an empty file name."""

    def __init__(self, index: dict[str, list[str]], is_open: bool = True) -> None:
        self.isOpen = is_open
        self.rows = [(path, *uids) for path, uids in index.items()]
        self.calls: list[str] = []

    def seriesForStudy(self, study_uid: str) -> list[str]:  # noqa: N802 - CTK's names
        self.calls.append("seriesForStudy")
        return list(dict.fromkeys(se for _, st, se, _ in self.rows if st == study_uid))

    def filesForSeries(self, series_uid: str, hits: int = -1) -> list[str]:  # noqa: N802
        files = [path for path, _, se, _ in self.rows if se == series_uid]
        return files[:hits] if hits > 0 else files

    def fileForInstance(self, sop_uid: str) -> str:  # noqa: N802
        return next((path for path, _, _, sop in self.rows if sop == sop_uid), "")

    def instanceForFile(self, path: str) -> str:  # noqa: N802
        return next((sop for p, _, _, sop in self.rows if p == path), "")

    def seriesForFile(self, path: str) -> str:  # noqa: N802
        return next((se for p, _, se, _ in self.rows if p == path), "")

    def studyForSeries(self, series_uid: str) -> str:  # noqa: N802
        return next((st for _, st, se, _ in self.rows if se == series_uid), "")

    def fileValue(self, path: str, tag: str) -> str:  # noqa: N802
        row = next((r for r in self.rows if r[0] == path), None)
        if row is None or not path or not os.path.isfile(path):
            return ""
        return {STUDY_TAG: row[1], SERIES_TAG: row[2], SOP_TAG: row[3]}.get(tag, "")

    def instanceValue(self, sop_uid: str, tag: str) -> str:  # noqa: N802
        return self.fileValue(self.fileForInstance(sop_uid), tag)


def series_of(study: dict) -> dict[str, list[str]]:
    """Series UID -> its SOP Instance UIDs."""
    found: dict[str, list[str]] = {}
    for _study, series, sop in study["files"].values():
        found.setdefault(series, []).append(sop)
    return found


def volume_from_dicom(scene, sops: list[str], name: str = "cine slice 1"):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.SetAttribute("DICOM.instanceUIDs", " ".join(sops))
    return node


def counting_uploads(session: ScarSession) -> list:
    """Record every PUT /datastore/dicom this session's client makes."""
    calls: list = []
    upload = session.client.upload_dicom_files

    def spy(*args, **kwargs):
        calls.append(args)
        return upload(*args, **kwargs)

    session.client.upload_dicom_files = spy
    return calls


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> types.SimpleNamespace:
    if not sf.SERVER_PYTHON.exists():
        pytest.skip(f"the server venv is missing ({sf.SERVER_PYTHON}); run make setup")
    work = tmp_path_factory.mktemp("dicom-db")
    return types.SimpleNamespace(**{name: write_study(work / name, seed, f"DB-{name.upper()}")
                                    for seed, name in enumerate(("a", "b", "c", "pacs", "local"), start=11)})


# ----------------------------------------------------------------------------- no server


def test_zip_files_names_are_unique_and_relative(tmp_path) -> None:
    for folder in ("db/1.2/s1", "db/1.2/s2", "db/1.2/s2/deeper"):
        (tmp_path / folder).mkdir(parents=True)
    files = [tmp_path / "db/1.2/s1/IM1", tmp_path / "db/1.2/s2/IM1", tmp_path / "db/1.2/s2/deeper/IM1"]
    for i, f in enumerate(files):
        f.write_bytes(b"DICM%d" % i)
    data = zip_files([str(f) for f in files] + [str(files[0])], "1.2")  # listed twice: once in the zip
    archive = zipfile.ZipFile(BytesIO(data))
    assert archive.namelist() == ["s1/IM1", "s2/IM1", "s2/deeper/IM1"]
    assert [archive.read(n) for n in archive.namelist()] == [b"DICM0", b"DICM1", b"DICM2"]
    assert zipfile.ZipFile(BytesIO(zip_folder(tmp_path / "db"))).namelist() == ["1.2/s1/IM1", "1.2/s2/IM1",
                                                                                   "1.2/s2/deeper/IM1"]
    assert zipfile.ZipFile(BytesIO(zip_files([str(files[1])], "one"))).namelist() == ["IM1"]
    with pytest.raises(ValueError, match="1.2: no files to send"):
        zip_files([], "1.2")
    with pytest.raises(ValueError, match=r"1 of 2 file\(s\) are not on this computer: .*gone.*Nothing was sent"):
        zip_files([str(files[0]), str(tmp_path / "gone")], "1.2")


def test_study_of_a_volume_and_its_files(studies, scene, tmp_path) -> None:
    import slicer

    a, b = studies.a, studies.b
    db = StandInDicomDatabase({**a["files"], **b["files"]})
    series = series_of(a)
    first, second = list(series)[:2]
    assert len(series) == a["slices"]  # one series per slice

    volume = volume_from_dicom(scene, series[first])
    assert is_from_dicom(volume) and study_of_volume(db, volume) == a["study_uid"]

    # a sequence: the DICOM plugins tag its items (here a 2D+t sequence of one slice, as DICOMImageSequencePlugin)
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "cine slice 2")
    for t, sop in enumerate(series[second]):
        frame = slicer.vtkMRMLScalarVolumeNode()
        frame.SetAttribute("DICOM.instanceUIDs", sop)
        sequence.SetDataNodeAtValue(frame, str(t))
    assert is_from_dicom(sequence) and study_of_volume(db, sequence) == a["study_uid"]

    # a volume sequence from MultiVolumeImporter: the frames' files on the sequence node
    multivolume = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "cine b")
    multivolume.SetAttribute("MultiVolume.FrameFileList", ",".join(b["files"]))
    assert study_of_volume(db, multivolume) == b["study_uid"]

    files = study_files(db, a["study_uid"])
    assert sorted(files) == sorted(a["files"])  # every series of the study, nothing of the other one

    plain = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "from a NIfTI file")
    assert not is_from_dicom(plain) and not is_from_dicom(None)
    with pytest.raises(NotFromDicom, match="'from a NIfTI file' was not loaded from Slicer's DICOM database"):
        study_of_volume(db, plain)
    with pytest.raises(NotFromDicom, match="not loaded from Slicer's DICOM database"):
        study_of_volume(db, None)
    with pytest.raises(DicomStudyError, match="DICOM database is not open"):
        study_of_volume(StandInDicomDatabase(a["files"], is_open=False), volume)
    with pytest.raises(DicomStudyError, match="DICOM database is not open"):
        study_files(None, a["study_uid"])
    with pytest.raises(DicomStudyError, match="no longer in Slicer's DICOM database"):
        study_of_volume(StandInDicomDatabase(b["files"]), volume)
    with pytest.raises(DicomStudyError, match="Study 9.9.9 is not in Slicer's DICOM database"):
        study_files(db, "9.9.9")

    # files gone from disk (deleted, or listed by the DICOM browser but not retrieved yet)
    gone = next(iter(a["files"]))
    kept = tmp_path / "kept.dcm"
    os.replace(gone, kept)
    try:
        index = {path: uids for path, uids in a["files"].items()}
        sop_gone = index[gone][2]
        lonely = volume_from_dicom(scene, [sop_gone], "first frame")
        assert study_of_volume(db, lonely) == a["study_uid"]  # from the database's tables, the header being gone
        with pytest.raises(DicomStudyError, match=rf"1 of 18 files of study {a['study_uid']} are not on this "
                                                  r"computer \(.*\)\. Retrieve the whole study"):
            study_files(db, a["study_uid"])
        assert len(study_files(db, a["study_uid"], missing_ok=True)) == 18
        not_retrieved = StandInDicomDatabase({**{p: u for p, u in index.items() if p != gone}, "": index[gone]})
        with pytest.raises(DicomStudyError, match=r"1 of 18 files .*\(not retrieved\)"):
            study_files(not_retrieved, a["study_uid"])
    finally:
        os.replace(kept, gone)


def test_pacs_message_says_where_the_results_went() -> None:
    base = {"study_probability": 0.3, "study": {"study_uid": "1.2.3"}}
    stored = Detection({**base, "pacs": {"url": "http://pacs/dicom-web", "study_uid": "1.2.3", "sr_series_uid": "1.9",
                                         "sr_sop_uid": "1.9.1", "map_series_uid": "1.8", "map_sop_uid": "1.8.1",
                                         "map_kind": "SEG"}}, "1.2.3")
    assert pacs_message(stored) == ("Results stored on the PACS (http://pacs/dicom-web) in study 1.2.3: SR series 1.9, "
                                    "SEG series 1.8.")
    failed = Detection({**base, "pacs": {"url": "http://pacs/dicom-web", "study_uid": "1.2.3",
                                         "error": "the PACS refused the SR (HTTP 403)"}}, "1.2.3")
    assert failed.pacs["error"].endswith("(HTTP 403)")
    assert pacs_message(failed) == ("Results were NOT stored on the PACS (http://pacs/dicom-web): the PACS refused "
                                    "the SR (HTTP 403)")
    local = Detection(dict(base), "1.2.3")
    assert local.pacs is None and "not stored on a PACS" in pacs_message(local)


# ----------------------------------------------------------------------------- a plain datastore server


@pytest.fixture(scope="module")
def plain(studies, tmp_path_factory):
    missing = prerequisites_missing()
    if missing:
        pytest.skip(missing)
    work = tmp_path_factory.mktemp("cinescar-dicom-study")
    prepare_app(work / "app")
    (work / "datastore").mkdir()
    server = sf.start_server(work / "datastore", work)
    yield server
    server.stop()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_plain_server_gets_the_study_once_under_its_uid(studies, plain) -> None:
    study = studies.a
    uid = study["study_uid"]
    db = StandInDicomDatabase({**study["files"], **studies.b["files"]})
    logged: list[str] = []
    session = ScarSession(plain.url, log=logged.append)
    session.connect()
    uploads = counting_uploads(session)
    events: list = []
    detection = detect_dicom_study(session, db, uid, mc_samples=0, progress=lambda f, m: events.append((f, m)))

    assert len(uploads) == 1 and detection.imported is not None
    assert detection.imported.image_id == uid == detection.imported.study_uid
    assert (detection.imported.slices, detection.imported.phases) == (study["slices"], study["phases"])
    assert detection.image_id == uid and detection.study_uid == uid
    assert len(detection.slice_probabilities) == study["slices"]
    assert (detection.cine.slices, detection.cine.phases) == (study["slices"], study["phases"])
    assert detection.attention.array.shape == detection.cine.array.shape
    assert detection.pacs is None
    message = pacs_message(detection)
    assert message.startswith(f"Results are on the server only (study '{uid}' (uploaded from Slicer's DICOM database))")
    fractions = [f for f, _ in events if f is not None]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert events[-1][1] == f"{detection.summary()}. {message}"
    assert any("uploading its 18 files" in m for _, m in events) and message in logged
    assert uid in {s.image_id for s in session.list_studies()}

    again = detect_dicom_study(session, db, uid, mc_samples=0, fetch_cine=False)  # the server has it now
    assert len(uploads) == 1 and again.imported is None and again.cine is None
    assert again.study_uid == uid and again.detection_id != detection.detection_id

    token = CancelToken()
    token.cancel()
    with pytest.raises(E.Cancelled):
        detect_dicom_study(session, db, uid, cancel=token)
    session.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_an_id_taken_by_another_study_is_said(studies, plain) -> None:
    """The server lacks the study (404) but refuses the upload because its Study UID is taken (409)."""
    study = studies.b
    uid = study["study_uid"]
    session = ScarSession(plain.url)
    session.connect()
    session.import_dicom_files(list(study["files"]), "other", image_id=uid)  # the id given to it before
    infer = session.client.infer

    def not_found_first(*args, **kwargs):
        session.client.infer = infer
        raise E.NotFound("no such study", status=404, detail="no such study")

    session.client.infer = not_found_first
    with pytest.raises(DicomStudyError, match=rf"already holds another study under the id {uid}, so this study was "
                                              r"not uploaded and not detected \(.*overwrite=true"):
        detect_dicom_study(session, list(study["files"]), uid)
    session.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_module_logic_detects_the_selected_dicom_cine(studies, plain, scene, monkeypatch, tmp_path) -> None:
    """CineScarLogic.dicomStudyOf (GUI thread) + detectDicomStudy (worker): what "Detect on DICOM study" runs."""
    import slicer

    study = studies.c
    uid = study["study_uid"]
    module = load_cinescar_with_stubs(monkeypatch)
    monkeypatch.setattr(slicer, "dicomDatabase", StandInDicomDatabase(study["files"]), raising=False)
    logic = module.CineScarLogic()
    logic.setServer(plain.url)
    logic.connect()
    node = volume_from_dicom(scene, series_of(study)[next(iter(series_of(study)))])
    with pytest.raises(NotFromDicom):
        logic.dicomStudyOf(scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "plain"))

    # a file the server would need is gone: found when the upload turns out to be needed, and nothing is sent
    gone = next(iter(study["files"]))
    os.replace(gone, tmp_path / "kept.dcm")
    try:
        found, files = logic.dicomStudyOf(node)
        assert found == uid and len(files) == 18
        with pytest.raises(DicomStudyError, match="1 of 18 files .* are not on this computer"):
            logic.detectDicomStudy(found, files, mcSamples=0)
    finally:
        os.replace(tmp_path / "kept.dcm", gone)
    assert uid not in {s.image_id for s in logic.session.list_studies()}

    detection = logic.detectDicomStudy(*logic.dicomStudyOf(node), mcSamples=0)
    assert detection.imported.image_id == uid and detection.study_uid == uid
    nodes = logic.showDetection(detection)
    assert nodes.cineSequence.GetNumberOfDataNodes() == study["phases"]
    assert nodes.table.GetNumberOfRows() == study["slices"]
    logic.close()
    sys.modules.pop("CineScar", None)


# ----------------------------------------------------------------------------- a server over a PACS (Orthanc)


@pytest.fixture(scope="module")
def pacs_server(studies, tmp_path_factory):
    missing = prerequisites_missing()
    if missing:
        pytest.skip(missing)
    if str(REPO) not in sys.path:
        sys.path.append(str(REPO))
    try:
        from stran.pacs.orthanc import LocalOrthanc, OrthancNotInstalledError
    except ImportError as exc:
        pytest.skip(f"no local PACS for the test: stran.pacs.orthanc cannot be imported ({exc})")
    orthanc = LocalOrthanc()
    try:
        orthanc.start()
    except OrthancNotInstalledError as exc:
        pytest.skip(f"no local PACS for the test: {exc}")
    work = tmp_path_factory.mktemp("cinescar-dicom-pacs")
    try:
        orthanc.upload(list(studies.pacs["files"]))
        prepare_app(work / "app")
        server = sf.start_server(work / "cache", work, conf={"dicomweb": orthanc.dicomweb_url})
    except BaseException:
        orthanc.stop()
        raise
    yield types.SimpleNamespace(server=server, orthanc=orthanc)
    server.stop()
    orthanc.stop()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_pacs_server_detects_by_uid_and_stores_the_sr(studies, pacs_server) -> None:
    study = studies.pacs
    uid = study["study_uid"]
    session = ScarSession(pacs_server.server.url)
    session.connect()
    uploads = counting_uploads(session)
    detection = detect_dicom_study(session, StandInDicomDatabase(study["files"]), uid, mc_samples=0)
    assert uploads == [] and detection.imported is None
    assert detection.image_id == uid and detection.study_uid == uid
    assert (detection.cine.slices, detection.cine.phases) == (study["slices"], study["phases"])
    record = detection.pacs
    assert record is not None and "error" not in record, record
    assert record["study_uid"] == uid and record["url"] == pacs_server.orthanc.dicomweb_url
    assert pacs_message(detection) == (f"Results stored on the PACS ({record['url']}) in study {uid}: SR series "
                                       f"{record['sr_series_uid']}, SEG series {record['map_series_uid']}.")
    answer = requests.get(f"{record['url']}/studies/{uid}/series/{record['sr_series_uid']}/instances", timeout=30)
    assert answer.status_code == 200, answer.text[:300]
    assert [i["00080018"]["Value"][0] for i in answer.json()] == [record["sr_sop_uid"]]

    # a study the PACS does not hold: uploaded from Slicer's DICOM database, results on the server only
    local = studies.local
    detection = detect_dicom_study(session, StandInDicomDatabase(local["files"]), local["study_uid"], mc_samples=0,
                                   fetch_cine=False)
    assert len(uploads) == 1 and detection.imported.image_id == local["study_uid"]
    assert detection.pacs is None and "not stored on a PACS" in pacs_message(detection)
    session.close()
