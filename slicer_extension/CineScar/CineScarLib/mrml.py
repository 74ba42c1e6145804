"""Scene building for a detection result: the overlay's display and the slice views, and the whole result at once.

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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .scores import createScoreChart, createScoreTable
from .sequences import ATTR_ROLE, _scene, addAttentionSequence, createBrowser, createVolumeSequence
from .volume import Volume4D

COLOR_PREFERENCE = (
    "vtkMRMLColorTableNodeFileColdToHotRainbow.txt",  # Slicer's file-based tables (not in slicer-core)
    "vtkMRMLPETProceduralColorNodePET-Heat",
    "vtkMRMLColorTableNodeRainbow",
)
DEFAULT_OPACITY = 0.5
DEFAULT_THRESHOLD = 0.2


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
