"""The extension as files: CineScar.py compiles, the .ui parses and defines every widget the code uses, CMake lists every
file, no symbolic link is left in the tree, CineScarLib.resultsdb is stran/resultsdb and CineScarLib.aha is
stran/report/aha.py, both from a checkout (loaded in place) and in the built extension (the copies
CineScar/CMakeLists.txt makes, the same files byte for byte),
CineScarLib imports with Slicer's packages only (and in the server venv), and CineScarLogic / the self-test run on
slicer-core with the Qt-only base classes stubbed.

What this cannot show: the widgets themselves (Qt, PythonQt), the layout and playback timing; those need the
Slicer application (see docs/slicer-module.md). What a slice view shows is test_cinescar_snapshot.py.
"""

from __future__ import annotations

import ast
import importlib
import json
import py_compile
import re
import shutil
import subprocess
import sys
import textwrap
import types
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
EXT = REPO / "slicer_extension"
MODULE_DIR = EXT / "CineScar"
LIB = MODULE_DIR / "CineScarLib"
RESULTSDB = REPO / "stran" / "resultsdb"
AHA = REPO / "stran" / "report" / "aha.py"
REPORT = REPO / "stran" / "report" / "render.py"  # CineScarLib.report
sys.path.insert(0, str(MODULE_DIR))


def lib_files() -> list[Path]:
    return sorted(LIB.glob("*.py"))


def cmake_resultsdb_files() -> list[str]:
    """The file names of ``set(RESULTSDB_PYTHON_FILES ...)`` in CineScar/CMakeLists.txt: what the build copies."""
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    block = re.search(r"set\(RESULTSDB_PYTHON_FILES\s+([^)]*)\)", cmake)
    assert block, "set(RESULTSDB_PYTHON_FILES ...) is missing from CineScar/CMakeLists.txt"
    return block.group(1).split()


def copy_like_cmake(modules_dir: Path) -> Path:
    """The module as the build lays it out: CineScar.py, CineScarLib/*.py, stran/report/aha.py as CineScarLib/aha.py,
    stran/report/render.py as CineScarLib/report.py and, copied from stran/resultsdb, the files CMake lists, as
    CineScarLib/resultsdb (returns that folder)."""
    (modules_dir / "CineScarLib").mkdir(parents=True)
    shutil.copy2(MODULE_DIR / "CineScar.py", modules_dir)
    for path in lib_files():
        shutil.copy2(path, modules_dir / "CineScarLib")
    shutil.copy2(AHA, modules_dir / "CineScarLib" / "aha.py")
    shutil.copy2(REPORT, modules_dir / "CineScarLib" / "report.py")
    copy = modules_dir / "CineScarLib" / "resultsdb"
    copy.mkdir()
    for name in cmake_resultsdb_files():
        shutil.copy2(RESULTSDB / name, copy)
    return copy


def test_module_files_compile_for_slicer_python() -> None:
    for path in [MODULE_DIR / "CineScar.py", *lib_files(), *sorted(RESULTSDB.glob("*.py")), AHA, REPORT]:
        py_compile.compile(str(path), doraise=True)
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 10))  # Slicer 5.10+ has Python 3.12


def ui_names_used_by_the_code() -> set[str]:
    """Every widget objectName the module looks up: ``self.ui.<name>`` in CineScar.py, ``ui.<name>`` in
    CineScarLib, the widgets of ``panel.SIGNALS`` / ``enabled_buttons`` / ``result_texts`` and the play/seek rows
    of ``ensureSequenceWidgets``."""
    from CineScarLib import panel

    code = (MODULE_DIR / "CineScar.py").read_text()
    used = set(re.findall(r"self\.ui\.(\w+)", code))
    for path in lib_files():
        used |= set(re.findall(r"\bui\.(\w+)", path.read_text()))
    used |= set(re.findall(r"getattr\(self\.ui, \"(\w+)\"", code))
    used |= set(re.findall(r"\(\"(\w+)\", \"qMRML\w+\", \d+\)", code))
    used |= {name for name, _signal, _slot in panel.SIGNALS}
    flags = dict.fromkeys(("busy", "connected", "shown", "training", "scene_source", "source_ready", "from_dicom"), False)
    used |= set(panel.enabled_buttons(**flags))
    detection = types.SimpleNamespace(result={}, probability=0.5, verdict="scar", threshold=0.5)
    used |= set(panel.result_texts(detection))
    return used


