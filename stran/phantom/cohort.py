"""``generate_cohort``: write a balanced phantom cohort to disk.

Layout of ``out_dir``::

    images/<id>.nii.gz + <id>.cine.json     (layout "datastore": stran.io.write_datastore_study)
    images/<id>/...                         (DICOM layouts: stran.io.write_dicom)
    labels/<id>.scar.json                   (DESIGN.md label contract; written last = study complete)
    truth/<id>.truth.json                   (GroundTruth.to_json, incl. the full config)
    truth/<id>.masks.npz                    (uint8 masks (S, T, H, W), key "masks")
    cohort.csv                              (one row per study)
    manifest.json                           (generator version, seed, n, layout, seconds, counts)

Study ``i`` of a cohort with seed ``seed`` has study seed ``seed * 100000 + i``
(so cohorts with different seeds never share a study) and id
``PHANTOM-<study seed, 6+ digits>``. Every file is written atomically and the
label file last, so a half-written study never looks complete; a rerun into
the same folder keeps the complete studies and redoes the rest.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from stran.phantom.config import GENERATOR_VERSION, sample_config
from stran.phantom.generator import generate_study, patient_id_for
from stran.phantom.scenarios import SCENARIOS
from stran.phantom.signal import PROFILE_NAMES

STUDY_SEED_STRIDE = 100_000
DICOM_LAYOUTS = ("single-series-slice-major", "single-series-phase-major", "series-per-slice", "enhanced")
LAYOUTS = ("datastore", "dicom", *DICOM_LAYOUTS)
VENDOR_LAYOUT = {  # layout "dicom": what each vendor's classic export looks like
    "SIEMENS": "series-per-slice",
    "GE MEDICAL SYSTEMS": "single-series-slice-major",
    "Philips Medical Systems": "enhanced",
}
CSV_COLUMNS = (
    "id",
    "scenario",
    "study_label",
    "n_scar_slices",
    "vendor",
    "field_strength",
    "matrix",
    "slices",
    "phases",
    "seed",
    "profile",
    "subtype",
    "pixel_spacing_mm",
    "ef_pct",
)


def study_seed(cohort_seed: int, index: int) -> int:
    if not 0 <= index < STUDY_SEED_STRIDE:
        raise ValueError(f"study index {index} out of range (a cohort holds at most {STUDY_SEED_STRIDE} studies)")
    return int(cohort_seed) * STUDY_SEED_STRIDE + int(index)


def _counts(n: int, weights: dict[str, float]) -> dict[str, int]:
    """Largest-remainder split of ``n`` by ``weights``."""
    keys = list(weights)
    w = np.asarray([max(float(weights[k]), 0.0) for k in keys])
    if w.sum() <= 0:
        raise ValueError("scenario_mix weights must not all be zero")
    exact = n * w / w.sum()
    base = np.floor(exact).astype(int)
    order = np.argsort(-(exact - base), kind="stable")
    for i in order[: n - int(base.sum())]:
        base[i] += 1
    return {k: int(v) for k, v in zip(keys, base, strict=True)}


def cohort_plan(n: int, seed: int, scenario_mix: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Per study: index, study seed, id, scenario and profile (balanced, shuffled deterministically)."""
    # default: equal shares; remainders go A, C, B, D so labels stay 50/50 (+-1)
    mix = dict(scenario_mix) if scenario_mix else {s: 1.0 for s in ("A", "C", "B", "D")}
    unknown = set(mix) - set(SCENARIOS)
    if unknown:
        raise ValueError(f"unknown scenarios in scenario_mix: {sorted(unknown)}; expected {SCENARIOS}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xC0407]))
    scen = [s for s, k in _counts(n, mix).items() for _ in range(k)]
    rng.shuffle(scen)
    profiles = [PROFILE_NAMES[i % len(PROFILE_NAMES)] for i in range(n)]
    rng.shuffle(profiles)
    plan = []
    for i in range(n):
        ss = study_seed(seed, i)
        plan.append({"index": i, "seed": ss, "id": patient_id_for(ss), "scenario": scen[i], "profile": profiles[i]})
    return plan


def _paths(out: Path, image_id: str) -> dict[str, Path]:
    return {
        "label": out / "labels" / f"{image_id}.scar.json",
        "truth": out / "truth" / f"{image_id}.truth.json",
        "masks": out / "truth" / f"{image_id}.masks.npz",
    }


def _row(truth_json: dict[str, Any], image_id: str) -> dict[str, Any]:
    acq = truth_json["config"]["acquisition"]
    return {
        "id": image_id,
        "scenario": truth_json["scenario"],
        "study_label": int(truth_json["study_label"]),
        "n_scar_slices": int(sum(truth_json["slice_labels"])),
        "vendor": acq["vendor"],
        "field_strength": acq["field_strength"],
        "matrix": f"{acq['rows']}x{acq['cols']}",
        "slices": acq["n_slices"],
        "phases": acq["n_phases"],
        "seed": int(truth_json["seed"]),
        "profile": acq["profile"],
        "subtype": truth_json["subtype"],
        "pixel_spacing_mm": round(float(acq["pixel_spacing"]), 4),
        "ef_pct": truth_json["ef_pct"],
    }


def _write_images(study, out: Path, image_id: str, layout: str) -> None:
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    if layout == "datastore":
        from stran.io import write_datastore_study

        write_datastore_study(study.cine, images, image_id)  # NIfTI then sidecar, each atomic
        return
    from stran.io import write_dicom

    chosen = VENDOR_LAYOUT.get(study.cine.acquisition.vendor, "series-per-slice") if layout == "dicom" else layout
    final = images / image_id
    partial = out / ".partial" / image_id
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    write_dicom(study.cine, partial, chosen)
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)  # the folder appears complete or not at all


