"""The one place where DICOM (LPS) and NIfTI (RAS) conventions meet.

A ``CineStudy`` affine maps the voxel index (column, row, slice) to LPS mm.
NIfTI stores the same voxel grid as (x, y, z, t) = (column, row, slice, phase)
with an affine to RAS mm, so the two differ only by flipping the first two
patient axes.
"""

from __future__ import annotations

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_to_ras(affine: np.ndarray) -> np.ndarray:
    """Voxel->LPS affine to voxel->RAS (and back: the flip is its own inverse)."""
    return LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)


ras_to_lps = lps_to_ras


def affine_from_dicom(
    orientation: np.ndarray, first_position: np.ndarray, pixel_spacing: tuple[float, float], slice_step: np.ndarray
) -> np.ndarray:
    """Voxel (column, row, slice) -> LPS affine from DICOM geometry.

    ``orientation`` is ImageOrientationPatient (row direction cosines, then
    column direction cosines); ``pixel_spacing`` is PixelSpacing (row spacing,
    column spacing); ``slice_step`` is the vector (mm) from one slice's
    ImagePositionPatient to the next.
    """
    o = np.asarray(orientation, dtype=np.float64)
    row_dir, col_dir = o[:3], o[3:]
    affine = np.eye(4)
    affine[:3, 0] = row_dir * float(pixel_spacing[1])  # moving along a row = next column
    affine[:3, 1] = col_dir * float(pixel_spacing[0])  # moving down a column = next row
    affine[:3, 2] = np.asarray(slice_step, dtype=np.float64)
    affine[:3, 3] = np.asarray(first_position, dtype=np.float64)
    return affine


def dicom_geometry(affine: np.ndarray, slice_index: int) -> tuple[list[float], list[float], list[float]]:
    """(ImageOrientationPatient, ImagePositionPatient, PixelSpacing) of one slice of an LPS affine."""
    col_step, row_step = affine[:3, 0], affine[:3, 1]
    col_spacing, row_spacing = float(np.linalg.norm(col_step)), float(np.linalg.norm(row_step))
    iop = list(col_step / col_spacing) + list(row_step / row_spacing)
    ipp = list(affine[:3, 3] + slice_index * affine[:3, 2])
    return [float(v) for v in iop], [float(v) for v in ipp], [row_spacing, col_spacing]