def test_ui_parses_and_defines_every_widget_the_code_uses() -> None:
    """Resources/UI/CineScar.ui is the panel's source (edited in Qt Designer): it must parse and define every
    widget the code looks up, once, with the custom widget classes declared."""
    ui_path = MODULE_DIR / "Resources" / "UI" / "CineScar.ui"
    root = ET.parse(ui_path).getroot()
    assert root.tag == "ui" and root.findtext("class") == "CineScar"
    top = root.find("widget")
    assert top is not None and top.get("class") == "qMRMLWidget" and top.get("name") == "CineScar"
    names = [w.get("name") for w in root.iter("widget")]
    assert len(names) == len(set(names)), f"objectNames used twice: {sorted({n for n in names if names.count(n) > 1})}"
    used = ui_names_used_by_the_code()
    assert {"serverUrlLineEdit", "detectButton", "scoreTableView", "playWidget", "bullseyeLabel"} <= used
    assert used - set(names) == set(), f"widgets the code uses but the .ui does not define: {used - set(names)}"
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    classes = {w.get("class") for w in root.iter("widget")}
    assert {c for c in classes if not c.startswith("Q")} <= declared
    assert "qMRMLSequenceBrowserPlayWidget" in classes and "qMRMLTableView" in classes


def test_cmake_lists_every_file_and_resources_exist() -> None:
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    listed = set(re.findall(r"\$\{MODULE_NAME\}(\S+)", cmake))
    expected = {"Lib/" + p.name for p in lib_files()}
    assert expected <= listed, f"not in CineScar/CMakeLists.txt: {expected - listed}"
    stale = [e for e in listed if re.fullmatch(r"Lib/resultsdb/\w+\.py", e)]
    assert stale == [], f"resultsdb is copied from stran/, not listed as CineScarLib files: {stale}"
    for resource in ("Resources/Icons/CineScar.png", "Resources/UI/CineScar.ui", "Resources/requirements.txt"):
        assert (MODULE_DIR / resource).is_file()
        assert resource.replace("CineScar", "${MODULE_NAME}") in cmake
    top = (EXT / "CMakeLists.txt").read_text()
    assert "add_subdirectory(CineScar)" in top and 'EXTENSION_CATEGORY "Cardiac"' in top
    png = (MODULE_DIR / "Resources" / "Icons" / "CineScar.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") == 128
    assert "SQLAlchemy" in (MODULE_DIR / "Resources" / "requirements.txt").read_text()


def test_no_symbolic_links_in_the_tree() -> None:
    """Links break on Windows checkouts and in extension packages: none, tracked or about to be."""
    try:
        done = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                              capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    links = [name for name in done.stdout.split("\0") if name and (REPO / name).is_symlink()]
    assert links == []
    assert not (LIB / "resultsdb").exists(), (
        "CineScarLib/resultsdb must not exist in the source tree (it would shadow stran/resultsdb): delete it")
    for name, source in (("aha.py", "stran/report/aha.py"), ("report.py", "stran/report/render.py")):
        assert not (LIB / name).exists(), (
            f"CineScarLib/{name} must not exist in the source tree (it would shadow {source}): delete it")


