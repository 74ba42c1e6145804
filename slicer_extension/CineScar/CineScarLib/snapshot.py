"""Pictures that Slicer draws: a slice view of the scene rendered offscreen by Slicer's own display pipeline.

``vtkMRMLSliceLogic`` with a ``vtkMRMLSliceNode`` and a ``vtkMRMLSliceCompositeNode`` blends the background
(the cine frame) and the foreground (the scar / attention map through its display node's colour table, window
and threshold) exactly as a slice view does; its output image is read back as RGBA, no window or GL needed.
Needs ``slicer`` (the application, or the ``slicer-core`` wheel) and numpy; no Qt.

The plane is the volume's own: ``SetSliceToRASByNTP`` with the volume's column direction as the picture's x
axis and its row direction pointing down the picture, through the centre of slice ``k``, so an oblique
short-axis cine is shown in its own plane. By default the picture is the volume's pixel grid (``scale`` picture
pixels per voxel): pixel ``(r, c)`` is voxel ``(k, r, c)`` of ``arrayFromVolume`` at ``scale`` 1;
:func:`pixelIJK` gives the voxel under every pixel for any size, from the slice node's own XYToRAS matrix.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import slicer
import vtk

from . import mrml, sequences

LAYOUT_NAME = "CineScarSnapshot"  # the private (offscreen) view's layout name


def _slicerApplicationLogic() -> Any:
    """Adapter: the application's logic inside Slicer (so the offscreen view is set up as Slicer's own views are),
    None under slicer-core, where the slice logic works without one."""
    app = getattr(slicer, "app", None)
    return app.applicationLogic() if app is not None and hasattr(app, "applicationLogic") else None


def _ensureDefaultColors(scene: Any) -> None:
    """Adapter: Slicer's application fills every scene with its default colour tables; a bare slicer-core scene
    gets them here (the greyscale table of the background layer is one of them)."""
    if scene.GetNodeByID("vtkMRMLColorTableNodeGrey") is None:
        logic = slicer.vtkSlicerColorLogic()
        logic.SetMRMLScene(scene)
        logic.SetMRMLScene(None)


def standaloneScene(views: Sequence[str] = ("Red", "Yellow", "Green"), size: int = 256) -> Any:
    """Adapter for slicer-core (inside Slicer use ``slicer.mrmlScene``): a scene set up as the application sets up
    its own, with the Sequences and Colors logics (node classes, default colour tables; kept alive on the scene
    object) and the slice views' slice and composite nodes."""
    scene = slicer.vtkMRMLScene()
    logics = [slicer.vtkSlicerSequencesLogic(), slicer.vtkSlicerColorLogic()]
    for logic in logics:
        logic.SetMRMLScene(scene)
    scene.cineScarLogics = logics
    for view in views:
        node = scene.AddNewNodeByClass("vtkMRMLSliceNode", view)
        node.SetLayoutName(view)
        node.SetDimensions(size, size, 1)
        node.SetFieldOfView(250, 250, 1)
        scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode", f"{view} composite").SetLayoutName(view)
    return scene


def _volumeAxes(volumeNode: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int, int]]:
    """(world IJKToRAS, unit column direction, unit row direction, (columns, rows, slices))."""
    image = volumeNode.GetImageData()
    if image is None:
        raise ValueError(f"'{volumeNode.GetName()}' has no image data to show")
    dims = image.GetDimensions()
    affine = sequences.affineFromVolumeNode(volumeNode)
    column, row = (affine[:3, a] / np.linalg.norm(affine[:3, a]) for a in (0, 1))
    return affine, column, row, (int(dims[0]), int(dims[1]), int(dims[2]))


