"""The per-slice scores in the scene: a table node (slice, position, probability, predicted and reviewer label)
read and written by the review, a bar chart with the decision threshold, and the jump of the slice views to a
slice. Needs ``slicer`` (or slicer-core) and numpy; no Qt.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import slicer
import vtk

from .sequences import ATTR_ROLE, _addNode, _scene
from .volume import Volume4D

ATTR_SLICE_CENTERS = "CineScar.SliceCentersRAS"
ATTR_DETECTION_ID = "CineScar.DetectionId"
SCAR, NO_SCAR = "scar", "no scar"

TABLE_COLUMNS = ("slice", "position_mm", "probability", "predicted", "reviewer")


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
