"""Scene building for the cine and the detection result: sequences, overlay, score table and chart.

Needs ``slicer`` (Slicer itself, or the ``slicer-core`` wheel for tests) and
numpy; no Qt, so every function here runs in pytest on real MRML classes.

- the cine: a ``vtkMRMLSequenceNode`` of scalar volumes, one 3-D volume per
  phase, index "time" in ms, played by a ``vtkMRMLSequenceBrowserNode``;
- the attention map: a second sequence with the same index values,
  synchronised in the same browser, so its proxy follows the cine's phase;
  shown as a foreground overlay (heat colours, fixed 0..1 window, values below
  a threshold transparent);
- the per-slice scores: a table node (slice, position, probability, predicted
  and reviewer label) and a bar chart with the decision threshold.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import slicer
import vtk

from .nifti import Volume4D

COLOR_PREFERENCE = (
    "vtkMRMLColorTableNodeFileColdToHotRainbow.txt",  # Slicer's file-based tables (not in slicer-core)
    "vtkMRMLPETProceduralColorNodePET-Heat",
    "vtkMRMLColorTableNodeRainbow",
)
DEFAULT_OPACITY = 0.5
DEFAULT_THRESHOLD = 0.2
ATTR_ROLE = "CineScar.Role"
ATTR_SLICE_CENTERS = "CineScar.SliceCentersRAS"
ATTR_DETECTION_ID = "CineScar.DetectionId"
SCAR, NO_SCAR = "scar", "no scar"

TABLE_COLUMNS = ("slice", "position_mm", "probability", "predicted", "reviewer")


@dataclass
class ScarNodes:
    """The nodes made for one detection (all in the scene)."""

    browser: Any
    cineSequence: Any
    attentionSequence: Any
    table: Any
    chart: Any
    thresholdTable: Any = None
    ownsCine: bool = True  # False when the cine sequence was the user's (left in place on removal)
    ownsBrowser: bool = True  # False when the browser was the user's

    @property
    def cineProxy(self) -> Any:
        return self.browser.GetProxyNode(self.cineSequence)

    @property
    def attentionProxy(self) -> Any:
        return None if self.attentionSequence is None else self.browser.GetProxyNode(self.attentionSequence)


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


# ----------------------------------------------------------------------------- display


def pickColorNodeID(scene: Any = None, preference: Sequence[str] = COLOR_PREFERENCE) -> str | None:
    scene = _scene(scene)
    for node_id in preference:
        if scene.GetNodeByID(node_id) is not None:
            return node_id
    return None


def setupAttentionDisplay(attentionProxy: Any, *, colorNodeID: str | None = None, opacity: float = DEFAULT_OPACITY,
                          threshold: float = DEFAULT_THRESHOLD) -> Any:
    """Heat colours, window/level fixed to 0..1, values below ``threshold`` transparent; returns the display node.

    The opacity of the overlay is a property of the slice views' composite nodes
    (see :func:`showInSliceViews`); it is also kept on the display node.
    """
    if attentionProxy.GetDisplayNode() is None:
        attentionProxy.CreateDefaultDisplayNodes()
    display = attentionProxy.GetDisplayNode()
    colorNodeID = colorNodeID or pickColorNodeID(attentionProxy.GetScene())
    if colorNodeID:
        display.SetAndObserveColorNodeID(colorNodeID)
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, 1.0)
    display.AutoThresholdOff()
    display.SetThreshold(float(threshold), 1.0)
    display.ApplyThresholdOn()
    display.SetInterpolate(True)
    display.SetOpacity(float(opacity))
    return display


def setupCineDisplay(cineProxy: Any) -> Any:
    if cineProxy.GetDisplayNode() is None:
        cineProxy.CreateDefaultDisplayNodes()
    display = cineProxy.GetDisplayNode()
    grey = "vtkMRMLColorTableNodeGrey"
    if cineProxy.GetScene() is not None and cineProxy.GetScene().GetNodeByID(grey) is not None:
        display.SetAndObserveColorNodeID(grey)
    display.AutoWindowLevelOn()
    return display


def showInSliceViews(background: Any, foreground: Any = None, opacity: float = DEFAULT_OPACITY, scene: Any = None) -> int:
    """Cine as background, attention as foreground in every slice view; returns the number of views set.

    The same as ``slicer.util.setSliceViewerLayers`` but with MRML only.
    """
    scene = _scene(scene)
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    count = 0
    for i in range(composites.GetNumberOfItems()):
        composite = composites.GetItemAsObject(i)
        composite.SetBackgroundVolumeID(background.GetID() if background is not None else None)
        composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
        composite.SetForegroundOpacity(float(opacity))
        count += 1
    return count


def setOverlayOpacity(opacity: float, scene: Any = None) -> None:
    scene = _scene(scene)
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    for i in range(composites.GetNumberOfItems()):
        composites.GetItemAsObject(i).SetForegroundOpacity(float(opacity))


def alignSliceViewToVolume(volumeNode: Any, sliceNodeName: str = "Red", scene: Any = None) -> bool:
    """Turn one slice view to the volume's own planes (the short-axis plane for a SAX stack)."""
    scene = _scene(scene)
    sliceNodes = scene.GetNodesByClass("vtkMRMLSliceNode")
    for i in range(sliceNodes.GetNumberOfItems()):
        node = sliceNodes.GetItemAsObject(i)
        if node.GetName() == sliceNodeName or node.GetLayoutName() == sliceNodeName:
            node.RotateToVolumePlane(volumeNode)
            return True
    return False


