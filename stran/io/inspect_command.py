"""``stran inspect PATH``: what the cine loader makes of a folder or file, and what it left out; ``stran inspect
--dicomweb URL``: the cine studies a PACS holds."""

from __future__ import annotations

import argparse
import json
from typing import Any

HELP = "Show how a DICOM folder / file or 4-D NIfTI loads as a cine study (slices, phases, geometry, UIDs, files left out)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stran.pacs.options import add_pacs_arguments

    parser.add_argument("path", nargs="?",
                        help="DICOM folder, Enhanced MR DICOM file, or .nii/.nii.gz (datastore or ACDC-style)")
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of the table")
    parser.add_argument(
        "--max-bytes",
        type=int,
        default=None,
        help="memory limit for the pixels in bytes (default: $STRAN_MAX_STUDY_BYTES, else 2 GiB)",
    )
    add_pacs_arguments(parser, studies=False)


def _fmt_list(values: list[float], unit: str, limit: int = 12) -> str:
    shown = ", ".join(f"{v:g}" for v in values[:limit])
    more = f", ... ({len(values)} in all)" if len(values) > limit else ""
    return f"{shown}{more} {unit}".strip()


def format_summary(info: dict[str, Any]) -> str:
    """The human-readable table of ``CineStudy.summary()`` (plus ``trigger_times_ms``)."""
    spacing = info["pixel_spacing_mm"]
    thickness = info.get("slice_thickness_mm")
    rrs = info.get("rr_intervals_ms") or []
    rr = f"{info['rr_interval_ms']:g} ms"
    if rrs and max(rrs) - min(rrs) > 0.5:
        rr += f" (per slice {min(rrs):g}-{max(rrs):g} ms)"
    vendor = " ".join(str(v) for v in (info.get("vendor"), info.get("model")) if v) or "-"
    if info.get("field_strength_t"):
        vendor += f", {info['field_strength_t']:g} T"
    if info.get("sequence"):
        vendor += f", sequence {info['sequence']}"
    rows = [("path", info["path"])] if info.get("path") and info.get("path") != info.get("source") else []
    rows += [
        ("source", info.get("source") or "-"),
        ("slices x phases", f"{info['slices']} x {info['phases']}"),
        ("matrix (rows x cols)", f"{info['matrix'][0]} x {info['matrix'][1]}"),
        ("pixel spacing", f"{spacing[0]:g} x {spacing[1]:g} mm"),
        ("slice spacing", f"{info['slice_spacing_mm']:g} mm" + (f" (thickness {thickness:g} mm)" if thickness else "")),
        ("slice positions", _fmt_list(info["slice_positions_mm"], "mm")),
        ("RR interval", rr),
        ("vendor", vendor),
        ("patient ID", info.get("patient_id") or "-"),
        ("study UID", info.get("study_uid") or "-"),
    ]
    series = info.get("series_uids") or []
    rows.append(("series UIDs", series[0] if len(series) == 1 else f"{len(series)} series" if series else "-"))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    for uid in series if len(series) > 1 else []:
        lines.append(f"{'':<{width}}  {uid}")
    notes = info.get("notes") or []
    lines.append("")
    lines.append(f"Notes ({len(notes)}):" if notes else "Notes: none")
    lines += [f"  - {n}" for n in notes]
    left = info.get("left_out") or []
    lines.append("")
    lines.append(f"Left out ({len(left)} file(s)):" if left else "Left out: none")
    for entry in left:
        lines.append(f"  {entry['path']}")
        lines.append(f"      {entry['reason']}")
    return "\n".join(lines)


def list_pacs(args: argparse.Namespace) -> int:
    """The PACS's MR studies, marked when they hold a cine series (the ones ``--study`` can fetch)."""
    from stran.pacs.options import pacs_client

    client = pacs_client(args)
    assert client is not None
    rows = []
    for study in client.studies():
        cine = [s for s in client.image_series(study.uid) if client.is_cine_series(study.uid, s)]
        rows.append({"study_uid": study.uid, "patient_id": study.patient_id, "date": study.date,
                     "description": study.description, "images": study.n_instances, "cine_series": len(cine)})
    if args.json:
        print(json.dumps({"dicomweb": client.url, "studies": rows}, indent=2))
        return 0
    print(f"{len(rows)} MR studies on {client.url}, {sum(1 for r in rows if r['cine_series'])} with a cine:")
    for r in rows:
        mark = f"{r['cine_series']} cine series" if r["cine_series"] else "no cine"
        print(f"  {r['study_uid']}  {r['patient_id'] or '-'}  {r['date'] or '-'}  {r['images']} images, {mark}"
              f"  {r['description']}")
    return 0


def run(args: argparse.Namespace) -> int:
    from stran.errors import UserError
    from stran.io.load import load_study

    if args.dicomweb:
        return list_pacs(args)
    if not args.path:
        raise UserError("give a PATH to inspect, or --dicomweb URL to list a PACS's studies")

    study = load_study(args.path, max_bytes=args.max_bytes)
    info = {"path": str(args.path), **study.summary()}
    info["trigger_times_ms"] = [[round(float(v), 2) for v in row] for row in study.trigger_times]
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(format_summary(info))
    return 0
