"""Left-ventricular geometry, AHA 17 segments and coronary territories.

Conventions (used by every phantom module):

* Heart frame: ``depth`` z (mm) runs along the LV long axis from the ED mitral
  (base) plane, z = 0, towards the apex; the endocardial apex is at
  ``cavity_length`` and the epicardial apex at ``cavity_length + apex_wall``.
  In a short-axis plane, ``lat`` points to the lateral wall and ``inf`` to
  the inferior wall.
* AHA angle phi (degrees): 0 = anterior, 90 = septal, 180 = inferior,
  270 (= -90) = lateral, i.e. ``phi = atan2(-lat, -inf)``, the convention of
  ukbb_cardiac's ``determine_aha_segment_id``. The RV insertion points lie at
  about 30 and 150 degrees. Seen from the apex (the standard SAX display) phi
  grows anticlockwise.
* Levels: basal, mid and apical thirds of the ED cavity; the apex cap
  (segment 17) lies beyond the endocardial apex.
"""

from __future__ import annotations

import numpy as np

N_SEGMENTS = 17

SEGMENT_NAMES: dict[int, str] = {
    1: "basal anterior",
    2: "basal anteroseptal",
    3: "basal inferoseptal",
    4: "basal inferior",
    5: "basal inferolateral",
    6: "basal anterolateral",
    7: "mid anterior",
    8: "mid anteroseptal",
    9: "mid inferoseptal",
    10: "mid inferior",
    11: "mid inferolateral",
    12: "mid anterolateral",
    13: "apical anterior",
    14: "apical septal",
    15: "apical inferior",
    16: "apical lateral",
    17: "apex",
}

LEVELS = ("basal", "mid", "apical", "apex")


def segment_level(segment: int) -> str:
    if segment <= 6:
        return "basal"
    if segment <= 12:
        return "mid"
    if segment <= 16:
        return "apical"
    return "apex"


# AHA 2002 territories (with the recognised variability handled by scenarios).
TERRITORIES: dict[str, tuple[int, ...]] = {
    "LAD": (1, 2, 7, 8, 13, 14, 17),
    "RCA": (3, 4, 9, 10, 15),
    "LCX": (5, 6, 11, 12, 16),
}
TERRITORY_OF: dict[int, str] = {seg: name for name, segs in TERRITORIES.items() for seg in segs}


def segment_sector(segment: int) -> tuple[float, float]:
    """(centre, half width) of a segment's angular sector, degrees; the apex cap covers all angles."""
    if segment <= 12:
        return 60.0 * ((segment - 1) % 6), 30.0
    if segment <= 16:
        return 90.0 * (segment - 13), 45.0
    return 0.0, 180.0


def segment_at(phi_deg: np.ndarray | float, level: str) -> np.ndarray:
    """AHA segment number of angle(s) ``phi_deg`` at a level."""
    phi = np.mod(np.asarray(phi_deg, dtype=np.float64), 360.0)
    if level == "basal":
        return (np.floor(np.mod(phi + 30.0, 360.0) / 60.0).astype(int) % 6) + 1
    if level == "mid":
        return (np.floor(np.mod(phi + 30.0, 360.0) / 60.0).astype(int) % 6) + 7
    if level == "apical":
        return (np.floor(np.mod(phi + 45.0, 360.0) / 90.0).astype(int) % 4) + 13
    return np.full(phi.shape, 17, dtype=int)


def level_of_depth(depth: float, cavity_length: float, total_length: float) -> str:
    """Level of a depth (mm from the ED base): basal/mid/apical thirds of the cavity, then apex cap.

    Depths above the base are ``"above-base"``; beyond the epicardial apex ``"beyond-apex"``.
    """
    if depth < 0:
        return "above-base"
    if depth < cavity_length / 3.0:
        return "basal"
    if depth < 2.0 * cavity_length / 3.0:
        return "mid"
    if depth < cavity_length:
        return "apical"
    if depth < total_length:
        return "apex"
    return "beyond-apex"


def _angular_overlap(a: int, b: int) -> bool:
    ca, ha = segment_sector(a)
    cb, hb = segment_sector(b)
    d = abs((ca - cb + 180.0) % 360.0 - 180.0)
    return d < ha + hb - 1e-6


