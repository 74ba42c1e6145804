"""The cine and the scar map as Slicer volume sequences, played by one browser.

- the cine: a ``vtkMRMLSequenceNode`` of scalar volumes, one 3-D volume per phase, index "time" in ms, played by a
  ``vtkMRMLSequenceBrowserNode``;
- the map: a second sequence with the same index values, synchronised in the same browser, so its proxy follows
  the cine's phase;
- a cine already in the scene (e.g. from the DICOM browser) back as a :class:`~.volume.Volume4D` for upload.

Needs ``slicer`` (Slicer itself, or the ``slicer-core`` wheel for tests) and numpy; no Qt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import slicer
import vtk

from .volume import Volume4D

ATTR_ROLE = "CineScar.Role"  # node attribute: "cine", "attention", "scores", "threshold", "segment"


# ----------------------------------------------------------------------------- helpers


def _scene(scene: Any = None) -> Any:
    scene = scene if scene is not None else slicer.mrmlScene
    if scene is None:
        raise RuntimeError("no MRML scene (slicer.mrmlScene is not set)")
    return scene


def _addNode(scene: Any, className: str, name: str) -> Any:
    node = scene.AddNewNodeByClass(className, name)
    if node is None:
        raise RuntimeError(
            f"the scene cannot create {className}; in slicer-core register it first "
            "(e.g. vtkSlicerSequencesLogic().SetMRMLScene(scene))"
        )
    return node


def ijkToRasMatrix(affine: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(affine[r, c]))
    return matrix


def affineFromVolumeNode(volumeNode: Any) -> np.ndarray:
    """The IJKToRAS matrix of a volume node as a numpy array (world coordinates if under a linear transform)."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    affine = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    transform = volumeNode.GetParentTransformNode() if hasattr(volumeNode, "GetParentTransformNode") else None
    if transform is not None:
        if not transform.IsTransformToWorldLinear():
            raise ValueError(
                f"'{volumeNode.GetName()}' is under a non-linear transform ({transform.GetName()}); "
                "harden the transform first (Data module: right-click > Harden transform)"
            )
        toWorld = vtk.vtkMatrix4x4()
        transform.GetMatrixTransformToWorld(toWorld)
        affine = np.array([[toWorld.GetElement(r, c) for c in range(4)] for r in range(4)]) @ affine
    return affine


def formatIndexValue(value: float) -> str:
    """Index values are strings in MRML; keep them short and exact to 1 us."""
    text = f"{round(float(value), 3):.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


# ----------------------------------------------------------------------------- sequences


def createVolumeSequence(volume: Volume4D, name: str, scene: Any = None, indexValues: Sequence[str] | None = None,
                         phaseForItem: Sequence[int] | None = None) -> Any:
    """A sequence node with one scalar volume per phase (IJKToRAS = the volume's affine).

    ``indexValues`` default to the phase times in ms; ``phaseForItem`` picks the
    phase stored at each item (to follow another sequence with a different
    number of items).
    """
    scene = _scene(scene)
    if indexValues is None:
        indexValues = [formatIndexValue(v) for v in volume.time_values_ms()]
    if phaseForItem is None:
        phaseForItem = list(range(volume.phases))
    if len(indexValues) != len(phaseForItem):
        raise ValueError("indexValues and phaseForItem must have the same length")
    sequence = _addNode(scene, "vtkMRMLSequenceNode", name)
    sequence.SetIndexName("time")
    sequence.SetIndexUnit("ms")
    sequence.SetIndexType(sequence.NumericIndex)
    matrix = ijkToRasMatrix(volume.affine)
    for value, phase in zip(indexValues, phaseForItem, strict=True):
        item = slicer.vtkMRMLScalarVolumeNode()
        item.SetName(f"{name} {value} ms")
        item.SetIJKToRASMatrix(matrix)
        slicer.util.updateVolumeFromArray(item, np.ascontiguousarray(volume.array[phase]))
        sequence.SetDataNodeAtValue(item, str(value))
    return sequence


def createBrowser(masterSequence: Any, name: str, scene: Any = None, fps: float = 20.0) -> Any:
    """A browser playing ``masterSequence`` in a loop; the proxy node is created at item 0."""
    scene = _scene(scene)
    browser = _addNode(scene, "vtkMRMLSequenceBrowserNode", name)
    browser.SetAndObserveMasterSequenceNodeID(masterSequence.GetID())
    browser.SetPlaybackRateFps(fps)
    browser.SetPlaybackLooped(True)
    browser.SetPlaybackItemSkippingEnabled(True)
    browser.SetSelectedItemNumber(0)
    return browser


def phaseMapping(nItems: int, nPhases: int) -> list[int]:
    """For each of ``nItems`` browser items, the attention phase to show (same cycle fraction)."""
    if nItems == nPhases:
        return list(range(nPhases))
    return [min(nPhases - 1, int(math.floor(i * nPhases / nItems + 1e-9))) for i in range(nItems)]