# ----------------------------------------------------------------------------- scores


def sliceCentersRAS(volume: Volume4D) -> list[tuple[float, float, float]]:
    return [volume.slice_center_ras(k) for k in range(volume.slices)]


def slicePositionsMm(volume: Volume4D) -> list[float]:
    """Position of each slice along the slice normal (mm, like DICOM SliceLocation)."""
    normal = volume.slice_normal()
    return [float(np.dot(np.asarray(c), normal)) for c in sliceCentersRAS(volume)]


def labelText(value: int | None) -> str:
    return "" if value is None else (SCAR if int(value) == 1 else NO_SCAR)


def parseLabelText(text: str, row: int | None = None) -> int | None:
    """"scar"/"1"/"yes" -> 1, "no scar"/"0"/"no" -> 0, "" or "?" -> None (not assessed)."""
    t = (text or "").strip().lower().replace("_", " ").replace("-", " ")
    if t in ("", "?", "none", "not assessed", "n/a", "na"):
        return None
    if t in ("scar", "1", "yes", "y", "true", "s"):
        return 1
    if t in ("no scar", "noscar", "0", "no", "n", "false", "none scar"):
        return 0
    where = f" in row {row}" if row is not None else ""
    raise ValueError(f"'{text}'{where} is not a slice label: write scar, no scar, or leave it empty")


def createScoreTable(result: dict, geometry: Volume4D | None = None, reviewerLabels: Sequence | None = None,
                     name: str = "Scar per slice", scene: Any = None) -> Any:
    """Per-slice scores: slice, position (mm), probability (NaN if none), predicted and reviewer label."""
    scene = _scene(scene)
    probabilities = list(result.get("slice_probabilities") or [])
    threshold = float(result.get("threshold", 0.5))
    n = len(probabilities)
    positions = slicePositionsMm(geometry) if geometry is not None and geometry.slices == n else [float("nan")] * n
    reviewer = list(reviewerLabels) if reviewerLabels is not None else [None] * n
    if len(reviewer) != n:
        raise ValueError(f"{len(reviewer)} reviewer labels for {n} slices")
    table = _addNode(scene, "vtkMRMLTableNode", name)
    columns = {
        "slice": vtk.vtkIntArray(),
        "position_mm": vtk.vtkDoubleArray(),
        "probability": vtk.vtkDoubleArray(),
        "predicted": vtk.vtkStringArray(),
        "reviewer": vtk.vtkStringArray(),
    }
    for key in TABLE_COLUMNS:
        columns[key].SetName(key)
    for k in range(n):
        p = probabilities[k]
        columns["slice"].InsertNextValue(k)
        columns["position_mm"].InsertNextValue(round(positions[k], 2) if math.isfinite(positions[k]) else float("nan"))
        columns["probability"].InsertNextValue(float("nan") if p is None else float(p))
        columns["predicted"].InsertNextValue("" if p is None else labelText(int(float(p) >= threshold)))
        columns["reviewer"].InsertNextValue(labelText(reviewer[k]))
    for key in TABLE_COLUMNS:
        table.AddColumn(columns[key])
    titles = {"slice": "Slice", "position_mm": "Position (mm)", "probability": "Scar probability",
              "predicted": "Predicted", "reviewer": "Reviewer label"}
    for key, title in titles.items():
        table.SetColumnTitle(key, title)
    table.SetColumnDescription("reviewer", "Type scar or no scar (empty = not assessed)")
    table.SetColumnUnitLabel("position_mm", "mm")
    table.SetUseColumnTitleAsColumnHeader(True)
    table.SetAttribute(ATTR_ROLE, "scores")
    table.SetAttribute(ATTR_DETECTION_ID, str(result.get("detection_id", "")))
    if geometry is not None and geometry.slices == n:
        table.SetAttribute(ATTR_SLICE_CENTERS, json.dumps([list(c) for c in sliceCentersRAS(geometry)]))
    return table