def configureSliceNode(sliceNode: Any, volumeNode: Any, sliceIndex: int | None = None,
                       size: Sequence[int] | None = None, scale: int = 1) -> None:
    """Put ``sliceNode`` in the plane of slice ``sliceIndex`` (default: the middle one) of ``volumeNode``.

    ``size`` None: the volume's own grid, ``scale`` picture pixels per voxel. A ``(width, height)``: square
    pixels, field of view fitted to the slice, centred on it.
    """
    affine, column, row, (nI, nJ, nK) = _volumeAxes(volumeNode)
    k = nK // 2 if sliceIndex is None else int(sliceIndex)
    if not 0 <= k < nK:
        raise IndexError(f"slice {k} is outside '{volumeNode.GetName()}' ({nK} slices)")
    spacingI, spacingJ = (float(np.linalg.norm(affine[:3, a])) for a in (0, 1))
    if size is None:
        width, height = nI * int(scale), nJ * int(scale)
        pixelX, pixelY = spacingI / int(scale), spacingJ / int(scale)
    else:
        width, height = int(size[0]), int(size[1])
        pixelX = pixelY = max(nI * spacingI / width, nJ * spacingJ / height)
    down = row  # picture rows follow the volume's rows: the slice's y axis (up) is minus the row direction
    normal = np.cross(column, -down)
    centre = (affine @ np.array([(nI - 1) / 2.0, (nJ - 1) / 2.0, k, 1.0]))[:3]
    # Slicer maps pixel x to (x - width / 2) * pixel size: move the origin so that the middle pixel is the centre
    origin = centre + 0.5 * pixelX * column - 0.5 * pixelY * down
    sliceNode.SetDimensions(width, height, 1)
    sliceNode.SetFieldOfView(width * pixelX, height * pixelY, float(np.linalg.norm(affine[:3, 2])))
    sliceNode.SetSliceToRASByNTP(*normal, *column, *origin, 0)
    sliceNode.UpdateMatrices()