def _image_exists(out: Path, image_id: str, layout: str) -> bool:
    if layout == "datastore":
        return (out / "images" / f"{image_id}.cine.json").exists()
    return (out / "images" / image_id).is_dir()


def _make_study(task: dict[str, Any]) -> dict[str, Any]:
    """Worker: generate one study and write its files; returns its cohort.csv row."""
    from stran.atomic import atomic_write_text

    out = Path(task["out"])
    image_id = task["id"]
    paths = _paths(out, image_id)
    cfg = sample_config(task["seed"], task["scenario"], task["profile"])
    study = generate_study(cfg)
    truth = study.truth
    truth.save(paths["truth"], paths["masks"])
    _write_images(study, out, image_id, task["layout"])
    atomic_write_text(paths["label"], json.dumps(truth.scar_label(), indent=1))
    return _row(truth.to_json(), image_id)


def _existing_row(out: Path, image_id: str, layout: str) -> dict[str, Any] | None:
    paths = _paths(out, image_id)
    if not (paths["label"].exists() and paths["truth"].exists() and paths["masks"].exists()):
        return None
    if not _image_exists(out, image_id, layout):
        return None
    try:
        data = json.loads(paths["truth"].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("config", {}).get("version") != GENERATOR_VERSION:
        return None
    return _row(data, image_id)


def generate_cohort(
    out_dir: str | Path,
    n: int,
    seed: int,
    *,
    layout: str = "datastore",
    scenario_mix: dict[str, float] | None = None,
    workers: int = 2,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Generate ``n`` studies into ``out_dir``; returns the manifest (also written as ``manifest.json``).

    ``layout``: "datastore" (4-D NIfTI + sidecar, what the MONAI Label app
    serves), "dicom" (each vendor's typical classic export: Siemens one series
    per slice, GE one series slice-major, Philips enhanced multi-frame) or one
    ``stran.io.DicomLayout`` value for all studies. ``scenario_mix`` maps
    scenarios to weights (default A/B/C/D equal, i.e. 50 % scar). Complete
    studies already in ``out_dir`` are kept unless ``overwrite``.
    """
    from stran.atomic import atomic_write_text

    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    if n < 0:
        raise ValueError("n must be >= 0")
    out = Path(out_dir)
    for sub in ("images", "labels", "truth"):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for stale in (out / sub).glob(".*.tmp"):  # left by an interrupted run (stran.atomic temporaries)
            stale.unlink(missing_ok=True)
    t0 = time.perf_counter()
    plan = cohort_plan(n, seed, scenario_mix)
    rows: dict[str, dict[str, Any]] = {}
    todo = []
    for item in plan:
        row = None if overwrite else _existing_row(out, item["id"], layout)
        if row is not None:
            rows[item["id"]] = row
        else:
            todo.append({**item, "out": str(out), "layout": layout})

    from tqdm import tqdm

    bar = tqdm(total=n, initial=n - len(todo), desc="phantoms", unit="study", file=sys.stderr, disable=not progress)
    try:
        if workers <= 1 or len(todo) <= 1:
            for task in todo:
                rows[task["id"]] = _make_study(task)
                bar.update(1)
        else:
            import multiprocessing as mp

            with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
                for row in pool.map(_make_study, todo, chunksize=1):
                    rows[row["id"]] = row
                    bar.update(1)
    finally:
        bar.close()
    partial = out / ".partial"
    if partial.exists() and not any(partial.iterdir()):
        partial.rmdir()

    ordered = [rows[item["id"]] for item in plan]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(ordered)
    atomic_write_text(out / "cohort.csv", buf.getvalue())

    seconds = time.perf_counter() - t0
    manifest = {
        "generator": "stran.phantom",
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "n": int(n),
        "layout": layout,
        "scenario_mix": scenario_mix or {s: 1.0 for s in SCENARIOS},
        "study_seed_rule": f"seed * {STUDY_SEED_STRIDE} + index",
        "seconds": round(seconds, 2),
        "generated": len(todo),
        "reused": n - len(todo),
        "workers": int(workers),
        "scenario_counts": dict(sorted(Counter(r["scenario"] for r in ordered).items())),
        "label_counts": {str(k): v for k, v in sorted(Counter(r["study_label"] for r in ordered).items())},
        "profile_counts": dict(sorted(Counter(r["profile"] for r in ordered).items())),
        "ids": [r["id"] for r in ordered],
        "files": {
            "images": "images/",
            "labels": "labels/<id>.scar.json",
            "truth": "truth/<id>.truth.json",
            "masks": "truth/<id>.masks.npz",
            "table": "cohort.csv",
        },
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1))
    return manifest
