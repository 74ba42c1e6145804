"""The module's "Open DICOM folder..." against the REAL server: one stray broken file must not sink a study (issue 10).

The DICOM folders (a study with one stray file of each kind, or with a truncated cine frame) are written by the
server venv's Python (tests/dicom_fixture.py): this venv has no pydicom. One server over an empty datastore.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
import zipfile
from io import BytesIO
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "slicer_extension" / "CineScar"))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import server_fixture as sf  # noqa: E402
from CineScarLib import errors as E  # noqa: E402
from CineScarLib.dicom_folder import DicomImport, zip_folder  # noqa: E402
from CineScarLib.errors import WorkflowError  # noqa: E402
from CineScarLib.session import ScarSession  # noqa: E402
from test_cinescar_server import load_cinescar_with_stubs, prepare_app, prerequisites_missing  # noqa: E402


def make_dicom_folder(out: Path, broken: bool = False, patient_id: str = "DICOM-IMPORT-1") -> dict:
    """tests/dicom_fixture.py in the server venv; returns its description (folder, strays, broken file...)."""
    args = [str(sf.SERVER_PYTHON), str(REPO / "tests" / "dicom_fixture.py"), str(out), "--patient-id", patient_id]
    args += ["--broken"] if broken else []
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    missing = prerequisites_missing()
    if missing:
        pytest.skip(missing)
    work = tmp_path_factory.mktemp("cinescar-dicom")
    prepare_app(work / "app")
    datastore = work / "datastore"
    datastore.mkdir()
    server = sf.start_server(datastore, work)
    state = types.SimpleNamespace(server=server, work=work, messy=make_dicom_folder(work / "messy"),
                                  broken=make_dicom_folder(work / "broken", broken=True))
    yield state
    server.stop()


def test_zip_folder_sends_every_file_relative_to_the_folder(tmp_path):
    (tmp_path / "a" / "sub").mkdir(parents=True)
    (tmp_path / "a" / "sub" / "IM1").write_bytes(b"DICM")
    (tmp_path / "a" / ".DS_Store").write_bytes(b"\x00\x01")
    (tmp_path / "a" / "empty.dcm").write_bytes(b"")
    names = zipfile.ZipFile(BytesIO(zip_folder(tmp_path / "a"))).namelist()
    assert sorted(names) == [".DS_Store", "empty.dcm", "sub/IM1"]
    with pytest.raises(ValueError, match="not a folder"):
        zip_folder(tmp_path / "missing")
    (tmp_path / "void").mkdir()
    with pytest.raises(ValueError, match="holds no files"):
        zip_folder(tmp_path / "void")


def test_dicom_import_message_lists_what_was_left_out():
    answer = {"image": "P1", "slices": 3, "phases": 4, "study_uid": "1.2", "notes": [],
              "left_out": [{"path": f"f{i}", "reason": "not a DICOM file"} for i in range(7)]}
    imported = DicomImport.from_answer(answer, "/data/P1")
    assert imported.left_out[0] == ("f0", "not a DICOM file")
    assert imported.message() == ("Imported 'P1' (3 slices x 4 phases); 7 file(s) left out: "
                                  + "; ".join(f"f{i} (not a DICOM file)" for i in range(5)) + "; and 2 more.")
    with pytest.raises(ValueError, match="names no study"):
        DicomImport.from_answer({"detail": "?"})


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_import_a_folder_with_stray_files(env) -> None:
    logged: list[str] = []
    session = ScarSession(env.server.url, log=logged.append)
    session.connect()
    events: list = []
    imported = session.import_dicom_folder(env.messy["folder"], progress=lambda f, m: events.append((f, m)))
    assert imported.image_id == env.messy["patient_id"] and imported.study_uid == env.messy["study_uid"]
    assert (imported.slices, imported.phases) == (env.messy["slices"], env.messy["phases"])
    reasons = dict(imported.left_out)
    assert set(reasons) == set(env.messy["strays"])  # paths relative to the folder
    for path, words in env.messy["strays"].items():
        assert words in reasons[path]
        assert any(line.startswith(f"left out {path}: ") for line in logged)
    assert events[-1] == (1.0, imported.message()) and "6 file(s) left out" in imported.message()

    listed = {s.image_id: s for s in session.list_studies()}
    assert imported.image_id in listed and not listed[imported.image_id].labeled
    cine = session.download_cine(imported.image_id)
    assert (cine.slices, cine.phases) == (env.messy["slices"], env.messy["phases"])

    with pytest.raises(E.Conflict) as info:  # the same study again: the id is taken
        session.import_dicom_folder(env.messy["folder"])
    assert info.value.status == 409 and "overwrite=true" in str(info.value)
    again = session.import_dicom_folder(env.messy["folder"], image_id="copy-1")
    assert again.image_id == "copy-1" and len(again.left_out) == len(imported.left_out)
    session.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_broken_cine_frame_is_refused_with_slice_phase_and_file(env) -> None:
    session = ScarSession(env.server.url)
    session.connect()
    before = {s.image_id for s in session.list_studies()}
    with pytest.raises(E.RequestRejected) as info:
        session.import_dicom_folder(env.broken["folder"], image_id="broken")
    message = str(info.value)
    assert info.value.status == 422
    assert "slice 2 of 3" in message and "lacks phase 3 of 4" in message and env.broken["broken"] in message
    assert str(env.work) not in message  # no server-side temporary path, the file as it is in the folder
    assert {s.image_id for s in session.list_studies()} == before
    with pytest.raises(WorkflowError, match="not a folder"):
        session.import_dicom_folder(env.work / "no-such-folder")
    session.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_module_logic_imports_and_lists(env, monkeypatch) -> None:
    """CineScarLogic.importDicomFolder (what the "Open DICOM folder..." button runs in a worker) on slicer-core."""
    pytest.importorskip("slicer")
    folder = make_dicom_folder(env.work / "logic", patient_id="LOGIC-1")
    module = load_cinescar_with_stubs(monkeypatch)
    logic = module.CineScarLogic()
    logic.setServer(env.server.url)
    imported, status, studies = logic.importDicomFolder(folder["folder"])
    assert imported.image_id == "LOGIC-1" and len(imported.left_out) == len(folder["strays"])
    assert status.model == "scar" and "LOGIC-1" in {s.image_id for s in studies}
    logic.close()
    sys.modules.pop("CineScar", None)
