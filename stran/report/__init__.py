"""The study report (``stran detect --report``): one page, PNG and PDF, per detection.

``aha`` is the bullseye's geometry (numpy only, copied as is into the Slicer module); ``render`` draws the page with
matplotlib, so import it by name when drawing (``from stran.report import segment_at`` stays light).

    from stran.report.render import write_report
    write_report(detection.result, study.pixels, detection.attention, png="s1.report.png", pdf="s1.report.pdf")
"""

from __future__ import annotations

from .aha import N_SEGMENTS, RING_RADII, SEGMENT_NAMES, Segment, aha_segments, segment_at, segment_ids

__all__ = ["N_SEGMENTS", "RING_RADII", "SEGMENT_NAMES", "Segment", "aha_segments", "segment_at", "segment_ids"]
