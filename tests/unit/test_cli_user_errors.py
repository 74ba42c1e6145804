"""Every command from a folder of the user's own (outside the repository), and every user mistake in one line.

A mistake (missing or unreadable input, a folder without a cine, a bad checkpoint, an output folder that cannot
be written, a database that does not connect, a bad option value) ends with exactly one line on stderr that names
the thing, no traceback, and a non-zero status; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stran import cli, resources
from stran.cli import main
from stran.io import write_datastore_study

REPO = Path(__file__).resolve().parents[2]
STRAN = Path(sys.executable).with_name("stran")
SHIPPED = REPO / "apps" / "stran" / "model" / "pretrained_scar.pt"


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current folder is a fresh folder outside the repository; no $STRAN_MODEL."""
    assert REPO not in tmp_path.resolve().parents
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(resources.MODEL_ENV, raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One phantom study (scenario A, scar) as a datastore NIfTI."""
    from stran.phantom import generate_study, sample_config

    phantom = generate_study(sample_config(4243, scenario="A"))
    return write_datastore_study(phantom.cine, tmp_path_factory.mktemp("study"), "PHANTOM-4243")


def one_line_error(capsys: pytest.CaptureFixture[str], status: int, *words: str) -> str:
    """The single stderr line of a failed command; checks the status, no traceback, and that it names ``words``."""
    err = capsys.readouterr().err
    assert status != 0, err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1 and err.endswith("\n"), err
    for word in words:
        assert word in err, (word, err)
    return err


# ----------------------------------------------------------------------------------------- resources and help


def test_the_default_model_is_found_from_the_package_not_the_current_folder(elsewhere: Path) -> None:
    assert resources.resolve_model() == SHIPPED == resources.default_model()[0]
    assert resources.APP_DIR == REPO / "apps" / "stran"


def test_stran_model_overrides_the_default(elsewhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = elsewhere / "mine.pt"
    copy.write_bytes(SHIPPED.read_bytes())
    monkeypatch.setenv(resources.MODEL_ENV, "mine.pt")
    assert resources.resolve_model() == copy
    assert resources.resolve_model(str(SHIPPED)) == SHIPPED  # --model wins


def test_checkpoint_metadata_is_read_without_torch_and_matches_the_file() -> None:
    import torch

    meta = resources.checkpoint_metadata(SHIPPED)
    payload = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    assert meta["name"] == payload["model_name"] and meta["sha256"] == payload["sha256"]
    assert resources.checkpoint_metadata(REPO / "README.md") == {}


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_every_command_has_help_from_anywhere(command: str, elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: stran {command}")
    if command in ("detect", "evaluate"):
        words = " ".join(out.split())
        assert str(SHIPPED) in words and resources.file_sha256(SHIPPED)[:12] in words


def test_help_keeps_a_hyphenated_model_path_whole(elsewhere: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The default model's path is printed on one line, to copy, even where it holds hyphens or is wider than the
    column (argparse's wrapping would split it at a hyphen or anywhere)."""
    model = elsewhere / "my-models" / "a-very-long-folder-name-for-the-model" / "best-model.pt"
    model.parent.mkdir(parents=True)
    model.write_bytes(SHIPPED.read_bytes())
    monkeypatch.setenv("STRAN_MODEL", str(model))
    monkeypatch.setenv("COLUMNS", "60")
    with pytest.raises(SystemExit):
        main(["detect", "--help"])
    assert str(model) in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for word in ("stran 0.1.0", "Python 3.", str(SHIPPED), resources.file_sha256(SHIPPED)[:12], "torch ", "monai ",
                 "monailabel ", "numpy ", "pydicom "):
        assert word in out, word


def test_serve_and_demo_defaults_are_inside_the_project(elsewhere: Path) -> None:
    from stran.serve import studies_folder

    serve = cli.build_parser().parse_args(["serve"])
    pacs = cli.build_parser().parse_args(["serve", "--dicomweb", "http://127.0.0.1:8042/dicom-web"])
    demo = cli.build_parser().parse_args(["demo"])
    for path in (studies_folder(serve), studies_folder(pacs), demo.work, demo.samples):
        assert Path(path).is_absolute() and REPO in Path(path).parents


# --------------------------------------------------------------------------------------------------- mistakes


def test_detect_missing_input(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["detect", "study.nii.gz", "--out", "results"])
    one_line_error(capsys, status, "study.nii.gz", "no such file or folder", "give a DICOM folder")


def test_detect_missing_models(elsewhere: Path, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    status = main(["detect", str(elsewhere), "--model", "nope.pt"])
    one_line_error(capsys, status, str(elsewhere / "nope.pt"), "does not exist", "--model")
    monkeypatch.setenv(resources.MODEL_ENV, str(elsewhere / "gone.pt"))
    status = main(["detect", str(elsewhere)])
    one_line_error(capsys, status, "gone.pt", "$STRAN_MODEL", "point STRAN_MODEL at an existing checkpoint")
    monkeypatch.delenv(resources.MODEL_ENV)
    monkeypatch.setattr(resources, "SHIPPED_MODEL", elsewhere / "apps" / "pretrained_scar.pt")
    status = main(["detect", str(elsewhere)])
    one_line_error(capsys, status, "pretrained_scar.pt", "pass --model CHECKPOINT or set STRAN_MODEL")


def test_detect_bad_checkpoint(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (elsewhere / "junk.pt").write_bytes(b"not a checkpoint")
    status = main(["detect", str(elsewhere), "--model", "junk.pt"])
    one_line_error(capsys, status, "junk.pt", "not a ST-RAN Scar checkpoint", "stran train")


def test_detect_output_folder_that_cannot_be_written(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (elsewhere / "a_file").write_text("x")
    status = main(["detect", str(elsewhere), "--out", "a_file/results"])
    one_line_error(capsys, status, str(elsewhere / "a_file" / "results"), "cannot write", "choose another --out")
    status = main(["detect", str(elsewhere), "--out", "a_file"])
    one_line_error(capsys, status, str(elsewhere / "a_file"), "cannot write")


def test_detect_database_that_does_not_connect(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["detect", str(elsewhere), "--db", "postgresql://nobody@127.0.0.1:1/scar"])
    one_line_error(capsys, status, "postgresql", "--db")  # the URL, or the driver when it is not installed
    status = main(["detect", str(elsewhere), "--db", "nosuchdb://x/y"])
    one_line_error(capsys, status, "nosuchdb://x/y", "--db")


def test_detect_folder_without_a_cine(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (elsewhere / "empty").mkdir()
    (elsewhere / "empty" / "notes.txt").write_text("no images here")
    status = main(["detect", "empty", "--out", "results", "--mc-samples", "0"])
    assert status == 1
    one_line_error(capsys, status, "empty", "No cine MR images", "Point to the folder")


def test_inspect_mistakes(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one_line_error(capsys, main(["inspect", "nothing_here"]), "nothing_here", "does not exist", "give a DICOM folder")
    (elsewhere / "broken.nii.gz").write_bytes(b"garbage")
    one_line_error(capsys, main(["inspect", "broken.nii.gz"]), "broken.nii.gz", "a study is a DICOM folder")
    (elsewhere / "empty").mkdir()
    one_line_error(capsys, main(["inspect", "empty"]), "empty", "No cine MR images")


def test_import_mistakes(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one_line_error(capsys, main(["import", "dicoms", "--datastore", "ds"]), "dicoms", "no such folder")
    (elsewhere / "a_file").write_text("x")
    (elsewhere / "dicoms").mkdir()
    one_line_error(capsys, main(["import", "dicoms", "--datastore", "a_file"]), "a_file", "choose another --datastore")


def test_train_and_evaluate_mistakes(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one_line_error(capsys, main(["train", "studies", "--out", "run"]), "studies", "does not exist")
    one_line_error(capsys, main(["train", "studies", "--out", "run", "--model", "nope"]), "unknown model 'nope'")
    one_line_error(capsys, main(["train", "studies", "--out", "run", "--model-config", "{bad"]), "{bad", "JSON object")
    one_line_error(capsys, main(["train", "studies", "--out", "run", "--init", "old.pt"]), "old.pt", "does not exist")
    one_line_error(capsys, main(["evaluate", "best.pt", "studies", "--out", "report"]), "best.pt", "does not exist")
    status = main(["evaluate", str(SHIPPED), "studies", "--out", "report"])
    one_line_error(capsys, status, "studies", "does not exist")


def test_export_and_phantom_mistakes(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["export", "--db", "postgresql://nobody@127.0.0.1:1/scar"])
    one_line_error(capsys, status, "postgresql", "--db")
    one_line_error(capsys, main(["export", "--db", "r.sqlite", "--import-json", "x.json"]), "x.json", "no such file")
    (elsewhere / "a_file").write_text("x")
    one_line_error(capsys, main(["export", "--db", "a_file/r.sqlite"]), "a_file")
    one_line_error(capsys, main(["phantom", "cohort", "--mix", "E=1"]), "E=1", "A=1,B=1")
    one_line_error(capsys, main(["phantom", "a_file/cohort", "--n", "1"]), "a_file", "cannot write")


def test_a_bug_is_one_line_unless_debug(elsewhere: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from stran.io import inspect_command

    def broken(args: object) -> int:
        raise KeyError("oops")

    monkeypatch.setattr(inspect_command, "run", broken)
    status = main(["inspect", "x"])
    assert status == 1
    one_line_error(capsys, status, "internal error", "KeyError", "--debug")
    with pytest.raises(KeyError):
        main(["--debug", "inspect", "x"])
    with pytest.raises(KeyError):
        main(["inspect", "x", "--debug"])


def test_debug_shows_the_traceback_of_a_mistake(elsewhere: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        main(["--debug", "detect", "study.nii.gz", "--model", "nope.pt"])


# ------------------------------------------------------------------------------------------ work from anywhere


def test_inspect_import_and_export_work_from_anywhere(elsewhere: Path, make_study,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from stran.io import write_dicom

    write_dicom(make_study(), elsewhere / "dicoms" / "patient", "single-series-slice-major")
    nii = write_datastore_study(make_study(), elsewhere / "nifti", "s1")
    assert main(["inspect", "nifti/s1.nii.gz"]) == 0
    assert main(["import", "dicoms", "--datastore", "ds"]) == 0
    assert (elsewhere / "ds" / "patient.nii.gz").is_file()
    assert main(["export", "--db", "results.sqlite"]) == 0
    assert (elsewhere / "results.sqlite").is_file() and nii.is_file()
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.slow
def test_detect_from_anywhere_in_process(elsewhere: Path, study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["detect", str(study), "--mc-samples", "0", "--db", "results.sqlite"]) == 0
    result = json.loads((elsewhere / "detections" / "PHANTOM-4243.json").read_text())
    assert result["model"]["sha256"] == resources.checkpoint_metadata(SHIPPED)["sha256"]
    assert (elsewhere / "results.sqlite").is_file()
    assert "PHANTOM-4243: " in capsys.readouterr().out


# ------------------------------------------------------------------------------------- the real program


def _program(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    if not STRAN.is_file():
        pytest.skip(f"no console script {STRAN}")
    env = {k: v for k, v in os.environ.items() if k != resources.MODEL_ENV}
    env.update(OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    return subprocess.run([str(STRAN), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_program_version_and_a_mistake_from_anywhere(tmp_path: Path) -> None:
    done = _program(["--version"], tmp_path)
    assert done.returncode == 0 and str(SHIPPED) in done.stdout and "torch " in done.stdout, done.stderr
    done = _program(["detect", "/missing.nii.gz"], tmp_path)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [done.stderr.strip()] and "/missing.nii.gz" in done.stderr


@pytest.mark.parametrize("build", ["build_parser([])", "build_parser()"])  # `stran --help`; every command's arguments
def test_the_parser_starts_without_heavy_imports(build: str) -> None:
    code = (f"import sys; from stran.cli import build_parser; {build}; print(','.join(m for m in "
            f"('torch', 'monai', 'scipy', 'sqlalchemy', 'matplotlib', 'nibabel', 'pydicom') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "", done.stdout + done.stderr


@pytest.mark.slow
def test_lean_monai_hides_only_its_extras_and_only_during_its_import() -> None:
    code = ("import sys; from stran.cli import import_monai_lean, MONAI_EXTRAS; import_monai_lean(); "
            "import monai.transforms; loaded = [m for m in MONAI_EXTRAS if m in sys.modules]; "
            "import matplotlib, scipy.signal; print(loaded, 'matplotlib' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "[] True", done.stdout + done.stderr
    # The lean import only pays off while the detect path needs MONAI; if it stops needing it, drop LEAN_COMMANDS'
    # MONAI import (stran.cli) rather than importing MONAI for nothing.
    code = "import sys, stran.engine.detect; print('monai' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "True", done.stdout + done.stderr


@pytest.mark.slow
def test_program_detect_from_anywhere(tmp_path: Path, study: Path) -> None:
    done = _program(["detect", str(study), "--mc-samples", "0"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    result = json.loads((tmp_path / "detections" / "PHANTOM-4243.json").read_text())
    assert result["prediction_label"] in ("scar", "no scar") and result["model"]["name"] == "stran"