def addAttentionSequence(browser: Any, attention: Volume4D, name: str = "Scar attention", scene: Any = None) -> Any:
    """The attention map as a sequence synchronised to ``browser`` (same index values as its master)."""
    scene = _scene(scene)
    master = browser.GetMasterSequenceNode()
    values = [master.GetNthIndexValue(i) for i in range(master.GetNumberOfDataNodes())]
    sequence = createVolumeSequence(attention, name, scene, indexValues=values,
                                    phaseForItem=phaseMapping(len(values), attention.phases))
    browser.AddSynchronizedSequenceNode(sequence.GetID())
    browser.SetSaveChanges(sequence, False)
    browser.SetSelectedItemNumber(browser.GetSelectedItemNumber())  # make the proxy now
    return sequence


def volume4DFromSequence(sequence: Any, browser: Any = None) -> Volume4D:
    """A cine already in Slicer (a volume sequence, e.g. from the DICOM browser) as a :class:`Volume4D`.

    Every item must be a scalar volume with the same size and geometry. The phase
    interval comes from numeric index values in ms or s; when the index has no
    time unit it is left unknown (0) and the server assumes one RR of 1000 ms.
    A linear transform on the browser's proxy is applied to the geometry.
    """
    n = sequence.GetNumberOfDataNodes()
    if n < 2:
        raise ValueError(f"'{sequence.GetName()}' has {n} item(s); a cine needs two or more phases")
    arrays, affine, notes = [], None, []
    for i in range(n):
        node = sequence.GetNthDataNode(i)
        if node is None or not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLLabelMapVolumeNode"):
            kind = "nothing" if node is None else node.GetClassName()
            raise ValueError(f"item {i} of '{sequence.GetName()}' is {kind}, not a scalar volume")
        array = slicer.util.arrayFromVolume(node)
        if array is None or array.ndim != 3:
            raise ValueError(f"item {i} of '{sequence.GetName()}' has no 3-D image data")
        item_affine = affineFromVolumeNode(node)
        if arrays and array.shape != arrays[0].shape:
            raise ValueError(
                f"the phases of '{sequence.GetName()}' differ in size ({arrays[0].shape} vs {array.shape} at item {i}); "
                "every phase must cover the same slices"
            )
        if affine is not None and not np.allclose(item_affine, affine, atol=1e-3):
            raise ValueError(f"the phases of '{sequence.GetName()}' differ in geometry (item {i}); every phase must share one grid")
        affine = item_affine if affine is None else affine
        arrays.append(np.array(array, copy=True))
    if arrays[0].shape[0] < 2:
        raise ValueError(f"'{sequence.GetName()}' has one slice per phase; a short-axis stack needs two or more")
    if browser is not None:
        proxy = browser.GetProxyNode(sequence)
        if proxy is not None and proxy.GetParentTransformNode() is not None:
            matrix = vtk.vtkMatrix4x4()
            proxy.GetParentTransformNode().GetMatrixTransformToWorld(matrix)
            if not proxy.GetParentTransformNode().IsTransformToWorldLinear():
                raise ValueError(f"'{proxy.GetName()}' is under a non-linear transform; harden it first")
            affine = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)]) @ affine
    interval = 0.0
    unit = (sequence.GetIndexUnit() or "").strip().lower()
    try:
        values = np.array([float(sequence.GetNthIndexValue(i)) for i in range(n)])
    except ValueError:
        values = None
    if values is not None and sequence.GetIndexType() == sequence.NumericIndex:
        steps = np.diff(values)
        if len(steps) and np.all(steps > 0):
            step = float(np.median(steps))
            scale = {"ms": 1.0, "msec": 1.0, "s": 1000.0, "sec": 1000.0}.get(unit)
            if scale is None and (sequence.GetIndexName() or "").lower() in ("time", "triggertime", "trigger time"):
                scale = 1000.0 if step < 0.2 else 1.0
            if scale is not None:
                interval = step * scale
    if interval <= 0:
        notes.append("phase interval unknown (the sequence index has no time unit); the server assumes one RR of 1000 ms")
    return Volume4D(np.stack(arrays), affine, interval, f"from Slicer sequence {sequence.GetName()}", notes)


def findCineSequences(scene: Any = None) -> list[tuple[Any, Any]]:
    """(sequence, browser) pairs in the scene that look like a cine: scalar volumes, two or more items."""
    scene = _scene(scene)
    found = []
    browsers = scene.GetNodesByClass("vtkMRMLSequenceBrowserNode")
    for b in range(browsers.GetNumberOfItems()):
        browser = browsers.GetItemAsObject(b)
        master = browser.GetMasterSequenceNode()
        if master is None or master.GetAttribute(ATTR_ROLE) == "attention":
            continue
        if master.GetNumberOfDataNodes() < 2:
            continue
        first = master.GetNthDataNode(0)
        if first is not None and first.IsA("vtkMRMLScalarVolumeNode") and not first.IsA("vtkMRMLLabelMapVolumeNode"):
            found.append((master, browser))
    return found