def tableRows(table: Any) -> list[dict]:
    """The score table as dicts (probability None where NaN)."""
    vtable = table.GetTable()
    rows = []
    for r in range(vtable.GetNumberOfRows()):
        row = {}
        for key in TABLE_COLUMNS:
            column = vtable.GetColumnByName(key)
            value = column.GetValue(r)
            if key == "probability" and isinstance(value, float) and math.isnan(value):
                value = None
            row[key] = value
        rows.append(row)
    return rows


def readReviewerLabels(table: Any) -> list:
    """The reviewer column as 0/1/None per slice; ValueError naming the row if a cell is unreadable."""
    column = table.GetTable().GetColumnByName("reviewer")
    return [parseLabelText(column.GetValue(r), r) for r in range(column.GetNumberOfValues())]


def setReviewerLabels(table: Any, labels: Sequence) -> None:
    column = table.GetTable().GetColumnByName("reviewer")
    if len(labels) != column.GetNumberOfValues():
        raise ValueError(f"{len(labels)} labels for {column.GetNumberOfValues()} slices")
    for r, value in enumerate(labels):
        column.SetValue(r, labelText(value))
    column.Modified()
    table.Modified()


def sliceCenterFromTable(table: Any, row: int) -> tuple[float, float, float] | None:
    text = table.GetAttribute(ATTR_SLICE_CENTERS)
    if not text:
        return None
    centers = json.loads(text)
    return tuple(centers[row]) if 0 <= row < len(centers) else None


def createScoreChart(table: Any, threshold: float = 0.5, name: str = "Scar per slice", scene: Any = None) -> tuple[Any, Any]:
    """A bar chart of the slice probabilities with the decision threshold as a line; returns (chart, threshold table)."""
    scene = _scene(scene)
    bars = _addNode(scene, "vtkMRMLPlotSeriesNode", "Scar probability")
    bars.SetAndObserveTableNodeID(table.GetID())
    bars.SetXColumnName("slice")
    bars.SetYColumnName("probability")
    bars.SetPlotType(bars.PlotTypeBar)
    bars.SetColor(0.85, 0.25, 0.15)
    n = table.GetNumberOfRows()
    limits = _addNode(scene, "vtkMRMLTableNode", f"{name} threshold")
    x, y = vtk.vtkDoubleArray(), vtk.vtkDoubleArray()
    x.SetName("slice")
    y.SetName("threshold")
    for value in (-0.5, max(n, 1) - 0.5):
        x.InsertNextValue(value)
        y.InsertNextValue(float(threshold))
    limits.AddColumn(x)
    limits.AddColumn(y)
    limits.SetAttribute(ATTR_ROLE, "threshold")
    line = _addNode(scene, "vtkMRMLPlotSeriesNode", "Threshold")
    line.SetAndObserveTableNodeID(limits.GetID())
    line.SetXColumnName("slice")
    line.SetYColumnName("threshold")
    line.SetPlotType(line.PlotTypeLine)
    line.SetMarkerStyle(line.MarkerStyleNone)
    line.SetLineStyle(line.LineStyleDash)
    line.SetColor(0.2, 0.2, 0.2)
    chart = _addNode(scene, "vtkMRMLPlotChartNode", name)
    chart.AddAndObservePlotSeriesNodeID(bars.GetID())
    chart.AddAndObservePlotSeriesNodeID(line.GetID())
    chart.SetTitle("Scar probability per slice")
    chart.SetXAxisTitle("slice")
    chart.SetYAxisTitle("probability")
    chart.SetYAxisRangeAuto(False)
    chart.SetYAxisRange(0.0, 1.0)
    chart.SetXAxisRangeAuto(False)
    chart.SetXAxisRange(-0.5, max(n, 1) - 0.5)
    chart.SetLegendVisibility(False)
    return chart, limits


# ----------------------------------------------------------------------------- navigation


