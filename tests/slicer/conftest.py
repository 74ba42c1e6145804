"""Shared fixtures of the Slicer-side tests."""

from __future__ import annotations

import pytest


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
