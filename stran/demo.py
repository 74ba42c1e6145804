"""``stran demo``: the main job on the embedded default, end to end over REST.

Generates the sample studies if needed, starts the MONAI Label server (apps/stran, local datastore,
the shipped demo model) on 127.0.0.1, then does through REST exactly what the 3D Slicer module does
(with the module's own logic, CineScarLib.session): detect scar on a study, show the verdict and
per-slice scores, save a corrected label, ask for the next study, retrain briefly and show the new
model answering, export everything to the local SQLite results database and to CSV, draw a picture
(a cine frame with the attention overlay and the per-slice bar chart) and stop the server.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stran.resources import APP_DIR, REPO, SAMPLES
from stran.serve import ensure_samples, fill_datastore, server_command

if TYPE_CHECKING:
    import numpy as np

MODULE_DIR = REPO / "slicer_extension" / "CineScar"

HELP = "Run the end-to-end demo: server, detection, correction, next study, retraining, export, picture."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work", default=str(REPO / "work" / "demo"), help="demo folder (recreated on every run)")
    parser.add_argument("--samples", default=str(SAMPLES), help="sample studies (generated here when missing)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the demo retraining")
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Step:
    """Prints a numbered step with its duration."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, title: str) -> Step:
        self.n += 1
        self.title = title
        return self

    def __enter__(self) -> Step:
        self.t0 = time.perf_counter()
        print(f"\n[{self.n}] {self.title}", flush=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            print(f"    ({time.perf_counter() - self.t0:.1f} s)", flush=True)


def start_server(datastore: Path, model_dir: Path, port: int, log_path: Path) -> subprocess.Popen:
    cmd, env = server_command(datastore, "127.0.0.1", port, {"model_dir": str(model_dir), "mc_samples": "8"})
    return subprocess.Popen(cmd, cwd=REPO, stdout=log_path.open("w"), stderr=subprocess.STDOUT, env=env)


def wait_until_up(session: Any, proc: subprocess.Popen, log_path: Path, timeout: float = 180) -> Any:
    from CineScarLib.errors import MonaiLabelError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server stopped (exit {proc.returncode}); log:\n{log_path.read_text()[-3000:]}")
        try:
            return session.connect()
        except MonaiLabelError:
            time.sleep(1.0)
    raise TimeoutError(f"the server did not start within {timeout:.0f} s; see {log_path}")


def print_slices(result: dict, truth: dict | None) -> None:
    truth_slices = (truth or {}).get("slice_labels") or []
    print("    slice  probability  predicted  LGE truth")
    for k, p in enumerate(result["slice_probabilities"]):
        shown = "   -  " if p is None else f"{p:6.3f}"
        predicted = "" if p is None else ("scar" if p >= result["threshold"] else "-")
        t = truth_slices[k] if k < len(truth_slices) else None
        print(f"    {k:5d}  {shown:>11}  {predicted:>9}  {'' if t is None else ('scar' if t else '-'):>9}")


def truth_scar(samples: Path, study_id: str) -> np.ndarray | None:
    """The phantom's truth scar mask (S, T, H, W) bool on the study grid, when the sample cohort has it."""
    import numpy as np

    path = samples / "truth" / f"{study_id}.masks.npz"
    if not path.is_file():
        return None
    with np.load(path) as z:
        return z["masks"] == 4


def map_on_scar(detection: Any, scar: np.ndarray | None) -> str:
    """One line: how much of the map's hot area lies on the truth scar (pixels above 0.5, all slices and phases)."""
    hot = detection.attention.array.transpose(1, 0, 2, 3) > 0.5  # (T, S, H, W) -> (S, T, H, W)
    if scar is None or hot.shape != scar.shape:
        return f"{int(hot.sum())} map pixels above 0.5"
    inter = int((hot & scar).sum())
    dice = 2 * inter / max(int(hot.sum()) + int(scar.sum()), 1)
    return (f"{int(hot.sum())} map pixels above 0.5, {100 * inter / max(int(hot.sum()), 1):.0f} % of them on the "
            f"truth scar; Dice with the truth scar {dice:.2f}")


def print_segments(result: dict, truth: dict | None, top: int = 4) -> None:
    """The AHA segments the model finds most likely scarred, beside the LGE truth (when the label has segments)."""
    probs = result.get("segment_probabilities")
    if not probs:
        return
    truth_segments = (truth or {}).get("segment_labels") or []
    order = sorted(range(len(probs)), key=lambda k: -probs[k])[:top]
    shown = ", ".join(f"{k + 1} ({probs[k]:.2f})" for k in order)
    scarred = [k + 1 for k, v in enumerate(truth_segments) if v == 1]
    print(f"    AHA segments most likely scarred: {shown}" + (f"; LGE truth: {scarred}" if truth_segments else ""))


def draw_picture(detection: Any, path: Path, scar: np.ndarray | None = None) -> Path:
    """The most probable slice at end-systole with the scar map (or attention) overlay and, when known, the truth
    scar's outline; and the per-slice bar chart."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cine = detection.cine.array  # (T, S, rows, cols)
    attention = detection.attention.array
    probs = detection.result["slice_probabilities"]
    kind = "scar map" if detection.result.get("map") == "scar" else "attention"
    scored = [k for k, p in enumerate(probs) if p is not None]
    s = max(scored, key=lambda k: probs[k]) if scored else cine.shape[1] // 2
    t = int(np.argmin(cine[:, s].mean(axis=(1, 2))))  # darkest frame ~ end-systole (smallest blood pool)
    fig, (ax_img, ax_bar) = plt.subplots(1, 2, figsize=(10, 4.5), gridspec_kw={"width_ratios": [1, 1.2]})
    ax_img.imshow(cine[t, s], cmap="gray")
    overlay = np.ma.masked_less(attention[t, s], 0.15)
    im = ax_img.imshow(overlay, cmap="hot", alpha=0.55, vmin=0, vmax=1)
    if scar is not None and scar.shape[:2] == (cine.shape[1], cine.shape[0]) and scar[s, t].any():
        ax_img.contour(scar[s, t].astype(float), levels=[0.5], colors="cyan", linewidths=0.8)
    rows, cols = np.nonzero(attention[t, s] > 0.05)
    if rows.size:  # zoom on the heart around the map's hot area
        margin = max(np.ptp(rows), np.ptp(cols)) // 2 + 30
        ax_img.set_xlim(max(cols.min() - margin, 0) - 0.5, min(cols.max() + margin, cine.shape[3] - 1) + 0.5)
        ax_img.set_ylim(min(rows.max() + margin, cine.shape[2] - 1) + 0.5, max(rows.min() - margin, 0) - 0.5)
    outline = "; cyan: truth scar" if scar is not None else ""
    ax_img.set_title(f"slice {s}, phase {t}: {kind} overlay{outline}", fontsize=10)
    ax_img.axis("off")
    fig.colorbar(im, ax=ax_img, fraction=0.046, pad=0.02, label=kind)
    r = detection.result
    heights = [0 if p is None else p for p in probs]
    colors = ["#c0392b" if (p is not None and p >= r["threshold"]) else "#7f8c8d" for p in probs]
    ax_bar.bar(range(len(probs)), heights, color=colors)
    ax_bar.axhline(r["threshold"], color="k", ls="--", lw=1, label=f"threshold {r['threshold']:.2f}")
    ax_bar.set(xlabel="slice (apex -> base)", ylabel="scar probability", ylim=(0, 1))
    ax_bar.set_title(f"study: {r['prediction_label']} (p = {r['study_probability']:.2f}); model {r['model']['sha256'][:10]}",
                     fontsize=10)
    ax_bar.legend(loc="upper left", fontsize=8)
    fig.suptitle("ST-RAN Scar demo (synthetic phantom, research use only)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


class NibabelVolumes:
    """The module's NIfTI reading and writing (``CineScarLib.volume.VolumeCodec``) over nibabel: the demo runs the
    module's session without Slicer, whose reader the module uses."""

    def readVolume4D(self, source: bytes, *, what: str = "image") -> Any:
        import gzip

        import nibabel as nib
        import numpy as np
        from CineScarLib.volume import Volume4D

        img = nib.Nifti1Image.from_bytes(gzip.decompress(source) if source[:2] == b"\x1f\x8b" else source)
        unit = {"msec": 1.0, "sec": 1000.0, "usec": 0.001}.get(img.header.get_xyzt_units()[1], 0.0)
        zooms = img.header.get_zooms()
        interval = float(zooms[3]) * unit if len(zooms) > 3 else 0.0
        return Volume4D(np.asanyarray(img.dataobj).transpose(3, 2, 1, 0), img.affine, interval, what)

    def volume4DBytes(self, volume: Any) -> bytes:
        import gzip

        import nibabel as nib

        img = nib.Nifti1Image(volume.array.transpose(3, 2, 1, 0), volume.affine)
        img.header.set_xyzt_units("mm", "msec")
        img.header.set_zooms((*volume.spacing, volume.phase_interval_ms or 1000.0 / volume.phases))
        return gzip.compress(img.to_bytes())


def run(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(MODULE_DIR))
    from CineScarLib.corrections import Correction
    from CineScarLib.session import ScarSession

    step = Step()
    work = Path(args.work)
    if work.exists():
        shutil.rmtree(work)
    datastore, model_dir = work / "datastore", work / "model"
    datastore.mkdir(parents=True)
    model_dir.mkdir()
    truth_dir = Path(args.samples) / "labels"

    with step("Sample studies (synthetic phantoms)"):
        ids = fill_datastore(ensure_samples(Path(args.samples)), datastore)
        print(f"    {len(ids)} studies copied into a fresh datastore {datastore}")

    port = args.port or _free_port()
    log_path = work / "server.log"
    proc = start_server(datastore, model_dir, port, log_path)
    session = ScarSession(f"http://127.0.0.1:{port}", db=str(work / "results.sqlite"), auto_export=True,
                          log=lambda m: None, volumes=NibabelVolumes())
    try:
        with step(f"Start the MONAI Label server on http://127.0.0.1:{port} (log: {log_path})"):
            status = wait_until_up(session, proc, log_path)
            print(f"    {status.summary()}")
            print(f"    model card: {APP_DIR / 'model' / 'MODEL_CARD.md'} (trained on synthetic phantoms only; read its held-out "
                  "test metrics before trusting a verdict)")

        study_id = ids[0]
        truth = json.loads((truth_dir / f"{study_id}.scar.json").read_text())
        with step(f"Detect scar on {study_id}"):
            detection = session.detect(study_id)
            r = detection.result
            print(f"    verdict: {r['prediction_label'].upper()} (probability {r['study_probability']:.3f}, threshold "
                  f"{r['threshold']:.3f}, MC-dropout std {r['uncertainty']['std']:.3f}); "
                  f"LGE truth: {'scar' if truth['study_label'] else 'no scar'}")
            print_slices(r, truth)
            print_segments(r, truth)
            print(f"    {map_on_scar(detection, truth_scar(Path(args.samples), study_id))}")
            print(f"    server timings: {r['timings']}")

        with step("Save the corrected label (what the LGE images showed), and earlier reviews of 5 more studies"):
            for image_id in [study_id, *ids[1:6]]:
                label = json.loads((truth_dir / f"{image_id}.scar.json").read_text())
                sidecar = json.loads((datastore / f"{image_id}.cine.json").read_text())
                correction = Correction(
                    image_id=image_id, study_uid=sidecar["study_uid"], study_label=label["study_label"],
                    slice_labels=label["slice_labels"], reviewer="demo", source="LGE", comment="from the LGE read",
                    detection_id=detection.detection_id if image_id == study_id else None)
                outcome = session.submit_correction(correction)
                print(f"    {image_id}: study label {label['study_label']}, {outcome.message}")

        with step("Ask for the next study (active learning: random, the best strategy on phantoms)"):
            next_id = session.next_study("random")
            print(f"    next study to review: {next_id} ({(session.last_pick or {}).get('reason', '')})")

        with step(f"Retrain on the reviewed studies ({args.epochs} epochs, from the served model)"):
            run_ = session.start_training({"epochs": args.epochs, "batch_size": 2})
            seen = set()

            def show(p: Any) -> None:
                if p.message not in seen:
                    seen.add(p.message)
                    print(f"    {p.message}", flush=True)

            final = session.wait_for_training(run_, poll_s=2.0, on_update=show)
            if final.state != "live":
                raise RuntimeError(final.message)

        with step(f"The new model answers on {study_id}"):
            again = session.detect(study_id)
            print(f"    before: p = {r['study_probability']:.3f} (model {r['model']['sha256'][:12]}); "
                  f"after: p = {again.result['study_probability']:.3f} (model {again.result['model']['sha256'][:12]})")

        with step("Export results and corrections to the local results database and CSV"):
            csv_files = session.export_csv(work / "export")
            counts = session.db.counts()
            print(f"    {work / 'results.sqlite'}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
            print(f"    CSV: {', '.join(p.name for p in csv_files)} in {work / 'export'}")

        with step(f"Picture: {study_id}, cine frame with the map of the shipped model and per-slice scores"):
            picture = draw_picture(detection, work / "detection.png", truth_scar(Path(args.samples), study_id))
            print(f"    {picture}")
    finally:
        session.close()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        print("\nServer stopped. Research use only: the demo model is trained on synthetic phantoms.")
    return 0