def jumpToSlice(ras: Sequence[float], scene: Any = None) -> None:
    """Move every slice view (without re-centring) so that it passes through ``ras``."""
    scene = _scene(scene)
    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, float(ras[0]), float(ras[1]), float(ras[2]),
                                          slicer.vtkMRMLSliceNode.OffsetJumpSlice)


# ----------------------------------------------------------------------------- everything at once


def removeScarNodes(nodes: ScarNodes, scene: Any = None) -> None:
    """Remove what :func:`loadDetection` added, display and storage nodes included (the user's own cine
    sequence, browser and cine proxy stay)."""
    scene = _scene(scene)
    browser = nodes.browser
    doomed = []
    if nodes.chart is not None:
        doomed += [nodes.chart.GetNthPlotSeriesNode(i) for i in range(nodes.chart.GetNumberOfPlotSeriesNodes())]
        doomed.append(nodes.chart)
    doomed += [nodes.table, nodes.thresholdTable]
    proxies = []
    if browser is not None:
        if nodes.attentionSequence is not None:
            proxies.append(browser.GetProxyNode(nodes.attentionSequence))
        if nodes.ownsBrowser and nodes.ownsCine:
            proxies.append(browser.GetProxyNode(nodes.cineSequence))
        if nodes.ownsBrowser:
            scene.RemoveNode(browser)  # first: a live browser would make new proxies for the ones removed below
        elif nodes.attentionSequence is not None:
            browser.RemoveSynchronizedSequenceNode(nodes.attentionSequence.GetID())
    for proxy in proxies:
        if proxy is not None:
            doomed += _displayAndStorage(proxy) + [proxy]
    doomed.append(nodes.attentionSequence)
    if nodes.ownsCine:
        doomed.append(nodes.cineSequence)
    for node in doomed:
        if node is not None and node.GetScene() is scene:
            scene.RemoveNode(node)


def _displayAndStorage(node: Any) -> list:
    found = []
    if hasattr(node, "GetNumberOfDisplayNodes"):
        found += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
    if hasattr(node, "GetNumberOfStorageNodes"):
        found += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
    return found


def loadDetection(
    result: dict,
    attention: Volume4D | None,
    *,
    cine: Volume4D | None = None,
    cineSequence: Any = None,
    browser: Any = None,
    reviewerLabels: Sequence | None = None,
    name: str | None = None,
    opacity: float = DEFAULT_OPACITY,
    threshold: float = DEFAULT_THRESHOLD,
    colorNodeID: str | None = None,
    scene: Any = None,
) -> ScarNodes:
    """Put a detection in the scene: the cine (new sequence from ``cine``, or the existing ``cineSequence``
    with its ``browser``), the synchronised attention overlay, the score table and the chart."""
    scene = _scene(scene)
    label = name or str(result.get("image_id") or (result.get("study") or {}).get("study_uid") or "study")
    ownsCine, ownsBrowser = cineSequence is None, browser is None
    if cineSequence is None:
        if cine is None:
            raise ValueError("give the cine (a Volume4D) or an existing cine sequence")
        cineSequence = createVolumeSequence(cine, f"{label} cine", scene)
        cineSequence.SetAttribute(ATTR_ROLE, "cine")
        browser = createBrowser(cineSequence, f"{label} browser", scene)
    elif browser is None:
        browser = createBrowser(cineSequence, f"{label} browser", scene)
    attentionSequence = None
    if attention is not None:
        attentionSequence = addAttentionSequence(browser, attention, f"{label} attention", scene)
        attentionSequence.SetAttribute(ATTR_ROLE, "attention")
    nodes = ScarNodes(browser, cineSequence, attentionSequence, None, None, ownsCine=ownsCine,
                      ownsBrowser=ownsBrowser)
    cineProxy = nodes.cineProxy
    if cineProxy is not None:
        setupCineDisplay(cineProxy)
    if nodes.attentionProxy is not None:
        setupAttentionDisplay(nodes.attentionProxy, colorNodeID=colorNodeID, opacity=opacity, threshold=threshold)
        nodes.attentionProxy.SetAttribute(ATTR_ROLE, "attention")
    geometry = attention if attention is not None else cine
    nodes.table = createScoreTable(result, geometry, reviewerLabels, f"{label} scores", scene)
    nodes.chart, nodes.thresholdTable = createScoreChart(nodes.table, float(result.get("threshold", 0.5)),
                                                         f"{label} chart", scene)
    return nodes
