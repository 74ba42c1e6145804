"""The sample phantom cohort: how it is made (``python -m sample_data``) and where it lives.

The studies themselves are generated, not committed (``sample_data/studies/``
is git-ignored): ``make_sample_cohort()`` writes them with
``stran.phantom.generate_cohort`` and is deterministic for a seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SAMPLE_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = SAMPLE_DIR / "studies"
DEFAULT_N = 12
DEFAULT_SEED = 9
DEFAULT_LAYOUT = "datastore"


def make_sample_cohort(
    out: str | Path = DEFAULT_OUT,
    n: int = DEFAULT_N,
    seed: int = DEFAULT_SEED,
    layout: str = DEFAULT_LAYOUT,
    *,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the sample cohort (balanced A/B/C/D) and return its manifest."""
    from stran.phantom import generate_cohort

    return generate_cohort(out, n, seed, layout=layout, workers=workers, progress=progress)


def summary_lines(out: str | Path) -> list[str]:
    """One line per study of a written cohort: id, scenario, label, slices x phases x matrix, vendor / field."""
    import csv

    lines = []
    with open(Path(out) / "cohort.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            label = "scar" if row["study_label"] == "1" else "no scar"
            lines.append(
                f"{row['id']}  {row['scenario']} {label:7s} ({row['subtype']}; {row['n_scar_slices']} scar slices)  "
                f"{row['slices']}x{row['phases']}x{row['matrix']}  {row['vendor']} {row['field_strength']} T"
            )
    return lines


__all__ = [
    "DEFAULT_LAYOUT",
    "DEFAULT_N",
    "DEFAULT_OUT",
    "DEFAULT_SEED",
    "SAMPLE_DIR",
    "make_sample_cohort",
    "summary_lines",
]
