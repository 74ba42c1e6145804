"""The 4-D NIfTI files the server sends and takes, read and written by Slicer's own sequence reader and writer.

Slicer reads a 4-D NIfTI as a volume sequence and writes one back (``vtkMRMLVolumeSequenceStorageNode``, the
storage node behind ``slicer.util.loadSequence``): one scalar volume per phase, the index "time" in the file's unit,
the NIfTI scaling (``scl_slope``, e.g. the scar map's 1/255) applied. This module is the one place the module turns
such a file into a :class:`~CineScarLib.volume.Volume4D` (``array[t, k, j, i]``) and back; it works in a private
scene, so nothing appears in the user's. The reader needs a file, so bytes pass through a private temporary folder
that is always removed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import slicer

from .sequences import affineFromVolumeNode, ijkToRasMatrix
from .volume import Volume4D

#: index unit of Slicer's sequence (as the reader sets it from the NIfTI header) -> milliseconds
UNIT_MS = {"ms": 1.0, "msec": 1.0, "s": 1000.0, "sec": 1000.0, "us": 0.001, "usec": 0.001}


class VolumeFileError(ValueError):
    """A file that is not a 4-D NIfTI cine or map Slicer can read (the message names it and says why)."""


def _storage(scene: Any, path: Path) -> Any:
    storage = slicer.vtkMRMLVolumeSequenceStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    return storage


def readVolume4D(source: bytes | str | Path, *, what: str = "image") -> Volume4D:
    """A 4-D NIfTI (``bytes`` as received, or a path to a ``.nii``/``.nii.gz``) as a :class:`Volume4D`."""
    with tempfile.TemporaryDirectory(prefix="cinescar-") as folder:
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            path = Path(folder) / ("received.nii.gz" if data[:2] == b"\x1f\x8b" else "received.nii")
            path.write_bytes(data)
        else:
            path = Path(source)
            if not path.is_file():
                raise VolumeFileError(f"The {what} {path} does not exist.")
        scene = slicer.vtkMRMLScene()
        sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode")
        if not _storage(scene, path).ReadData(sequence) or sequence.GetNumberOfDataNodes() < 1:
            raise VolumeFileError(f"The {what} is not a 4-D NIfTI image Slicer can read ({path.name}).")
        return _to_volume4d(sequence, what)


def _to_volume4d(sequence: Any, what: str) -> Volume4D:
    n = sequence.GetNumberOfDataNodes()
    first = sequence.GetNthDataNode(0)
    if first is None or not first.IsA("vtkMRMLScalarVolumeNode"):
        raise VolumeFileError(f"The {what} holds no scalar volumes (one per phase).")
    arrays = [np.array(slicer.util.arrayFromVolume(sequence.GetNthDataNode(i)), copy=True) for i in range(n)]
    if arrays[0].ndim != 3:
        raise VolumeFileError(f"The {what} has {arrays[0].ndim}-D phases; a cine has slices, rows and columns.")
    interval = 0.0
    scale = UNIT_MS.get((sequence.GetIndexUnit() or "").strip().lower())
    try:
        values = np.array([float(sequence.GetNthIndexValue(i)) for i in range(n)])
    except ValueError:
        values = np.zeros(0)
    if scale is not None and values.size > 1:
        interval = float(np.median(np.diff(values))) * scale
    return Volume4D(np.stack(arrays), affineFromVolumeNode(first), interval)


def volume4DBytes(volume: Volume4D) -> bytes:
    """``volume`` as a gzip-compressed 4-D NIfTI written by Slicer (the phase interval in the header's time unit;
    the direction matrix must be orthogonal, as every scanner's is: ITK would otherwise coerce it)."""
    scene = slicer.vtkMRMLScene()
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode")
    sequence.SetIndexName("time")
    sequence.SetIndexUnit("ms")
    sequence.SetIndexType(sequence.NumericIndex)
    # Slicer's writer always writes a time step; an unknown interval becomes one nominal RR of 1000 ms over the
    # phases, which is what the server assumes for a file without one (the phases' fractions of the cycle agree)
    step = volume.phase_interval_ms if volume.phase_interval_ms > 0 else 1000.0 / volume.phases
    matrix = ijkToRasMatrix(volume.affine)
    for t, value in enumerate(step * np.arange(volume.phases)):
        item = slicer.vtkMRMLScalarVolumeNode()
        item.SetIJKToRASMatrix(matrix)
        slicer.util.updateVolumeFromArray(item, np.ascontiguousarray(volume.array[t]))
        sequence.SetDataNodeAtValue(item, f"{value:.6g}")
    with tempfile.TemporaryDirectory(prefix="cinescar-") as folder:
        path = Path(folder) / "cine.nii.gz"
        if not _storage(scene, path).WriteData(sequence) or not path.is_file():
            raise VolumeFileError("Slicer could not write the cine as a 4-D NIfTI.")
        return path.read_bytes()
