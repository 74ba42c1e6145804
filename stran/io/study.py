"""The in-memory cine study every other part of the project works on (DESIGN.md, "CineStudy")."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stran.io.errors import InconsistentGeometryError


@dataclass(frozen=True)
class LeftOutFile:
    """A file the loader saw but did not use, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class Acquisition:
    """Scanner and sequence facts, as far as the source tells them."""

    vendor: str = ""
    field_strength: float | None = None
    sequence: str = ""
    model: str = ""


@dataclass
class CineStudy:
    """A short-axis cine study: ``pixels[s, t, row, column]``.

    Geometry (one convention for the whole project, see ``stran.io.geometry``):
    ``affine`` maps the voxel index ``(column, row, slice, 1)`` to DICOM patient
    coordinates (LPS, mm). Slices are ordered along the slice normal
    ``affine[:3, 2]``; phases are ordered by trigger time within each slice.
    """

    pixels: np.ndarray
    affine: np.ndarray
    trigger_times: np.ndarray
    rr_interval: float
    study_uid: str = ""
    series_uids: list[str] = field(default_factory=list)
    patient_id: str = ""
    sop_uids: np.ndarray | None = None
    acquisition: Acquisition = field(default_factory=Acquisition)
    slice_thickness: float | None = None
    rr_intervals: np.ndarray | None = None
    source: str = ""
    left_out: list[LeftOutFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pixels = np.ascontiguousarray(self.pixels, dtype=np.float32)
        self.affine = np.asarray(self.affine, dtype=np.float64)
        self.trigger_times = np.asarray(self.trigger_times, dtype=np.float64)
        if self.pixels.ndim != 4:
            raise InconsistentGeometryError(f"pixels must be (S, T, H, W), got shape {self.pixels.shape}")
        if self.affine.shape != (4, 4):
            raise InconsistentGeometryError(f"affine must be 4x4, got {self.affine.shape}")
        if self.trigger_times.shape != self.pixels.shape[:2]:
            raise InconsistentGeometryError(
                f"trigger_times shape {self.trigger_times.shape} does not match (S, T) = {self.pixels.shape[:2]}"
            )
        if self.rr_intervals is None:
            self.rr_intervals = np.full(self.n_slices, float(self.rr_interval))
        self.rr_intervals = np.asarray(self.rr_intervals, dtype=np.float64)
        if self.sop_uids is not None:
            self.sop_uids = np.asarray(self.sop_uids, dtype=object)
            if self.sop_uids.shape != self.pixels.shape[:2]:
                raise InconsistentGeometryError(f"sop_uids shape {self.sop_uids.shape} != (S, T) {self.pixels.shape[:2]}")

    # --- derived geometry -------------------------------------------------
    @property
    def n_slices(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def n_phases(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def matrix(self) -> tuple[int, int]:
        """(rows, columns)."""
        return int(self.pixels.shape[2]), int(self.pixels.shape[3])

    @property
    def pixel_spacing(self) -> tuple[float, float]:
        """(row spacing, column spacing) in mm, DICOM PixelSpacing order."""
        col_step = float(np.linalg.norm(self.affine[:3, 0]))
        row_step = float(np.linalg.norm(self.affine[:3, 1]))
        return row_step, col_step

    @property
    def slice_spacing(self) -> float:
        """Distance between neighbouring slice centres (mm)."""
        return float(np.linalg.norm(self.affine[:3, 2]))

    @property
    def slice_normal(self) -> np.ndarray:
        n = np.cross(self.affine[:3, 0], self.affine[:3, 1])
        return n / np.linalg.norm(n)

    @property
    def slice_positions(self) -> np.ndarray:
        """Position of each slice along the slice normal (mm, LPS)."""
        origin = self.affine[:3, 3]
        step = self.affine[:3, 2]
        normal = self.slice_normal
        return np.array([float(np.dot(origin + k * step, normal)) for k in range(self.n_slices)])

    @property
    def phase_fractions(self) -> np.ndarray:
        """Trigger time / RR per image, (S, T), in [0, 1)."""
        return self.trigger_times / self.rr_intervals[:, None]

    @property
    def nbytes(self) -> int:
        return int(self.pixels.nbytes)

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly description (what ``stran inspect`` prints)."""
        return {
            "source": self.source,
            "slices": self.n_slices,
            "phases": self.n_phases,
            "matrix": list(self.matrix),
            "pixel_spacing_mm": [round(v, 4) for v in self.pixel_spacing],
            "slice_spacing_mm": round(self.slice_spacing, 3),
            "slice_thickness_mm": self.slice_thickness,
            "slice_positions_mm": [round(float(v), 2) for v in self.slice_positions],
            "rr_interval_ms": round(float(self.rr_interval), 2),
            "rr_intervals_ms": [round(float(v), 2) for v in self.rr_intervals],
            "vendor": self.acquisition.vendor,
            "field_strength_t": self.acquisition.field_strength,
            "sequence": self.acquisition.sequence,
            "study_uid": self.study_uid,
            "series_uids": list(dict.fromkeys(self.series_uids)),
            "patient_id": self.patient_id,
            "left_out": [dataclasses.asdict(f) for f in self.left_out],
            "notes": list(self.notes),
        }

    def replace(self, **changes: Any) -> CineStudy:
        """A copy with some fields replaced (dataclasses.replace)."""
        return dataclasses.replace(self, **changes)
