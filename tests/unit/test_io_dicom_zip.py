"""``stran.io.zip_import``: a zipped DICOM study into the datastore (what ``PUT /datastore/dicom`` runs), without a
server: stray files left out with zip-relative paths, a broken cine frame named, hostile archives refused before
anything is written, and no temporary file left in any outcome. The same route over HTTP: tests/integration.
"""

from __future__ import annotations

import io
import stat
import sys
import zipfile
from pathlib import Path

import pytest

from stran.io import MissingPhaseError, load_study
from stran.io.limits import max_upload_bytes
from stran.io.zip_import import (
    ArchiveTooLargeError,
    CorruptZipError,
    NotAZipError,
    StudyExistsError,
    UnsafeArchiveError,
    ZipImportError,
    import_zip_study,
    safe_extract,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import dicom_fixture as df  # noqa: E402


@pytest.fixture
def dirs(tmp_path):
    """(datastore, work): the work folder (the import's temporary folders go there) must end empty."""
    datastore, work = tmp_path / "datastore", tmp_path / "work"
    datastore.mkdir()
    work.mkdir()
    yield datastore, work
    assert list(work.iterdir()) == []


def write_zip(path: Path, members: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for info, data in members:
            archive.writestr(info, data)
    return path


def test_stray_files_are_left_out_with_paths_relative_to_the_zip(tmp_path, dirs):
    datastore, work = dirs
    made = df.make_messy_study(tmp_path / "src")
    archive = tmp_path / "upload.zip"
    archive.write_bytes(df.zip_folder(made["folder"], top="exam 1"))
    result = import_zip_study(archive, datastore, zip_name="exam 1.zip", work_dir=work)
    answer = result.to_json()
    assert answer["image"] == made["patient_id"] and (answer["slices"], answer["phases"]) == (3, 4)
    reasons = {e["path"]: e["reason"] for e in answer["left_out"]}
    assert set(reasons) == {f"exam 1/{p}" for p in made["strays"]}
    for path, words in made["strays"].items():
        assert words in reasons[f"exam 1/{path}"]
    stored = load_study(datastore / f"{made['patient_id']}.nii.gz")
    assert stored.study_uid == made["study_uid"] and stored.pixels.shape[:2] == (3, 4)
    assert str(work) not in (datastore / f"{made['patient_id']}.cine.json").read_text()


@pytest.mark.parametrize(("top", "expected"), [("exam 1", "exam_1"), ("", "upload")])
def test_default_id_without_a_patient_id_is_the_top_folder_else_the_zip_name(tmp_path, dirs, monkeypatch, top, expected):
    from stran.io import load

    datastore, work = dirs
    real = load.load_study
    monkeypatch.setattr(load, "load_study", lambda path, **kw: real(path, **kw).replace(patient_id=""))
    made = df.make_messy_study(tmp_path / "src")
    archive = tmp_path / "upload.zip"
    archive.write_bytes(df.zip_folder(made["folder"], top=top))
    assert import_zip_study(archive, datastore, work_dir=work).image_id == expected


def test_a_broken_cine_frame_is_named_relative_to_the_zip_and_nothing_is_written(tmp_path, dirs):
    datastore, work = dirs
    made = df.make_messy_study(tmp_path / "src", broken=True)
    archive = tmp_path / "upload.zip"
    archive.write_bytes(df.zip_folder(made["folder"]))
    with pytest.raises(MissingPhaseError) as info:
        import_zip_study(archive, datastore, work_dir=work)
    message = str(info.value)
    assert "slice 2 of 3" in message and "lacks phase 3 of 4" in message and made["broken"] in message
    assert str(work) not in message and str(tmp_path) not in message
    assert (1, 2, made["broken"]) in info.value.missing and made["broken"] in info.value.files
    assert list(datastore.iterdir()) == []


def test_an_existing_id_is_refused_unless_overwrite_and_a_refusal_before_writing_leaves_nothing(tmp_path, dirs):
    datastore, work = dirs
    made = df.make_messy_study(tmp_path / "src")
    archive = tmp_path / "upload.zip"
    archive.write_bytes(df.zip_folder(made["folder"]))
    import_zip_study(archive, datastore, image_id="a/b", work_dir=work)
    assert sorted(p.name for p in datastore.iterdir()) == ["a_b.cine.json", "a_b.nii.gz"]
    with pytest.raises(StudyExistsError, match="overwrite=true"):
        import_zip_study(archive, datastore, image_id="a/b", work_dir=work)
    assert import_zip_study(archive, datastore, image_id="a/b", overwrite=True, work_dir=work).image_id == "a_b"

    def refuse(image_id):
        raise StudyExistsError(f"{image_id} is taken")

    with pytest.raises(StudyExistsError, match="other is taken"):
        import_zip_study(archive, datastore, image_id="other", before_write=refuse, work_dir=work)
    assert sorted(p.name for p in datastore.iterdir()) == ["a_b.cine.json", "a_b.nii.gz"]


def _symlink(name: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, b"/etc/passwd"


@pytest.mark.parametrize(
    ("members", "error", "words"),
    [
        ([("ok.dcm", b"x"), ("../evil", b"owned")], UnsafeArchiveError, "'..'"),
        ([("a/../../evil", b"owned")], UnsafeArchiveError, "'..'"),
        ([("..\\evil", b"owned")], UnsafeArchiveError, "'..'"),
        ([(zipfile.ZipInfo("/tmp/evil"), b"owned")], UnsafeArchiveError, "absolute"),
        ([("C:/evil", b"owned")], UnsafeArchiveError, "absolute"),
        ([_symlink("evil")], UnsafeArchiveError, "symbolic link"),
        ([("big.dcm", bytes(2001))], ArchiveTooLargeError, "STRAN_MAX_UPLOAD_BYTES"),
        ([(f"f{i}", b"") for i in range(11)], ArchiveTooLargeError, "STRAN_MAX_UPLOAD_FILES"),
        ([("x.dcm", b"1"), ("x.dcm", b"2")], CorruptZipError, "twice"),
    ],
)
@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_hostile_archives_are_refused_before_anything_is_written(tmp_path, dirs, members, error, words):
    datastore, work = dirs
    archive = write_zip(tmp_path / "hostile.zip", members)
    with pytest.raises(error, match=None) as info:
        import_zip_study(archive, datastore, work_dir=work, max_bytes=2000, max_files=10)
    assert words in str(info.value)
    assert list(datastore.iterdir()) == [] and not list(tmp_path.rglob("evil"))


def test_sizes_that_lie_are_caught_while_extracting(tmp_path):
    """The directory says 10 bytes, the member holds 5000: the extraction stops (limit or CRC), nothing stays."""
    archive = write_zip(tmp_path / "liar.zip", [("a.dcm", b"x" * 5000)])
    raw = bytearray(archive.read_bytes())
    central = raw.rindex(b"PK\x01\x02")
    raw[central + 24 : central + 28] = (10).to_bytes(4, "little")  # uncompressed size in the central directory
    archive.write_bytes(bytes(raw))
    with pytest.raises(ZipImportError):
        safe_extract(archive, tmp_path / "out", max_bytes=1000)


def test_the_byte_limit_holds_while_extracting_even_if_the_directory_lies(tmp_path, monkeypatch):
    archive = write_zip(tmp_path / "two.zip", [("a.dcm", b"x" * 600), ("b.dcm", b"y" * 600)])
    monkeypatch.setattr("stran.io.zip_import.check_members", lambda zf, **kw: zf.infolist())  # a lying directory
    with pytest.raises(ArchiveTooLargeError, match="its directory said less"):
        safe_extract(archive, tmp_path / "out", max_bytes=1000)


@pytest.mark.parametrize("data", [b"not a zip at all", b"PK\x03\x04" + bytes(40), b""],
                         ids=["text", "zip-header-only", "empty"])
def test_not_a_zip(tmp_path, dirs, data):
    datastore, work = dirs
    (tmp_path / "x.zip").write_bytes(data)
    with pytest.raises(NotAZipError, match="not a readable ZIP"):
        import_zip_study(tmp_path / "x.zip", datastore, work_dir=work)


def test_a_corrupt_member_is_refused(tmp_path, dirs):
    datastore, work = dirs
    archive = write_zip(tmp_path / "c.zip", [("a.dcm", bytes(range(256)) * 40)])
    raw = bytearray(archive.read_bytes())
    raw[60:70] = b"\xff" * 10  # inside the compressed data of the only member
    archive.write_bytes(bytes(raw))
    with pytest.raises(CorruptZipError, match="a.dcm"):
        import_zip_study(archive, datastore, work_dir=work)


def test_upload_limit_from_the_environment(monkeypatch):
    monkeypatch.setenv("STRAN_MAX_UPLOAD_BYTES", "1e6")
    assert max_upload_bytes() == 1_000_000 and max_upload_bytes(5) == 5
    monkeypatch.setenv("STRAN_MAX_UPLOAD_BYTES", "lots")
    with pytest.raises(ValueError, match="STRAN_MAX_UPLOAD_BYTES"):
        max_upload_bytes()


def _in_memory_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_an_empty_archive_and_one_without_a_cine(tmp_path, dirs):
    datastore, work = dirs
    (tmp_path / "empty.zip").write_bytes(_in_memory_zip({}))
    with pytest.raises(ZipImportError, match="no files"):
        import_zip_study(tmp_path / "empty.zip", datastore, work_dir=work)
    (tmp_path / "notes.zip").write_bytes(_in_memory_zip({"notes.txt": b"hello", "sub/empty.dcm": b""}))
    from stran.io import CineLoadError

    with pytest.raises(CineLoadError) as info:
        import_zip_study(tmp_path / "notes.zip", datastore, work_dir=work)
    assert str(work) not in str(info.value)
    assert list(datastore.iterdir()) == []
