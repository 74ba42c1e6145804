"""The AHA 17-segment bullseye: ring radii, segment wedges, and which segment lies under a point.

Pure geometry on the unit disc, numpy and the standard library only (no matplotlib, no other ``stran`` module), so
that the same file can be copied into the 3D Slicer module for its clickable bullseye, as ``stran/resultsdb`` is.

Layout: the standard AHA bullseye (Cerqueira et al., "Standardized myocardial segmentation and nomenclature for
tomographic imaging of the heart", Circulation 2002;105:539-542), i.e. the left ventricle seen from the apex, as a
short-axis slice is shown in the usual display (right ventricle on the left of the image):

* the apex (segment 17) in the centre, then the rings apical (13-16), mid (7-12) and basal (1-6) outwards;
* anterior at the top (1, 7, 13), septum on the left (2-3, 8-9, 14), inferior at the bottom (4, 10, 15), lateral
  on the right (5-6, 11-12, 16); segment numbers increase counterclockwise around each ring;
* the basal and mid rings have six 60-degree segments, segment 1 (and 7) centred on 12 o'clock; the apical ring
  has four 90-degree segments, segment 13 centred on 12 o'clock.

Coordinates: ``x`` to the right, ``y`` up, the bullseye's centre at (0, 0) and its rim at radius 1. Angles are in
degrees, counterclockwise from the positive ``x`` axis (3 o'clock), as in ``math.atan2``. A display whose rows grow
downwards (an image, a Qt widget) maps its pixel ``(col, row)`` to ``x = (col - cx) / R``, ``y = (cy - row) / R``.
Segment boundaries are half-open: a point on a boundary belongs to the segment that starts there (counterclockwise)
and to the outer ring; the rim (radius 1) itself is inside.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

N_SEGMENTS = 17

SEGMENT_NAMES: tuple[str, ...] = (
    "basal anterior", "basal anteroseptal", "basal inferoseptal", "basal inferior", "basal inferolateral",
    "basal anterolateral", "mid anterior", "mid anteroseptal", "mid inferoseptal", "mid inferior",
    "mid inferolateral", "mid anterolateral", "apical anterior", "apical septal", "apical inferior",
    "apical lateral", "apex",
)

#: (inner, outer) radius of each ring on the unit disc; the rings are of equal width.
RING_RADII: dict[str, tuple[float, float]] = {
    "apex": (0.0, 0.25),
    "apical": (0.25, 0.5),
    "mid": (0.5, 0.75),
    "basal": (0.75, 1.0),
}

#: (first segment, number of segments, angle where the first segment starts, in degrees) of each ring.
_RINGS: dict[str, tuple[int, int, float]] = {
    "basal": (1, 6, 60.0),  # segment 1: 60-120 degrees, centred on 12 o'clock
    "mid": (7, 6, 60.0),
    "apical": (13, 4, 45.0),  # segment 13: 45-135 degrees
    "apex": (17, 1, 0.0),
}


@dataclass(frozen=True)
class Segment:
    """One AHA segment as a wedge of a ring: radii on the unit disc, angles in degrees (``theta_end`` >
    ``theta_start``; the apex is the full disc of radius 0.25, 0-360 degrees)."""

    number: int
    name: str
    level: str
    r_inner: float
    r_outer: float
    theta_start: float
    theta_end: float

    @property
    def theta_center(self) -> float:
        return (self.theta_start + self.theta_end) / 2.0

    def label_point(self) -> tuple[float, float]:
        """Where the segment's text goes: the middle of the wedge (the centre for the apex)."""
        if self.level == "apex":
            return 0.0, 0.0
        r = (self.r_inner + self.r_outer) / 2.0
        t = math.radians(self.theta_center)
        return r * math.cos(t), r * math.sin(t)

    def polygon(self, step_deg: float = 2.0) -> np.ndarray:
        """The outline as an ``(N, 2)`` array of (x, y), counterclockwise: the outer arc, then the inner arc back
        (the apex: one circle)."""
        n = max(2, int(math.ceil((self.theta_end - self.theta_start) / step_deg)) + 1)
        t = np.radians(np.linspace(self.theta_start, self.theta_end, n))
        outer = np.stack([self.r_outer * np.cos(t), self.r_outer * np.sin(t)], axis=1)
        if self.r_inner <= 0.0:
            return outer[:-1] if self.theta_end - self.theta_start >= 360.0 else np.vstack([outer, [[0.0, 0.0]]])
        inner = np.stack([self.r_inner * np.cos(t[::-1]), self.r_inner * np.sin(t[::-1])], axis=1)
        return np.vstack([outer, inner])


