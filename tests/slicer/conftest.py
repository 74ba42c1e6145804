"""Shared fixtures of the Slicer-side tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# slicer-core's "slicer" meta-package extends its __path__ with every folder named "slicer" on sys.path and imports
# each module there as slicer.<name> (its plug-in mechanism); pytest puts tests/ on sys.path, so tests/slicer would
# be swept in and its test modules imported from inside "import slicer". Import it once here with tests/ off the
# path: later imports find it in sys.modules.
_TESTS = str(Path(__file__).resolve().parents[1])
_saved = list(sys.path)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(_TESTS)]
try:
    import slicer  # noqa: F401
except ImportError:  # not the Slicer test environment: the tests that need it skip
    pass
finally:
    sys.path[:] = _saved


@pytest.fixture
def scene():
    """A slicer-core MRML scene with the Sequences and Colors logics and the three slice views, installed as
    ``slicer.mrmlScene`` for the test (as in the application)."""
    slicer = pytest.importorskip("slicer")
    s = slicer.vtkMRMLScene()
    logics = [slicer.vtkSlicerSequencesLogic(), slicer.vtkSlicerColorLogic()]  # register node classes, default colours
    for logic in logics:
        logic.SetMRMLScene(s)
    for view in ("Red", "Yellow", "Green"):
        node = s.AddNewNodeByClass("vtkMRMLSliceNode", view)
        node.SetLayoutName(view)
        node.SetDimensions(256, 256, 1)
        node.SetFieldOfView(250, 250, 1)
        s.AddNewNodeByClass("vtkMRMLSliceCompositeNode", f"{view} composite").SetLayoutName(view)
    previous = getattr(slicer, "mrmlScene", None)
    slicer.mrmlScene = s
    yield s
    slicer.mrmlScene = previous
    s.Clear(1)
    del logics