def test_cmake_copies_exactly_the_resultsdb_sources() -> None:
    """The build copies the files CMake lists from stran/resultsdb: they must be all of its .py files, and the
    source folder CMake names must be stran/resultsdb, so that the copy and the source never differ."""
    assert cmake_resultsdb_files() == sorted(p.name for p in RESULTSDB.glob("*.py"))
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    source = re.search(r"set\(RESULTSDB_SOURCE_DIR \$\{CMAKE_CURRENT_SOURCE_DIR\}/(\S+)\)", cmake)
    assert source and (MODULE_DIR / source.group(1)).resolve() == RESULTSDB.resolve()
    assert "${RESULTSDB_SOURCE_DIR}/${_resultsdb_file}" in cmake and "COPYONLY" in cmake


def test_cmake_copies_the_aha_and_report_modules_and_the_hook_table_matches() -> None:
    """stran/report/aha.py is copied as CineScarLib/aha.py and stran/report/render.py as CineScarLib/report.py;
    CineScarLib's table of project sources names exactly what CMake copies (resultsdb, a package; aha and
    report, modules)."""
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    for var, copy, name, path in (("AHA", "_aha_copy", "aha", AHA), ("REPORT", "_report_copy", "report", REPORT)):
        source = re.search(rf"set\({var}_SOURCE_FILE \$\{{CMAKE_CURRENT_SOURCE_DIR\}}/(\S+)\)", cmake)
        assert source and (MODULE_DIR / source.group(1)).resolve() == path.resolve()
        assert f"configure_file(${{{var}_SOURCE_FILE}} ${{{copy}}} COPYONLY)" in cmake
        assert f"set({copy} ${{CMAKE_CURRENT_BINARY_DIR}}/${{MODULE_NAME}}Lib/{name}.py)" in cmake
    import CineScarLib

    table = {name: (source, package) for name, (source, package, _copy) in CineScarLib.FROM_PROJECT.items()}
    assert table == {"CineScarLib.resultsdb": (RESULTSDB, True), "CineScarLib.aha": (AHA, False),
                     "CineScarLib.report": (REPORT, False)}


CMAKE_HARNESS = """
cmake_minimum_required(VERSION 3.16)
project(CineScarLayout NONE)
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer/qt-scripted-modules)
set(BUILD_TESTING OFF)
# What slicerMacroBuildScriptedModule does with its files (through CTK's ctkMacroCompilePythonScript): a relative
# path is copied from the module's source folder, an absolute one (a file written into the module's binary
# folder) to its path relative to that binary folder; both into the scripted-modules folder.
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY "WITH_GENERIC_TESTS" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  foreach(file ${MY_SCRIPTS} ${MY_RESOURCES})
    if(IS_ABSOLUTE ${file})
      file(RELATIVE_PATH target ${CMAKE_CURRENT_BINARY_DIR} ${file})
      set(source ${file})
    else()
      set(target ${file})
      set(source ${CMAKE_CURRENT_SOURCE_DIR}/${file})
    endif()
    configure_file(${source} ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}/${target} COPYONLY)
  endforeach()
endmacro()
add_subdirectory("@MODULE_DIR@" CineScar)
"""