def _matrix(vtkMatrix: Any) -> np.ndarray:
    return np.array([[vtkMatrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def pixelIJK(volumeNode: Any, sliceIndex: int | None = None, size: Sequence[int] | None = None,
             scale: int = 1) -> np.ndarray:
    """The voxel (i, j, k) = (column, row, slice), as floats, under each pixel of the picture :func:`renderSlice`
    makes with the same arguments: ``(height, width, 3)``, row 0 at the top."""
    sliceNode = slicer.vtkMRMLSliceNode()
    configureSliceNode(sliceNode, volumeNode, sliceIndex, size, scale)
    width, height, _ = sliceNode.GetDimensions()
    xyToIJK = np.linalg.inv(sequences.affineFromVolumeNode(volumeNode)) @ _matrix(sliceNode.GetXYToRAS())
    x, y = np.meshgrid(np.arange(width, dtype=float), np.arange(height, dtype=float)[::-1])
    xy = np.stack([x, y, np.zeros_like(x), np.ones_like(x)], axis=-1)
    return (xy @ xyToIJK.T)[..., :3]


def sceneOpacity(scene: Any, foreground: Any) -> float:
    """The overlay opacity the scene's slice views use for ``foreground`` (as ``mrml.showInSliceViews`` set it),
    else its display node's, else the module's default."""
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    for i in range(composites.GetNumberOfItems()):
        composite = composites.GetItemAsObject(i)
        if composite.GetForegroundVolumeID() == foreground.GetID() and composite.GetLayoutName() != LAYOUT_NAME:
            return float(composite.GetForegroundOpacity())
    display = foreground.GetDisplayNode()
    return float(display.GetOpacity()) if display is not None else mrml.DEFAULT_OPACITY


def renderSlice(scene: Any, background: Any, foreground: Any = None, *, opacity: float | None = None,
                sliceIndex: int | None = None, size: Sequence[int] | None = None, scale: int = 1,
                label: Any = None) -> np.ndarray:
    """What a slice view shows: ``background`` (e.g. the cine proxy) with ``foreground`` (e.g. the attention proxy)
    over it at ``opacity`` (None: the scene's, :func:`sceneOpacity`), and ``label`` (e.g. the outlined AHA segment,
    :mod:`.highlight`) as the label layer in outline mode, in the plane of slice ``sliceIndex`` of the background
    (:func:`configureSliceNode`). Returns RGBA ``(height, width, 4)`` uint8, row 0 at the top.

    The view is private (its slice node is not in the scene, its composite node is removed afterwards): the
    user's slice views are left as they are.
    """
    _ensureDefaultColors(scene)
    sliceNode = slicer.vtkMRMLSliceNode()
    sliceNode.SetLayoutName(LAYOUT_NAME)
    configureSliceNode(sliceNode, background, sliceIndex, size, scale)
    logic = slicer.vtkMRMLSliceLogic()
    application = _slicerApplicationLogic()
    if application is not None:
        logic.SetMRMLApplicationLogic(application)
    logic.SetMRMLScene(scene)
    logic.SetSliceNode(sliceNode)
    composite = logic.GetSliceCompositeNode()
    try:
        composite.SetHideFromEditors(True)
        composite.SetBackgroundVolumeID(background.GetID())
        composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
        if foreground is not None:
            composite.SetForegroundOpacity(sceneOpacity(scene, foreground) if opacity is None else float(opacity))
        composite.SetLabelVolumeID(label.GetID() if label is not None else None)
        sliceNode.SetUseLabelOutline(label is not None)
        producer = logic.GetImageDataConnection().GetProducer()
        producer.Update()
        rgba = _rgbaFromImage(producer.GetOutputDataObject(0))
    finally:  # the view's own nodes (its composite node; the slice model, transform, display Slicer makes for 3-D)
        helpers = [composite, logic.GetSliceDisplayNode(), logic.GetSliceModelNode(),
                   logic.GetSliceModelDisplayNode(), logic.GetSliceModelTransformNode()]
        logic.SetSliceNode(None)
        logic.SetMRMLScene(None)
        for node in helpers:
            if node is not None and node.GetScene() is scene:
                scene.RemoveNode(node)
    return rgba


def renderView(scene: Any, layoutName: str = "Red", **kwargs: Any) -> np.ndarray:
    """:func:`renderSlice` of what the slice view ``layoutName`` is set to show (its composite node's background,
    foreground and opacity, as ``mrml.showInSliceViews`` sets them, and its label layer, as ``highlight`` sets it),
    in the background volume's own plane."""
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    for i in range(composites.GetNumberOfItems()):
        composite = composites.GetItemAsObject(i)
        if composite.GetLayoutName() == layoutName:
            background = scene.GetNodeByID(composite.GetBackgroundVolumeID() or "")
            if background is None:
                raise ValueError(f"the slice view '{layoutName}' shows no background volume")
            foreground = scene.GetNodeByID(composite.GetForegroundVolumeID() or "")
            kwargs.setdefault("opacity", float(composite.GetForegroundOpacity()))
            kwargs.setdefault("label", scene.GetNodeByID(composite.GetLabelVolumeID() or ""))
            return renderSlice(scene, background, foreground, **kwargs)
    raise ValueError(f"the scene has no slice view '{layoutName}'")


def _rgbaFromImage(image: Any) -> np.ndarray:
    from vtk.util.numpy_support import vtk_to_numpy

    width, height, _ = image.GetDimensions()
    values = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)
    if values.shape[2] == 3:
        values = np.concatenate([values, np.full((height, width, 1), 255, values.dtype)], axis=2)
    return np.ascontiguousarray(values[::-1, :, :4], dtype=np.uint8)  # VTK's row 0 is the bottom


def writePng(rgba: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an RGBA ``(height, width, 4)`` uint8 picture (row 0 at the top) with vtkPNGWriter, atomically."""
    from vtk.util.numpy_support import numpy_to_vtk

    rgba = np.asarray(rgba)
    if rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.dtype != np.uint8:
        raise ValueError(f"an RGBA picture is (height, width, 4) uint8, not {rgba.shape} {rgba.dtype}")
    height, width = rgba.shape[:2]
    image = vtk.vtkImageData()
    image.SetDimensions(width, height, 1)
    scalars = numpy_to_vtk(np.ascontiguousarray(rgba[::-1]).reshape(-1, 4), deep=True)
    scalars.SetName("RGBA")
    image.GetPointData().SetScalars(scalars)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(handle)
    try:
        writer = vtk.vtkPNGWriter()
        writer.SetFileName(temp)
        writer.SetInputData(image)
        writer.Write()
        if writer.GetErrorCode() or os.path.getsize(temp) == 0:
            raise OSError(f"vtkPNGWriter could not write {temp}")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)  # as a plain open() would (mkstemp makes the file private)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    return path
