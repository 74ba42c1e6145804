"""The Cine Scar figures of docs/slicer-module.md, drawn by Slicer's own display pipeline (slicer-core, offscreen).

    .venv-slicer/bin/python slicer_extension/tools/render_figures.py                 # starts a server on a phantom cohort
    .venv-slicer/bin/python slicer_extension/tools/render_figures.py --server http://127.0.0.1:8000 --image-id ID

A real detection by the MONAI Label server (started here as tests/server_fixture.py starts it, over a fresh phantom
cohort, unless ``--server`` is given) is put in the scene by the module's logic (``ScarLogic.showDetection``: cine
and map sequences, display node and colour table, slice views) and the red slice view is rendered with
``CineScarLib.snapshot`` at the slice and phase where the map is strongest:

- ``docs/images/cinescar-slice-view.png``: the cine frame with the scar map over it and the AHA segment under the map
  outlined (as after a click on it in the bullseye), as Slicer's slice view draws it;
- ``docs/images/cinescar-bullseye.png``: the panel's AHA bullseye (``CineScarLib.segments.render_bullseye``), that
  segment selected.

Not part of the installed extension.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "slicer_extension" / "CineScar"))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "slicer"))

import slicer  # noqa: E402
from CineScarLib import snapshot  # noqa: E402
from CineScarLib.logic import ScarLogic  # noqa: E402
from CineScarLib.session import ScarSession  # noqa: E402

IMAGES = REPO / "docs" / "images"
SCAR_LABEL = 4  # truth masks: 4 = scar in the LV myocardium (truth/<id>.truth.json "mask_labels")


def most_scarred_study(cohort: Path) -> str:
    """The phantom study of the cohort with the most scar pixels in its truth masks."""
    counts = {}
    for truth in sorted((cohort / "truth").glob("*.truth.json")):
        image_id = truth.name[: -len(".truth.json")]
        if json.loads(truth.read_text()).get("study_label") == 1:
            counts[image_id] = int((np.load(cohort / "truth" / f"{image_id}.masks.npz")["masks"] == SCAR_LABEL).sum())
    if not counts:
        raise SystemExit(f"no scar study in {cohort}")
    return max(counts, key=counts.__getitem__)


def render(url: str, image_id: str | None, out: Path, scale: int) -> None:
    session = ScarSession(url)
    session.connect()
    image_id = image_id or session.list_studies()[0].image_id
    detection = session.detect(image_id, mc_samples=0)
    slicer.mrmlScene = snapshot.standaloneScene()
    logic = ScarLogic()
    nodes = logic.showDetection(detection)  # as the module shows a result
    att = detection.attention.array  # (phase, slice, row, column)
    shown = np.where(att >= logic.threshold, att, 0.0)
    k = int(np.argmax(shown.sum(axis=(0, 2, 3))))
    segment = None
    if logic.bullseye.segment_map is not None:  # the AHA segment under the map there, clicked as a reader would
        under = logic.bullseye.segment_map[k][shown[:, k].max(axis=0) > 0]
        if (under > 0).any():
            segment = int(np.bincount(under[under > 0]).argmax())
            k = logic.selectSegment(segment)  # its slice, outlined in the views
    t = int(np.argmax(shown[:, k].sum(axis=(1, 2))))
    nodes.browser.SetSelectedItemNumber(t)
    rows, cols = np.nonzero(shown[:, k].max(axis=0) > 0)
    picture = snapshot.renderView(slicer.mrmlScene, "Red", sliceIndex=k, scale=scale)
    if rows.size:  # the heart and some of its surroundings, not the whole field of view
        half = int(max(np.ptp(rows), np.ptp(cols), 50)) // 2 + 35
        r0 = max(0, (rows.min() + rows.max()) // 2 - half) * scale
        c0 = max(0, (cols.min() + cols.max()) // 2 - half) * scale
        picture = picture[r0: r0 + 2 * half * scale, c0: c0 + 2 * half * scale]
    view = snapshot.writePng(picture, out / "cinescar-slice-view.png")
    bullseye = snapshot.writePng(logic.bullseye.render(size=260), out / "cinescar-bullseye.png")
    colour = nodes.attentionProxy.GetDisplayNode().GetColorNodeID()
    print(f"{image_id}: slice {k}, phase {t} (item {t} of the browser), segment {segment} outlined, colour node {colour}, "
          f"scar probability {detection.probability:.2f}; segment probabilities "
          f"{'yes' if logic.bullseye.has_probabilities else 'none (grey)'}")
    for path in (view, bullseye):
        print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path} ({path.stat().st_size // 1024} KB)")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", help="a running server's URL (default: start one on a phantom cohort)")
    parser.add_argument("--image-id", help="the study to detect (default: the cohort's most scarred study, or the "
                                           "first study of --server)")
    parser.add_argument("--out", type=Path, default=IMAGES, help=f"output folder (default {IMAGES})")
    parser.add_argument("--scale", type=int, default=3, help="picture pixels per cine pixel (default 3)")
    args = parser.parse_args(argv)
    if args.server:
        render(args.server, args.image_id, args.out, args.scale)
        return 0
    from test_cinescar_server import prerequisites_missing, serve_phantom_cohort

    missing = prerequisites_missing()
    if missing:
        raise SystemExit(missing)
    with tempfile.TemporaryDirectory(prefix="cinescar-figures-") as folder:
        cohort, note, server = serve_phantom_cohort(Path(folder))
        print(f"model: {note}")
        try:
            render(server.url, args.image_id or most_scarred_study(cohort), args.out, args.scale)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
