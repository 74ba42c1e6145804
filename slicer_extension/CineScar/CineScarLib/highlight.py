"""The clicked AHA segment, outlined in the slice views over the cine and the scar map.

The pixels come from ``BullseyeState.segment_mask`` (the detection's segment map: where the model placed each
segment on the myocardium). They become a label map volume on the detection's grid (the map's IJK-to-RAS), shown
as the label layer of every slice view with its outline only, so the scar map under it stays visible. Needs
``slicer`` (Slicer, or slicer-core in the tests) and numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import slicer
import vtk

from .sequences import ATTR_ROLE

HIGHLIGHT_ROLE = "segment"


def _composites(scene: Any) -> list:
    nodes = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    return [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]


def showSegmentHighlight(mask: np.ndarray, reference: Any, node: Any = None, *, name: str = "Scar segment",
                         opacity: float = 1.0) -> Any:
    """Outline ``mask`` ``(slices, rows, columns)`` on ``reference``'s grid (a scalar volume: the scar map's or the
    cine's proxy) in every slice view; reuses ``node`` (the previous highlight) when given. Returns the label map
    node. ValueError when the mask is not on the reference's grid."""
    scene = reference.GetScene()
    grid = slicer.util.arrayFromVolume(reference).shape
    mask = np.asarray(mask, bool)
    if mask.shape != tuple(grid):
        raise ValueError(f"the segment map {mask.shape} is not on the grid of '{reference.GetName()}' {tuple(grid)}")
    if node is None or node.GetScene() is not scene:
        node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", name)
        node.SetAttribute(ATTR_ROLE, HIGHLIGHT_ROLE)
    matrix = vtk.vtkMatrix4x4()
    reference.GetIJKToRASMatrix(matrix)
    node.SetIJKToRASMatrix(matrix)
    slicer.util.updateVolumeFromArray(node, mask.astype(np.uint8))
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    for composite in _composites(scene):
        composite.SetLabelVolumeID(node.GetID())
        composite.SetLabelOpacity(float(opacity))
    slices = scene.GetNodesByClass("vtkMRMLSliceNode")
    for i in range(slices.GetNumberOfItems()):
        slices.GetItemAsObject(i).SetUseLabelOutline(True)
    return node


def clearSegmentHighlight(node: Any) -> None:
    """Take the highlight out of the slice views and the scene (nothing to do for None)."""
    if node is None or node.GetScene() is None:
        return
    scene = node.GetScene()
    for composite in _composites(scene):
        if composite.GetLabelVolumeID() == node.GetID():
            composite.SetLabelVolumeID(None)
    for i in range(node.GetNumberOfDisplayNodes()):
        display = node.GetNthDisplayNode(i)
        if display is not None:
            scene.RemoveNode(display)
    scene.RemoveNode(node)
