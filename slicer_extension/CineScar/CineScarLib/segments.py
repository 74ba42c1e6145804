"""Segment-level review: the AHA 17-segment bullseye of a detection, the reader's per-segment corrections, and the
link between segments and the study's slices. numpy only (no Qt, no slicer): the widget draws ``render_bullseye``
into a QLabel and forwards clicks to ``BullseyeState``.

The geometry (rings, wedges, which segment lies under a point, AHA orientation) is ``CineScarLib.aha``, i.e. the
project's ``stran/report/aha.py``; nothing here redraws it differently.

Rules (docs/slicer-module.md, "Segment review"):

* Levels. The study's LV slices (``input.lv_slices`` of the result; else the slices with a score) are ordered from
  the base to the apex and split in thirds as the model does (``stran.models.maps``): the slice at position ``i``
  of ``n`` is basal when ``(i + 0.5) / n < 1/3``, mid below 2/3, apical above. Base-to-apex order: the study's
  slice order when its last slice is the most apical (``apex_last``), else reversed. ``apex_last`` comes from the
  cine's IJK-to-RAS matrix as ``stran.transforms.preprocess.study_geometry`` computes it (the slice axis points
  towards the apex, LPS (0.62, -0.52, -0.58)); without a matrix the first slice is taken as the most basal.
* ``slice_of_segment(k)``: segments 1-6 -> the basal third, 7-12 -> the mid third, 13-16 -> the apical third, 17
  (apex) -> the most apical LV slice; within the third, the slice with the highest scar probability (the first,
  from the base, on a tie or when none has a score). A third with no slice (fewer than three LV slices) borrows the
  LV slice nearest its centre. When the result has a segment map (``result["segment_map"]``: the AHA segment of
  each myocardial pixel as the model placed it, ``CineScarLib.aha.decode_segment_map``), the candidates are the
  slices where the map has segment ``k``, and ``segment_mask(k)`` gives its pixels there for the overlay.
* Corrections per segment are 1 (scar), 0 (no scar) or None (not assessed); ``segment_labels()`` is the label's
  optional ``segment_labels`` (17 entries, AHA order), or None when the reader set none. As the server's label check
  (``stran/engine/labels.py``), a "no scar" study cannot have a segment labelled scar (``check``).
* Colours: a yellow -> red ramp of the probability, ``(255, 255 * (1 - p), 0)``; grey where there is no probability.
  (The 2-D map uses a Slicer colour node, which numpy cannot read here; the ramp is documented instead.)
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from .aha import N_SEGMENTS, SEGMENT_NAMES, aha_segments, decode_segment_map, segment_at, segment_ids

LEVELS = ("basal", "mid", "apical")
LEVEL_SEGMENTS = {"basal": tuple(range(1, 7)), "mid": tuple(range(7, 13)), "apical": tuple(range(13, 17))}
NO_PROBABILITY_RGBA = (190, 190, 190, 255)
BOUNDARY_RGBA = (60, 60, 60, 255)
SELECTED_RGBA = (0, 110, 255, 255)
# LPS (0.62, -0.52, -0.58) (stran.transforms.preprocess.study_geometry) in RAS
_APEX_DIRECTION_RAS = np.array([-0.62, 0.52, -0.58])


class SegmentReviewError(ValueError):
    """Segment corrections that the server would refuse, said plainly."""


def probability_rgba(p: float | None) -> tuple[int, int, int, int]:
    """The bullseye's colour of a scar probability: yellow (0) -> red (1); grey for None."""
    if p is None:
        return NO_PROBABILITY_RGBA
    p = min(max(float(p), 0.0), 1.0)
    return 255, int(round(255 * (1.0 - p))), 0, 255


def apex_last_from_affine(ijk_to_ras) -> bool:
    """True when the slice axis (the third column of Slicer's IJKToRAS matrix) points towards the apex."""
    along = np.asarray(ijk_to_ras, dtype=float)[:3, 2]
    return bool(float(np.dot(along, _APEX_DIRECTION_RAS)) > 0)


