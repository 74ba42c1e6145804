"""The study report: one page (PNG and PDF) with the AHA bullseye, the per-slice chart, key frames with the map,
the model's identity, the uncertainty and the research-use warning.

Drawn with matplotlib's object API (``Figure`` with the Agg and PDF canvases; ``pyplot`` is never imported, so no
global figure state is made or left behind) under matplotlib's default style (``matplotlib.style.context``, undone
on return), so that a user's matplotlibrc does not change the page. The same input gives the same bytes: the PNG
carries no time and no software version, the PDF's creation date is the detection's ``created_utc`` (none when the
result has no readable time).

Inputs are plain: the detection result dict (``stran.engine.detect``, DESIGN.md "Detection result"), the study's
pixels ``(S, T, H, W)`` and the map shown over the cine ``(S, T, H, W)`` in [0, 1] (``Detection.attention``: the
scar probability map when ``result["map"] == "scar"``, else the attention map), so that the command line, the
MONAI Label app and a notebook can all call it.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .aha import N_SEGMENTS, aha_segments

RESEARCH_WARNING = "Research use only. Not for clinical use. Model trained on synthetic phantoms."
TITLE = "ST-RAN Scar \u2014 study report"
#: A4 landscape, in inches, and the PNG's resolution: 1402 x 992 pixels.
PAGE_INCHES = (11.69, 8.27)
DPI = 120
#: Probabilities (segments, slices, the map) share one colour scale: pale yellow (0) to dark red (1).
COLORMAP = "YlOrRd"
NO_VALUE_COLOUR = (0.86, 0.86, 0.86, 1.0)
DASH = "\u2013"
MAP_THRESHOLD = 0.5
MAX_KEY_FRAMES = 3

#: Figure-fraction boxes [left, bottom, width, height] of the parts of the page.
LAYOUT: dict[str, tuple[float, float, float, float]] = {
    "bullseye": (0.025, 0.405, 0.30, 0.435),
    "colorbar": (0.335, 0.44, 0.012, 0.365),
    "summary": (0.385, 0.615, 0.595, 0.262),
    "slices": (0.430, 0.415, 0.545, 0.150),
    "key_frames": (0.025, 0.025, 0.900, 0.275),
    "map_colorbar": (0.945, 0.055, 0.010, 0.215),
}
#: The key frames show this much of the image (mm, square) where the map is highest; the whole image without one.
KEY_FRAME_FIELD_MM = 150.0


def segment_colour(probability: float | None) -> tuple[float, float, float, float]:
    """The RGBA colour a probability gets on the page (segments, slice bars); grey for None."""
    if probability is None:
        return NO_VALUE_COLOUR
    import matplotlib

    return tuple(float(c) for c in matplotlib.colormaps[COLORMAP](float(np.clip(probability, 0.0, 1.0))))


def key_frame_slices(slice_probabilities: Sequence[float | None], n: int = MAX_KEY_FRAMES) -> list[int]:
    """The slices with the highest probability (at most ``n``, highest first; ties: the lower index), None skipped."""
    scored = [(float(p), k) for k, p in enumerate(slice_probabilities) if p is not None]
    return [k for _, k in sorted(scored, key=lambda pk: (-pk[0], pk[1]))[:n]]


def created_time(result: Mapping[str, Any]) -> dt.datetime | None:
    """The result's ``created_utc`` as an aware datetime, or None when absent or unreadable."""
    value = result.get("created_utc")
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def _check_inputs(result: Mapping[str, Any], pixels: np.ndarray | None, map_: np.ndarray | None) -> None:
    slices = result.get("slice_probabilities")
    if not isinstance(slices, Sequence) or isinstance(slices, str):
        raise ValueError("the detection result has no 'slice_probabilities' list")
    segments = result.get("segment_probabilities")
    if segments is not None and len(segments) not in (0, N_SEGMENTS):
        raise ValueError(f"the detection result has {len(segments)} segment_probabilities, not {N_SEGMENTS}")
    for name, array in (("pixels", pixels), ("map", map_)):
        if array is None:
            continue
        if np.ndim(array) != 4 or np.shape(array)[0] != len(slices):
            raise ValueError(f"the {name} must be (S, T, H, W) with S = {len(slices)} slices, got {np.shape(array)}")
    if pixels is not None and map_ is not None and np.shape(map_) != np.shape(pixels):
        raise ValueError(f"the map {np.shape(map_)} is not on the study's grid {np.shape(pixels)}")