def test_cmake_build_lays_out_resultsdb_from_stran(tmp_path: Path) -> None:
    """CineScar/CMakeLists.txt itself, configured with CMake (Slicer's macro reduced to its copy rule; checked
    against the real Slicer and CTK macros by hand): CineScarLib/resultsdb in the build is stran/resultsdb."""
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "CMakeLists.txt").write_text(CMAKE_HARNESS.replace("@MODULE_DIR@", MODULE_DIR.as_posix()))
    done = subprocess.run([cmake, "-S", str(tmp_path / "src"), "-B", str(tmp_path / "build")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    built = tmp_path / "build" / "lib" / "Slicer" / "qt-scripted-modules"
    copy = built / "CineScarLib" / "resultsdb"
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in RESULTSDB.glob("*.py"))
    for path in RESULTSDB.glob("*.py"):
        assert (copy / path.name).read_bytes() == path.read_bytes(), path.name
    assert sorted(p.name for p in (built / "CineScarLib").glob("*.py")) == sorted(
        [p.name for p in lib_files()] + ["aha.py", "report.py"])
    assert (built / "CineScarLib" / "aha.py").read_bytes() == AHA.read_bytes()
    assert (built / "CineScarLib" / "report.py").read_bytes() == REPORT.read_bytes()
    assert (built / "CineScar.py").is_file() and (built / "Resources" / "UI" / "CineScar.ui").is_file()


def test_resultsdb_copy_is_the_source_and_imports_as_module_lib(tmp_path: Path) -> None:
    """A copy laid out as the build makes it is byte for byte stran/resultsdb and is what CineScarLib.resultsdb
    imports there (a real subpackage; the checkout's loader is not used)."""
    modules = tmp_path / "lib" / "Slicer" / "qt-scripted-modules"
    copy = copy_like_cmake(modules)
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in RESULTSDB.glob("*.py"))
    for path in RESULTSDB.glob("*.py"):
        assert (copy / path.name).read_bytes() == path.read_bytes(), path.name
    assert (copy.parent / "aha.py").read_bytes() == AHA.read_bytes()
    script = ("import json, sys; sys.path.insert(0, sys.argv[1]); import CineScarLib.resultsdb as r; "
              "from CineScarLib.resultsdb import ResultsDB, export_command; import CineScarLib.aha as a; "
              "import CineScarLib.report as p; assert p.__file__.startswith(sys.argv[1]), p.__file__; "
              "from CineScarLib.segments import BullseyeState; "
              "print(json.dumps({'file': r.__file__, 'aha': a.__file__, 'stran': 'stran' in sys.modules, "
              "'hooks': [type(f).__name__ for f in sys.meta_path if getattr(f, 'cinescar_source_finder', 0)]}))")
    done = subprocess.run([sys.executable, "-I", "-c", script, str(modules)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"file": str(copy / "__init__.py"), "aha": str(copy.parent / "aha.py"), "stran": False,
                      "hooks": ["_FromSourceTree"]}  # installed, but it leaves built copies to Python's finders


def test_missing_resultsdb_is_a_clear_import_error(tmp_path: Path) -> None:
    """Neither a copied CineScarLib/resultsdb nor a checkout's stran/resultsdb: the import says what to do."""
    modules = tmp_path / "modules"
    shutil.rmtree(copy_like_cmake(modules))
    for missing, module, words in (
        (None, "resultsdb", ("ModuleNotFoundError CineScarLib.resultsdb is missing", "build the extension with CMake")),
        ("aha.py", "segments", ("ModuleNotFoundError CineScarLib.aha is missing",
                                "copies stran/report/aha.py into CineScarLib")),
    ):
        if missing:
            (modules / "CineScarLib" / missing).unlink()
        script = ("import sys; sys.path.insert(0, sys.argv[1]); import CineScarLib.client\n"
                  f"try:\n    import CineScarLib.{module}\nexcept ImportError as exc:\n    print(type(exc).__name__, exc)")
        done = subprocess.run([sys.executable, "-I", "-c", script, str(modules)], capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.startswith(words[0]) and words[1] in done.stdout, done.stdout


ISOLATED = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[1])             # what Slicer does for a module folder
    before = set(sys.modules)
    import CineScarLib.client, CineScarLib.dicom_study, CineScarLib.jobs, CineScarLib.volume, CineScarLib.session
    import CineScarLib.segments, CineScarLib.errors, CineScarLib.cancel, CineScarLib.multipart, CineScarLib.records
    import CineScarLib.corrections, CineScarLib.training, CineScarLib.database, CineScarLib.panel
    import CineScarLib.selftest
    light = sorted({n.split(".")[0] for n in set(sys.modules) - before})
    from CineScarLib.resultsdb import ResultsDB, new_id
    with ResultsDB(sys.argv[2]) as db:
        db.counts()
    print(json.dumps({"light": light, "numpy": __import__("numpy").__version__,
                      "stran": "stran" in sys.modules, "resultsdb": CineScarLib.resultsdb.__file__,
                      "aha": CineScarLib.aha.__file__}))
    """
)


def allowed(names: list[str]) -> set[str]:
    third_party = {"numpy", "requests", "urllib3", "charset_normalizer", "idna", "certifi", "CineScarLib", "chardet",
                   "brotli", "socks", "simplejson", "zstandard", "cryptography", "OpenSSL", "jwt"}
    return {n for n in names if n not in sys.stdlib_module_names and n not in third_party
            and not n.startswith("_") and n not in ("cython_runtime",)}


@pytest.mark.parametrize("venv", [".venv-slicer", ".venv"])
def test_lib_imports_in_isolation(tmp_path: Path, venv: str) -> None:
    """Slicer's Python has numpy 2 + requests; the server venv (stran demo) numpy 1.26. No torch, monai, nibabel."""
    python = REPO / venv / "bin" / "python"
    if not python.exists():
        pytest.skip(f"{venv} is not built")
    done = subprocess.run([str(python), "-I", "-c", ISOLATED, str(MODULE_DIR), str(tmp_path / "r.sqlite")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert allowed(report["light"]) == set(), report["light"]
    assert not report["stran"]
    # from a checkout, CineScarLib.resultsdb is stran/resultsdb itself, loaded in place under the module's name
    assert report["resultsdb"] == str(RESULTSDB / "__init__.py")
    assert report["aha"] == str(AHA)


# ----------------------------------------------------------------------------- CineScar.py on slicer-core


@pytest.fixture
def cinescar_module(monkeypatch):
    """Import CineScar.py with the Qt-only parts stubbed (qt, ScriptedLoadableModule base classes)."""
    slicer = pytest.importorskip("slicer")
    if not hasattr(slicer, "vtkMRMLSequenceBrowserNode"):
        pytest.skip("needs slicer-core")
    base = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent=None):
            self.parent = parent or types.SimpleNamespace()

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            pass

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = parent

    class ScriptedLoadableModuleTest(unittest.TestCase):
        messages: list = []

        def delayDisplay(self, message, msec=None):  # noqa: N802 - Slicer's name
            self.messages.append(message)

    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleWidget, ScriptedLoadableModuleTest):
        setattr(base, cls.__name__, cls)
    monkeypatch.setitem(sys.modules, "qt", types.ModuleType("qt"))
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", base)
    monkeypatch.setattr(slicer, "ScriptedLoadableModule", base, raising=False)
    monkeypatch.delitem(sys.modules, "CineScar", raising=False)
    module = importlib.import_module("CineScar")
    yield module
    sys.modules.pop("CineScar", None)


def synthetic_detection():
    from CineScarLib.records import Detection
    from CineScarLib.volume import Volume4D

    affine = np.array([[0, 0, 8.0, -20], [1.4, 0, 0, -60], [0, -1.4, 0, 50], [0, 0, 0, 1]])
    cine = Volume4D(np.arange(4 * 3 * 10 * 12, dtype=np.int16).reshape(4, 3, 10, 12), affine, 50.0)
    att = Volume4D(np.linspace(0, 1, 4 * 3 * 10 * 12, dtype=np.float32).reshape(4, 3, 10, 12), affine, 50.0)
    result = {"detection_id": "e" * 32, "image_id": "case_9", "study": {"study_uid": "1.2.9", "slices": 3},
              "study_probability": 0.4, "threshold": 0.5, "prediction": 0, "prediction_label": "no scar",
              "slice_probabilities": [0.2, 0.7, 0.1], "model": {"name": "stran", "version": "t", "sha256": "1" * 64},
              "created_utc": "2026-11-25T10:00:00Z"}
    return Detection(result, "case_9", att, cine)


def test_logic_on_slicer_core(cinescar_module, scene, tmp_path) -> None:
    logic = cinescar_module.CineScarLogic()
    with pytest.raises(RuntimeError, match="run a detection first"):
        logic.copyPredictedLabels()
    detection = synthetic_detection()
    nodes = logic.showDetection(detection)
    composite = scene.GetNodesByClass("vtkMRMLSliceCompositeNode").GetItemAsObject(0)
    assert composite.GetBackgroundVolumeID() == nodes.cineProxy.GetID()
    assert composite.GetForegroundVolumeID() == nodes.attentionProxy.GetID()
    np.testing.assert_allclose(logic.jumpToSlice(2), detection.cine.slice_center_ras(2))
    logic.setOverlay(0.7, 0.3)
    assert nodes.attentionProxy.GetDisplayNode().GetLowerThreshold() == pytest.approx(0.3)
    assert composite.GetForegroundOpacity() == pytest.approx(0.7)
    # the bullseye: the cine's slice axis points away from the apex, so slice 0 is the most apical (3 LV slices:
    # 2 basal, 1 mid, 0 apical); a click at the top of the disc is segment 1, shown on slice 2, labelled scar
    assert logic.bullseye is not None and not logic.bullseye.apex_last
    assert logic.bullseyePng(120)[:8] == b"\x89PNG\r\n\x1a\n"
    assert logic.clickBullseye(60, 3, 120) == (1, 2)
    assert logic.bullseye.correction(1) == 1 and logic.bullseye.selected == 1
    assert logic.selectSegment(17) == 0 and logic.selectSegment(8) == 1 and logic.clickBullseye(0, 0, 120) is None

    with pytest.raises(RuntimeError, match="Check connection"):
        logic.makeCorrection(1, reviewer="me")
    logic.setServer("http://127.0.0.1:9")
    logic.copyPredictedLabels()
    with pytest.raises(ValueError, match="labelled 'no scar' but AHA segment.s. 1 "):
        logic.makeCorrection(0, reviewer="me")
    correction = logic.makeCorrection(1, reviewer="me", source="LGE", comment="c")
    assert correction.slice_labels == [0, 1, 0] and correction.study_uid == "1.2.9"
    assert correction.segment_labels == [1] + [None] * 16 and correction.label()["segment_labels"][0] == 1
    assert correction.detection_id == "e" * 32 and correction.image_id == "case_9"

    # the results database: nothing without a location; SQLAlchemy installed only after a yes
    assert not logic.ensureDatabase()
    logic.setDatabaseLocation(str(tmp_path / "results.sqlite"))
    state = {"available": False, "installed": 0}
    logic.sqlalchemyAvailable = lambda: state["available"]

    def install():
        state["installed"] += 1
        state["available"] = True

    asked = []
    assert not logic.ensureDatabase(confirm=lambda q: asked.append(q) or False, install=install)
    assert "SQLAlchemy" in asked[0] and state["installed"] == 0 and not logic.session.has_database
    assert logic.ensureDatabase(confirm=lambda q: True, install=install)
    assert state["installed"] == 1 and logic.session.has_database
    logic.exportDetection()
    assert "1 detections" in logic.databaseSummary()
    assert logic.pendingCount() == 0


def test_self_test_runs_on_slicer_core(cinescar_module, scene, monkeypatch) -> None:
    import slicer

    shown = []
    plots = types.SimpleNamespace(logic=lambda: types.SimpleNamespace(ShowChartInLayout=shown.append))
    monkeypatch.setattr(slicer, "modules", types.SimpleNamespace(plots=plots), raising=False)
    monkeypatch.delenv("CINESCAR_TEST_SERVER_URL", raising=False)
    monkeypatch.setattr(slicer.mrmlScene, "Clear", lambda *a: None, raising=False)
    test = cinescar_module.CineScarTest()
    test.messages = []
    test.runTest()
    assert len(shown) == 1 and shown[0].IsA("vtkMRMLPlotChartNode")
    assert "Scene test passed" in test.messages
    assert any("CINESCAR_TEST_SERVER_URL" in m for m in test.messages)