def _segment_level(k: int) -> str:
    if not 1 <= int(k) <= N_SEGMENTS:
        raise ValueError(f"AHA segments are numbered 1-{N_SEGMENTS}, not {k}")
    return "apex" if k == 17 else LEVELS[(int(k) - 1) // 6] if k <= 12 else "apical"


@dataclass
class BullseyeState:
    """What the bullseye shows and what the reader set: per-segment probabilities (AHA order, None where missing),
    the study's slice probabilities (study order), its LV slices, and per-segment corrections (0/1/None)."""

    probabilities: list
    slice_probabilities: list
    lv_slices: list
    apex_last: bool = True
    corrections: list = field(default_factory=lambda: [None] * N_SEGMENTS)
    selected: int | None = None
    segment_map: np.ndarray | None = None  # (S, H, W): the AHA segment of each myocardial pixel, 0 elsewhere

    @classmethod
    def from_result(cls, result: dict, *, ijk_to_ras=None, apex_last: bool | None = None) -> BullseyeState:
        """From a detection result (the server's JSON); ``ijk_to_ras`` (the cine's) gives the base-apex order."""
        raw = result.get("segment_probabilities")
        probs = [None] * N_SEGMENTS
        if isinstance(raw, (list, tuple)) and len(raw) == N_SEGMENTS:
            probs = [None if v is None else float(v) for v in raw]
        slices = list(result.get("slice_probabilities") or [])
        lv = (result.get("input") or {}).get("lv_slices")
        if lv is None:
            lv = [i for i, p in enumerate(slices) if p is not None]
        lv = sorted({int(s) for s in lv if int(s) >= 0 and (not slices or int(s) < len(slices))})
        if apex_last is None:
            apex_last = True if ijk_to_ras is None else apex_last_from_affine(ijk_to_ras)
        try:
            segment_map = decode_segment_map(result["segment_map"]) if result.get("segment_map") else None
        except ValueError:  # a map this module cannot read: review without the highlight
            segment_map = None
        return cls(probabilities=probs, slice_probabilities=slices, lv_slices=lv, apex_last=bool(apex_last),
                   segment_map=segment_map)

    # ------------------------------------------------------------ probabilities and colours

    @property
    def has_probabilities(self) -> bool:
        return any(p is not None for p in self.probabilities)

    def probability(self, k: int) -> float | None:
        _segment_level(k)
        return self.probabilities[k - 1]

    def colour(self, k: int) -> tuple[int, int, int, int]:
        return probability_rgba(self.probability(k))

    # ------------------------------------------------------------ corrections

    def correction(self, k: int) -> int | None:
        _segment_level(k)
        return self.corrections[k - 1]

    def set_correction(self, k: int, value: int | None) -> None:
        _segment_level(k)
        if value not in (0, 1, None) or isinstance(value, bool):
            raise ValueError(f"segment {k}: a correction is 1 (scar), 0 (no scar) or None, not {value!r}")
        self.corrections[k - 1] = value

    def cycle(self, k: int) -> int | None:
        """The click on a segment: not assessed -> scar -> no scar -> not assessed; returns the new value."""
        new = {None: 1, 1: 0, 0: None}[self.correction(k)]
        self.set_correction(k, new)
        return new

    def clear_corrections(self) -> None:
        self.corrections = [None] * N_SEGMENTS

    def segment_labels(self) -> list | None:
        """The label's ``segment_labels`` (17 entries 0/1/None, AHA order), or None when the reader set none."""
        return list(self.corrections) if any(v is not None for v in self.corrections) else None

    def check(self, study_label: int | None) -> None:
        """Raise SegmentReviewError if the server would refuse these segment labels with this study label."""
        scar = [k for k in range(1, N_SEGMENTS + 1) if self.corrections[k - 1] == 1]
        if study_label == 0 and scar:
            names = ", ".join(f"{k} ({SEGMENT_NAMES[k - 1]})" for k in scar)
            raise SegmentReviewError(f"The study is labelled 'no scar' but AHA segment(s) {names} are labelled scar: "
                                     "label the study scar, or clear those segments.")

    # ------------------------------------------------------------ geometry and slices

    def segment_at(self, x: float, y: float) -> int | None:
        """The segment at (x, y) on the unit disc (x right, y up), or None outside it."""
        return segment_at(x, y)

    def segment_at_pixel(self, col: float, row: float, size: int) -> int | None:
        """The segment under pixel (col, row) of ``render_bullseye(size)``'s image, or None."""
        c, r = _disc(size)
        return segment_at((col - c) / r, (c - row) / r)

    def _base_to_apex(self) -> list:
        return list(self.lv_slices) if self.apex_last else list(reversed(self.lv_slices))

    def level_of_slice(self, s: int) -> str | None:
        """basal, mid or apical for an LV slice, None for another slice."""
        order = self._base_to_apex()
        if s not in order:
            return None
        frac = (order.index(s) + 0.5) / len(order)
        return LEVELS[int(frac >= 1 / 3) + int(frac >= 2 / 3)]

    def slices_of_level(self, level: str) -> list:
        """The LV slices of a level, base to apex (the one nearest the level's centre if it has none)."""
        order = self._base_to_apex()
        found = [s for s in order if self.level_of_slice(s) == level]
        if found or not order:
            return found
        centre = {"basal": 1 / 6, "mid": 0.5, "apical": 5 / 6}[level]
        return [min(order, key=lambda s: abs((order.index(s) + 0.5) / len(order) - centre))]

    def slice_of_segment(self, k: int) -> int | None:
        """The slice to show for segment ``k`` (the module docstring's rule), or None when the study has no LV
        slice."""
        level = _segment_level(k)
        order = self._base_to_apex()
        if not order:
            return None
        if level == "apex":
            return order[-1]
        candidates = self.slices_of_level(level)
        if self.segment_map is not None:  # the slices where the model placed the segment, when it did
            candidates = [s for s in range(self.segment_map.shape[0]) if (self.segment_map[s] == k).any()] or candidates

        def score(s: int) -> float:
            p = self.slice_probabilities[s] if s < len(self.slice_probabilities) else None
            return -1.0 if p is None else float(p)

        return max(candidates, key=lambda s: (score(s), -candidates.index(s)))

    def segment_mask(self, k: int) -> np.ndarray | None:
        """The pixels to highlight for segment ``k``, ``(S, H, W)`` bool on the study's grid: the segment's
        myocardium on the slice :meth:`slice_of_segment` shows (for 17, the apex, that slice's whole myocardium);
        None when the result has no segment map (a network without a map head)."""
        _segment_level(k)
        if self.segment_map is None:
            return None
        mask = np.zeros(self.segment_map.shape, bool)
        s = self.slice_of_segment(k)
        if s is None or not 0 <= s < mask.shape[0]:
            return mask
        mask[s] = self.segment_map[s] > 0 if k == 17 else self.segment_map[s] == k
        return mask

    def segments_of_slice(self, s: int) -> tuple:
        """The segments an LV slice shows (its level's ring; also 17 on the most apical); () for another slice."""
        level = self.level_of_slice(s)
        if level is None:
            return ()
        out = LEVEL_SEGMENTS[level]
        return out + (17,) if s == self._base_to_apex()[-1] else out

    def render(self, size: int = 220) -> np.ndarray:
        return render_bullseye(self, size)


def _disc(size: int) -> tuple[float, float]:
    """Centre (the same for columns and rows) and radius, in pixels, of the bullseye in a ``size`` square."""
    return size / 2.0, size / 2.0 - 3.0


def render_bullseye(state: BullseyeState, size: int = 220) -> np.ndarray:
    """The bullseye as an ``(size, size, 4)`` uint8 RGBA image (transparent outside the disc): segments coloured by
    probability, dark boundaries, a black dot on segments corrected to scar, a white dot on those corrected to no
    scar, and the selected segment outlined in blue."""
    size = int(size)
    if size < 32:
        raise ValueError(f"the bullseye needs at least 32 x 32 pixels, not {size}")
    c, radius = _disc(size)
    grid = np.arange(size) + 0.5
    x = (grid[None, :] - c) / radius
    y = (c - grid[:, None]) / radius
    ids = segment_ids(x, y)
    table = np.zeros((N_SEGMENTS + 1, 4), np.uint8)
    for k in range(1, N_SEGMENTS + 1):
        table[k] = state.colour(k)
    image = table[ids]

    def edges(mask: np.ndarray) -> np.ndarray:
        out = np.zeros(mask.shape, dtype=bool)
        out[:-1] |= mask[:-1] != mask[1:]
        out[1:] |= mask[1:] != mask[:-1]
        out[:, :-1] |= mask[:, :-1] != mask[:, 1:]
        out[:, 1:] |= mask[:, 1:] != mask[:, :-1]
        return out

    image[edges(ids) & (ids > 0)] = BOUNDARY_RGBA
    dot = max(2.0, size / 40.0)
    for segment in aha_segments():
        value = state.corrections[segment.number - 1]
        if value is None:
            continue
        px, py = segment.label_point()
        inside = (x - px) ** 2 + (y - py) ** 2 <= (dot / radius) ** 2
        ring = inside & ~((x - px) ** 2 + (y - py) ** 2 <= ((dot - 1.2) / radius) ** 2)
        image[inside] = (0, 0, 0, 255) if value == 1 else (255, 255, 255, 255)
        image[ring] = (0, 0, 0, 255)
    if state.selected:
        mask = ids == int(state.selected)
        outline = edges(mask)
        for _ in range(max(1, size // 110)):  # thicken: about 2 px at 220
            outline = outline | edges(outline)
        image[outline & (np.hypot(x, y) <= 1.0 + 2.5 / radius)] = SELECTED_RGBA
    return image


def png_bytes(rgba: np.ndarray) -> bytes:
    """An ``(H, W, 4)`` uint8 image as PNG file bytes (standard library only), for ``QPixmap.loadFromData``."""
    rgba = np.ascontiguousarray(rgba, dtype=np.uint8)
    if rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"an RGBA image is (H, W, 4), not {rgba.shape}")
    h, w = rgba.shape[:2]
    raw = b"".join(b"\x00" + rgba[row].tobytes() for row in range(h))  # filter type 0 on every row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)  # 8 bits, RGBA
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