def build_figure(result: Mapping[str, Any], pixels: np.ndarray | None, map_: np.ndarray | None, *,
                 map_threshold: float = MAP_THRESHOLD) -> Any:
    """The report page as a matplotlib ``Figure`` (Agg canvas); its axes are labelled ``bullseye``, ``slices``,
    ``summary``, ``key_frame_<k>`` (``Axes.get_label()``). Call inside ``matplotlib.style.context("default")``
    for the page as :func:`report_bytes` draws it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    _check_inputs(result, pixels, map_)
    fig = Figure(figsize=PAGE_INCHES, dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    _header(fig, result)
    _bullseye(fig, result.get("segment_probabilities") or None)
    _colorbar(fig, LAYOUT["colorbar"], "probability")
    _summary(fig, result)
    _slice_chart(fig, result)
    _key_frames(fig, result, pixels, map_, map_threshold)
    return fig


def report_bytes(result: Mapping[str, Any], pixels: np.ndarray | None, map_: np.ndarray | None, *,
                 map_threshold: float = MAP_THRESHOLD) -> tuple[bytes, bytes]:
    """The report as (PNG bytes, PDF bytes)."""
    import matplotlib.style

    with matplotlib.style.context("default"):
        fig = build_figure(result, pixels, map_, map_threshold=map_threshold)
        png, pdf = io.BytesIO(), io.BytesIO()
        fig.savefig(png, format="png", dpi=DPI, metadata={"Software": None, "Title": TITLE,
                                                           "Description": RESEARCH_WARNING})
        fig.savefig(pdf, format="pdf", metadata={"Title": TITLE, "Subject": RESEARCH_WARNING,
                                                  "Creator": "ST-RAN Scar", "CreationDate": created_time(result)})
    return png.getvalue(), pdf.getvalue()


def write_report(result: Mapping[str, Any], pixels: np.ndarray | None, map_: np.ndarray | None, *,
                 png: str | Path | None, pdf: str | Path | None,
                 map_threshold: float = MAP_THRESHOLD) -> list[Path]:
    """Draw the report and write it to ``png`` and/or ``pdf`` (each atomically: a reader sees the old file or the
    whole new one). Both are drawn before either is written. Returns the paths written."""
    from stran.atomic import atomic_path

    png_bytes, pdf_bytes = report_bytes(result, pixels, map_, map_threshold=map_threshold)
    written = []
    for path, data in ((png, png_bytes), (pdf, pdf_bytes)):
        if path is None:
            continue
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        written.append(Path(path))
    return written


# ----------------------------------------------------------------------------- parts of the page


def _header(fig: Any, result: Mapping[str, Any]) -> None:
    fig.text(0.025, 0.962, TITLE, fontsize=17, fontweight="bold", va="center")
    verdict = str(result.get("prediction_label") or ("scar" if result.get("prediction") else "no scar"))
    p = result.get("study_probability")
    fig.text(0.975, 0.962, f"{verdict}  (p = {_num(p, 3)})", fontsize=17, fontweight="bold", va="center", ha="right",
             color="#9e1b10" if verdict == "scar" else "#1f4e79")
    fig.text(0.5, 0.912, RESEARCH_WARNING, fontsize=12.5, fontweight="bold", color="#9e1b10", ha="center", va="center",
             bbox={"boxstyle": "round,pad=0.45", "facecolor": "#fde8e6", "edgecolor": "#9e1b10", "linewidth": 1.2})


def _bullseye(fig: Any, segments: Sequence[float | None] | None) -> None:
    from matplotlib.patches import Polygon

    ax = fig.add_axes(LAYOUT["bullseye"], label="bullseye")
    ax.set_xlim(-1.22, 1.22)
    ax.set_ylim(-1.22, 1.22)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("AHA 17 segments: scar probability", fontsize=11, pad=4)
    if not segments:
        ax.text(0.0, 0.1, "no segment output", ha="center", va="center", fontsize=14, fontweight="bold", color="0.35")
        ax.text(0.0, -0.15, "this model gives no AHA segment\nprobabilities: see the slices", ha="center", va="center",
                fontsize=9.5, color="0.35")
        return
    for seg in aha_segments():
        p = segments[seg.number - 1]
        ax.add_patch(Polygon(seg.polygon(), closed=True, facecolor=segment_colour(p), edgecolor="white",
                             linewidth=1.5, antialiased=True, hatch=None if p is not None else "//"))
        x, y = seg.label_point()
        dark = p is not None and p > 0.55
        colour = "white" if dark else "black"
        ax.text(x, y + 0.045, "\u2013" if p is None else f"{p:.2f}", ha="center", va="center", fontsize=9.5,
                fontweight="bold", color=colour)
        ax.text(x, y - 0.065, str(seg.number), ha="center", va="center", fontsize=7, color=colour)
    for text, x, y, rot in (("anterior", 0, 1.12, 0), ("inferior", 0, -1.12, 0), ("septal", -1.12, 0, 90),
                            ("lateral", 1.12, 0, 270)):
        ax.text(x, y, text, ha="center", va="center", fontsize=8.5, color="0.3", rotation=rot)


def _colorbar(fig: Any, box: tuple[float, float, float, float], label: str) -> None:
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    cax = fig.add_axes(box, label=f"colorbar:{label}")
    bar = fig.colorbar(ScalarMappable(norm=Normalize(0.0, 1.0), cmap=matplotlib.colormaps[COLORMAP]), cax=cax)
    bar.set_label(label, fontsize=8.5)
    bar.ax.tick_params(labelsize=7.5)


def _summary(fig: Any, result: Mapping[str, Any]) -> None:
    ax = fig.add_axes(LAYOUT["summary"], label="summary")
    ax.axis("off")
    study = result.get("study") or {}
    model = result.get("model") or {}
    unc = result.get("uncertainty") or {}
    prob, thr = result.get("study_probability"), result.get("threshold")
    relation = "\u2265" if prob is not None and thr is not None and prob >= thr else "<"
    if unc.get("method") == "mc_dropout":
        uncertainty = (f"MC dropout, {unc.get('samples')} passes: std {_sig(unc.get('std'))}, entropy "
                       f"{_sig(unc.get('entropy'))} nat, mutual information {_sig(unc.get('mutual_information'))} nat")
    else:
        uncertainty = "not estimated (no MC-dropout passes)"
    spacing = study.get("pixel_spacing_mm")
    if isinstance(spacing, Sequence) and len(spacing) == 2:
        spacing_text = f"{_num(spacing[0], 2)} \u00d7 {_num(spacing[1], 2)} mm"
    else:
        spacing_text = "?"
    acquisition = ", ".join(x for x in (str(study.get("vendor") or ""),
                                        f"{_num(study.get('field_strength_t'), 1)} T" if study.get("field_strength_t") else "")
                            if x)
    rows = [
        ("Result", f"{result.get('prediction_label', '?')}: study probability {_num(prob, 3)} {relation} threshold "
                   f"{_num(thr, 3)}"),
        ("Uncertainty", uncertainty),
        ("Model", f"{model.get('name', '?')}, version {model.get('version') or '?'}"),
        ("SHA-256", str(model.get("sha256") or "?")),
        ("Trained on", str(model.get("trained_on") or "?")),
        ("Study UID", str(study.get("study_uid") or DASH)),
        ("Image", f"{result.get('image_id') or DASH};  {study.get('slices', '?')} slices \u00d7 "
                  f"{study.get('phases', '?')} phases, pixels {spacing_text}"
                  + (f", slice spacing {_num(study.get('slice_spacing_mm'), 1)} mm" if study.get("slice_spacing_mm") else "")
                  + (f";  {acquisition}" if acquisition else "")),
        ("Detection", f"{result.get('detection_id', '?')}, {result.get('created_utc', '?')}"),
    ]
    y, step = 1.0, 0.1
    for key, value in rows:
        lines = textwrap.wrap(value, 88) or [""]
        ax.text(0.0, y, key, fontsize=9.2, fontweight="bold", va="top", transform=ax.transAxes)
        ax.text(0.135, y, "\n".join(lines[:2]), fontsize=9.2, va="top", transform=ax.transAxes, linespacing=1.1,
                family="DejaVu Sans Mono" if key in ("SHA-256", "Study UID", "Detection") else "DejaVu Sans")
        y -= step * min(len(lines), 2)


def _slice_chart(fig: Any, result: Mapping[str, Any]) -> None:
    ax = fig.add_axes(LAYOUT["slices"], label="slices")
    probs = list(result.get("slice_probabilities") or [])
    n = len(probs)
    keys = set(key_frame_slices(probs))
    for k, p in enumerate(probs):
        if p is None:
            ax.bar(k, 1.0, width=0.8, color="none", edgecolor="0.75", hatch="///", linewidth=0.6)
            ax.text(k, 0.5, "no LV", rotation=90, ha="center", va="center", fontsize=7, color="0.45")
        else:
            ax.bar(k, float(p), width=0.8, color=segment_colour(p), edgecolor="0.2" if k in keys else "0.55",
                   linewidth=1.4 if k in keys else 0.6)
    thr = result.get("threshold")
    if thr is not None:
        ax.axhline(float(thr), color="0.2", linestyle="--", linewidth=0.9)
        ax.text(n - 0.45, float(thr) + 0.03, f"threshold {float(thr):.2f}", ha="right", va="bottom", fontsize=7.5)
    for k in sorted(keys):
        ax.plot(k, 1.07, marker="v", color="0.2", markersize=5, clip_on=False)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylim(0.0, 1.0)
    ax.set_xticks(range(n))
    ax.tick_params(labelsize=7.5)
    ax.set_xlabel("slice (study order; \u25bc key frames below)", fontsize=8.5, labelpad=2)
    ax.set_ylabel("probability", fontsize=8.5)
    ax.set_title("Scar probability per slice", fontsize=10, pad=9)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _key_frames(fig: Any, result: Mapping[str, Any], pixels: np.ndarray | None, map_: np.ndarray | None,
                threshold: float) -> None:
    left, bottom, width, height = LAYOUT["key_frames"]
    chosen = key_frame_slices(result.get("slice_probabilities") or [])
    kind = "scar probability" if result.get("map") == "scar" else "attention"
    title = (f"Key frames: end-diastole (phase 0) of the {len(chosen)} slices with the highest probability"
             + (f"; {kind} map \u2265 {threshold:.2f} over the image" if map_ is not None else "; no map"))
    fig.text(left, bottom + height + 0.045, title, fontsize=10, va="bottom")
    if pixels is None or not chosen:
        fig.text(left + width / 2, bottom + height / 2,
                 "no image given" if pixels is None else "no slice was scored (no left ventricle found)",
                 ha="center", va="center", fontsize=11, color="0.35")
        return
    import matplotlib

    spacing = (result.get("study") or {}).get("pixel_spacing_mm")
    aspect = 1.0
    if isinstance(spacing, Sequence) and len(spacing) == 2 and spacing[1]:
        aspect = float(spacing[0]) / float(spacing[1])  # pixel height / width
    panel = width / MAX_KEY_FRAMES
    cmap = matplotlib.colormaps[COLORMAP]
    probs = result.get("slice_probabilities") or []
    for i, k in enumerate(chosen):
        ax = fig.add_axes((left + i * panel + 0.01, bottom, panel - 0.02, height), label=f"key_frame_{k}")
        rows, cols = _view(map_, k, threshold, spacing)
        image = np.asarray(pixels[k, 0], dtype=np.float64)[rows, cols]
        lo, hi = np.percentile(image, [1.0, 99.5]) if image.size else (0.0, 1.0)
        ax.imshow(image, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1.0, aspect=aspect,
                  interpolation="nearest")
        if map_ is not None:
            values = np.asarray(map_[k, 0], dtype=np.float64)[rows, cols]
            ax.imshow(np.ma.masked_less(values, threshold), cmap=cmap, vmin=0.0, vmax=1.0, alpha=0.6, aspect=aspect,
                      interpolation="nearest")
        ax.set_title(f"slice {k}: p = {float(probs[k]):.2f}", fontsize=9.5, pad=3)
        ax.set_xticks([])
        ax.set_yticks([])
    if map_ is not None:
        _colorbar(fig, LAYOUT["map_colorbar"], f"{kind} map")


def _view(map_: np.ndarray | None, k: int, threshold: float, spacing: Any) -> tuple[slice, slice]:
    """The part of slice ``k`` a key frame shows: ``KEY_FRAME_FIELD_MM`` around where the map of that slice is
    highest (its pixels at or above the threshold, or else its top 0.5 %, over all phases), or the whole image
    when the map is flat or absent."""
    if map_ is None:
        return slice(None), slice(None)
    values = np.asarray(map_[k], dtype=np.float64)
    h, w = values.shape[-2:]
    level = min(threshold, float(np.quantile(values, 0.995)))
    if not level > float(values.min()):
        return slice(None), slice(None)
    hits = np.argwhere(values >= level)
    r, c = hits[:, -2].mean(), hits[:, -1].mean()
    row_mm, col_mm = (float(spacing[0]), float(spacing[1])) if isinstance(spacing, Sequence) and len(spacing) == 2 \
        else (1.0, 1.0)
    half_r = min(h, max(8, int(round(KEY_FRAME_FIELD_MM / row_mm)))) // 2
    half_c = min(w, max(8, int(round(KEY_FRAME_FIELD_MM / col_mm)))) // 2
    r0 = int(np.clip(round(r) - half_r, 0, max(h - 2 * half_r, 0)))
    c0 = int(np.clip(round(c) - half_c, 0, max(w - 2 * half_c, 0)))
    return slice(r0, r0 + 2 * half_r), slice(c0, c0 + 2 * half_c)


def _sig(value: Any) -> str:
    """Three significant digits (uncertainties span orders of magnitude)."""
    text = _num(value, 6)
    return text if text == "?" else f"{float(value):.3g}"


def _num(value: Any, digits: int) -> str:
    if value is None or isinstance(value, bool):
        return "?"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "?"
    return f"{number:.{digits}f}" if math.isfinite(number) else "?"