def aha_segments() -> tuple[Segment, ...]:
    """The 17 segments in AHA order (index 0 is segment 1)."""
    out = []
    for level, (first, count, start) in _RINGS.items():
        r_in, r_out = RING_RADII[level]
        width = 360.0 / count
        for k in range(count):
            number = first + k
            out.append(Segment(number, SEGMENT_NAMES[number - 1], level, r_in, r_out,
                               start + k * width, start + (k + 1) * width))
    return tuple(sorted(out, key=lambda s: s.number))


def segment_ids(x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
    """The AHA segment (1-17) under each point (x, y) of the unit-disc bullseye; 0 outside the rim. Broadcasts."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    r = np.hypot(x, y)
    theta = np.mod(np.degrees(np.arctan2(y, x)), 360.0)
    out = np.zeros(np.broadcast(x, y).shape, dtype=np.int64)
    for level, (first, count, start) in _RINGS.items():
        r_in, r_out = RING_RADII[level]
        inside = (r >= r_in) & ((r < r_out) | ((level == "basal") & (r <= r_out)))
        width = 360.0 / count
        index = np.floor(np.mod(theta - start, 360.0) / width).astype(np.int64) % count
        out = np.where(inside, first + index, out)
    return out


def segment_at(x: float, y: float) -> int | None:
    """The AHA segment (1-17) at the point (x, y) of the unit-disc bullseye, or None outside the rim."""
    number = int(segment_ids(x, y))
    return number or None


# ----------------------------------------------------------------------------- the segment map of a detection

#: ``result["segment_map"]["encoding"]``: runs of equal segment numbers along each slice's rows (row-major).
SEGMENT_MAP_ENCODING = "runs-v1"


def encode_segment_map(ids: np.ndarray) -> dict:
    """A ``(S, H, W)`` map of AHA segment numbers (0 = not myocardium) as JSON: ``{"encoding", "shape",
    "runs"}``, ``runs`` one ``[slice, start, length, segment]`` per run of one non-zero segment number, ``start``
    counting the slice's pixels row by row. A myocardial ring costs a few hundred runs per slice."""
    ids = np.asarray(ids)
    if ids.ndim != 3:
        raise ValueError(f"a segment map is (slices, rows, columns), got shape {ids.shape}")
    runs = []
    for k, plane in enumerate(ids.reshape(ids.shape[0], -1)):
        change = np.flatnonzero(np.diff(plane)) + 1
        starts = np.concatenate([[0], change])
        ends = np.concatenate([change, [plane.size]])
        for start, end in zip(starts, ends, strict=True):
            if plane[start]:
                runs.append([k, int(start), int(end - start), int(plane[start])])
    return {"encoding": SEGMENT_MAP_ENCODING, "shape": [int(n) for n in ids.shape], "runs": runs}


def decode_segment_map(encoded: dict) -> np.ndarray:
    """The ``(S, H, W)`` uint8 map back from :func:`encode_segment_map`'s JSON; ValueError when it is not one."""
    if not isinstance(encoded, dict) or encoded.get("encoding") != SEGMENT_MAP_ENCODING:
        raise ValueError(f"not a segment map of encoding {SEGMENT_MAP_ENCODING!r}")
    shape = tuple(int(n) for n in encoded.get("shape") or ())
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"a segment map's shape must be (slices, rows, columns), got {encoded.get('shape')}")
    flat = np.zeros((shape[0], shape[1] * shape[2]), np.uint8)
    for run in encoded.get("runs") or ():
        k, start, length, number = (int(v) for v in run)
        if not (0 <= k < shape[0] and 0 <= start and length > 0 and start + length <= flat.shape[1]
                and 1 <= number <= N_SEGMENTS):
            raise ValueError(f"segment map run {run} does not fit the shape {shape}")
        flat[k, start:start + length] = number
    return flat.reshape(shape)