def _angular_touch(a: int, b: int) -> bool:
    ca, ha = segment_sector(a)
    cb, hb = segment_sector(b)
    d = abs((ca - cb + 180.0) % 360.0 - 180.0)
    return d <= ha + hb + 1e-6


def segment_adjacency() -> dict[int, set[int]]:
    """Segments sharing a border: neighbours within a level and overlapping sectors of the next level."""
    order = {"basal": 0, "mid": 1, "apical": 2, "apex": 3}
    adj: dict[int, set[int]] = {s: set() for s in range(1, 18)}
    for a in range(1, 18):
        for b in range(a + 1, 18):
            la, lb = order[segment_level(a)], order[segment_level(b)]
            if la == lb and la < 3 and _angular_touch(a, b):
                adj[a].add(b)
                adj[b].add(a)
            elif abs(la - lb) == 1 and (_angular_overlap(a, b) or 17 in (a, b)):
                adj[a].add(b)
                adj[b].add(a)
    return adj


ADJACENCY = segment_adjacency()


# --- grids ------------------------------------------------------------------

N_ANGLES = 360  # 1-degree material-angle grid for all (depth, angle) tables
ANGLES_DEG = np.arange(N_ANGLES, dtype=np.float64) * (360.0 / N_ANGLES)
DEPTH_STEP_MM = 1.0


def depth_grid(total_length: float, above_mm: float = 30.0, below_mm: float = 12.0) -> np.ndarray:
    """Depth samples (mm) of the (depth, angle) tables, from above the base to beyond the apex."""
    return np.arange(-above_mm, total_length + below_mm + DEPTH_STEP_MM, DEPTH_STEP_MM)


def segment_map(depths: np.ndarray, cavity_length: float, total_length: float, clamp: bool = False) -> np.ndarray:
    """(Z, A) AHA segment number of every table cell.

    Cells above the base and beyond the apex hold 0, or with ``clamp`` the
    nearest level's segments (basal above the base, 17 beyond the apex).
    """
    out = np.zeros((depths.size, N_ANGLES), dtype=np.int16)
    for i, z in enumerate(depths):
        level = level_of_depth(float(z), cavity_length, total_length)
        if clamp and level == "above-base":
            level = "basal"
        elif clamp and level == "beyond-apex":
            level = "apex"
        if level in LEVELS:
            out[i] = segment_at(ANGLES_DEG, level)
    return out


def superellipse_profile(depth: np.ndarray, length: float, power: float) -> np.ndarray:
    """Radius fraction (1 at the base, 0 at ``length``) of a truncated super-ellipsoid of revolution."""
    u = np.clip(np.asarray(depth, dtype=np.float64) / length, 0.0, 1.0)
    return np.power(np.clip(1.0 - np.power(u, power), 0.0, 1.0), 1.0 / power)


def smooth_circular(table: np.ndarray, sigma_deg: float, axis: int = -1) -> np.ndarray:
    """Gaussian smoothing along the (periodic) angle axis of a table."""
    if sigma_deg <= 0:
        return np.array(table, dtype=np.float64)
    from scipy.ndimage import gaussian_filter1d

    step = 360.0 / N_ANGLES
    return gaussian_filter1d(np.asarray(table, dtype=np.float64), sigma_deg / step, axis=axis, mode="wrap")


def smooth_depth(table: np.ndarray, sigma_mm: float) -> np.ndarray:
    """Gaussian smoothing along the depth axis (axis 0) of a table."""
    if sigma_mm <= 0:
        return np.array(table, dtype=np.float64)
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(np.asarray(table, dtype=np.float64), sigma_mm / DEPTH_STEP_MM, axis=0, mode="nearest")


def per_segment_table(values: dict[int, float] | list[float], smap: np.ndarray, default: float) -> np.ndarray:
    """(Z, A) table holding each cell's segment value (``default`` outside segments)."""
    if isinstance(values, dict):
        vec = np.full(N_SEGMENTS + 1, default, dtype=np.float64)
        for seg, v in values.items():
            vec[int(seg)] = float(v)
    else:
        vec = np.concatenate([[default], np.asarray(values, dtype=np.float64)])
    return vec[smap]
