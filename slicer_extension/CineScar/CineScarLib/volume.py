"""The module's in-memory cine: a 4-D array with its RAS geometry (numpy only, no Slicer).

Conventions (the ST-RAN datastore's): ``array[t, k, j, i]`` is (phase, slice, row, column), which is also the order
Slicer's ``arrayFromVolume`` uses for each 3-D phase (k, j, i); the affine maps the voxel index (i, j, k) to RAS
millimetres and is Slicer's IJKToRAS matrix (and the NIfTI's RAS affine). Files are read and written by Slicer's own
reader and writer (``CineScarLib.volumefile``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class Volume4D:
    """Voxels ``array[t, k, j, i]`` (phase, slice, row, column) on a grid with a RAS affine.

    ``affine`` maps the voxel index (i, j, k) = (column, row, slice) to RAS mm; it is
    Slicer's IJKToRAS matrix. ``phase_interval_ms`` is the time between phases
    (the NIfTI's ``pixdim[4]``, the sequence's index step); 0 when unknown.
    """

    array: np.ndarray
    affine: np.ndarray
    phase_interval_ms: float = 0.0
    description: str = ""
    notes: list = field(default_factory=list)

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim == 3:
            arr = arr[np.newaxis]
        if arr.ndim != 4:
            raise ValueError(f"a Volume4D needs a 3-D or 4-D array, got shape {arr.shape}")
        self.array = arr
        aff = np.asarray(self.affine, dtype=np.float64)
        if aff.shape != (4, 4):
            raise ValueError(f"the affine must be 4x4, got shape {aff.shape}")
        self.affine = aff

    @property
    def phases(self) -> int:
        return int(self.array.shape[0])

    @property
    def slices(self) -> int:
        return int(self.array.shape[1])

    @property
    def rows(self) -> int:
        return int(self.array.shape[2])

    @property
    def columns(self) -> int:
        return int(self.array.shape[3])

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (column, row, slice) in mm: the column norms of the affine."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def origin(self) -> tuple[float, float, float]:
        """RAS position of voxel (0, 0, 0)."""
        return tuple(float(v) for v in self.affine[:3, 3])

    @property
    def directions(self) -> np.ndarray:
        """3x3 unit direction columns (Slicer's IJKToRASDirections)."""
        return self.affine[:3, :3] / np.asarray(self.spacing)

    def time_values_ms(self) -> list[float]:
        """Nominal time of each phase: k x interval (k when the interval is unknown)."""
        step = self.phase_interval_ms if self.phase_interval_ms > 0 else 1.0
        return [round(k * step, 3) for k in range(self.phases)]

    def slice_center_ras(self, k: int) -> tuple[float, float, float]:
        """RAS position of the centre of slice ``k``."""
        ijk = np.array([(self.columns - 1) / 2.0, (self.rows - 1) / 2.0, float(k), 1.0])
        return tuple(float(v) for v in (self.affine @ ijk)[:3])

    def slice_normal(self) -> np.ndarray:
        """Unit vector from one slice to the next (RAS)."""
        step = self.affine[:3, 2]
        norm = float(np.linalg.norm(step))
        return step / norm if norm > 0 else np.array([0.0, 0.0, 1.0])


def normalised_slice_order(volume: Volume4D) -> tuple[Volume4D, bool]:
    """The same study with slices running along row x column (the order the ST-RAN loaders use).

    A plain NIfTI whose slice axis points against the in-plane normal is
    reversed by the server's loader, so slice indices in its results would not
    match the file. Uploading the reversed copy keeps the indices identical.
    Returns (volume, reversed?).
    """
    linear = volume.affine[:3, :3]
    normal = np.cross(linear[:, 0], linear[:, 1])
    if float(np.dot(normal, linear[:, 2])) >= 0:
        return volume, False
    n_k = volume.slices
    affine = volume.affine.copy()
    affine[:3, 3] = affine[:3, 3] + (n_k - 1) * affine[:3, 2]
    affine[:3, 2] = -affine[:3, 2]
    array = np.ascontiguousarray(volume.array[:, ::-1])
    notes = [*volume.notes, "slice order reversed so that slices run along the slice normal"]
    return Volume4D(array, affine, volume.phase_interval_ms, volume.description, notes), True


class VolumeCodec(Protocol):
    """What reads and writes the server's 4-D NIfTI files: ``CineScarLib.volumefile`` (Slicer's reader and writer)
    in the module; ``stran demo`` passes one over nibabel, as it runs without Slicer."""

    def readVolume4D(self, source: bytes, *, what: str = "image") -> Volume4D: ...

    def volume4DBytes(self, volume: Volume4D) -> bytes: ...
