"""Dense and segment supervision: label maps through the one preprocessing chain, AHA segment placement, the
masked loss, the label format's optional segment labels and scar mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from stran.engine.dataset import IGNORE, UNKNOWN
from stran.engine.labels import LabelError, validate_label
from stran.engine.loss import ScarLoss, pixel_loss
from stran.models import build_model, run_model
from stran.models.maps import aha_segment_ids
from stran.phantom import generate_study, sample_config
from stran.transforms.preprocess import PreprocessConfig, preprocess_with_labels

LUT = np.array([100.0, 1000.0, 400.0, 800.0, 250.0], dtype=np.float32)  # background, LV, myocardium, RV, scar


@pytest.fixture(scope="module")
def phantoms():
    return [generate_study(sample_config(seed, scenario=s)) for seed, s in ((501, "A"), (502, "B"), (503, "D"))]


def _as_masks(study):
    """The phantom's cine with every heart pixel replaced by its label's value (the thorax kept, so the heart is
    found as usual): inside the heart, image and labels must stay in step."""
    masks = study.truth.masks
    scale = float(np.percentile(study.cine.pixels, 99)) / LUT.max()
    return study.cine.replace(pixels=np.where(masks > 0, LUT[masks] * scale, study.cine.pixels).astype(np.float32))


def _stable(masks: np.ndarray) -> np.ndarray:
    """Where a pixel's label is the same in the neighbouring slices and phases (phases wrap around): there the
    image, which is interpolated between slices and phases, must equal its label's value exactly."""
    same = np.ones(masks.shape, bool)
    for ds in (-1, 0, 1):
        for dt in (-1, 0, 1):
            shifted = np.roll(masks, dt, axis=1)
            shifted = np.concatenate([shifted[:1], shifted, shifted[-1:]])[1 + ds : 1 + ds + masks.shape[0]]
            same &= shifted == masks
    return same


@pytest.mark.parametrize("config", [PreprocessConfig(), PreprocessConfig(n_slices=8, n_phases=12, size=48)])
def test_a_label_pixel_lands_on_the_anatomy_of_its_image_pixel(phantoms, config):
    for p in phantoms:
        masks = p.truth.masks
        coded = masks + 10 * _stable(masks).astype(np.uint8)  # carry the "stable" flag through the label path
        image, labels, prep = preprocess_with_labels(_as_masks(p), coded, config)
        stable, labels = labels >= 10, labels % 10
        img = image[0].numpy()
        assert labels.shape == img.shape and labels.dtype == np.uint8
        lo, hi = prep.intensity_range
        scale = float(np.percentile(p.cine.pixels, 99)) / LUT.max()
        expected = np.clip((LUT[labels] * scale - lo) / (hi - lo), 0, 1)
        # interior pixels (a 3x3 neighbourhood of one label in the frame, stable across slices and phases)
        interior = np.zeros(labels.shape, bool)
        for k in range(1, 5):
            interior |= ndimage.binary_erosion(labels == k, structure=np.ones((1, 1, 3, 3), bool))
        heart = interior & stable
        assert heart.sum() > 0.05 * labels.size
        close = np.abs(expected - img) < 0.02
        assert close[heart].mean() > 0.95, (p.truth.scenario, close[heart].mean())
        # on the wall, a shift of the label map by 3 pixels or half a cycle breaks the agreement: the test can fail
        wall = heart & ((labels == 2) | (labels == 4))
        assert close[wall].mean() > 0.9
        for axis, shift in ((1, labels.shape[1] // 2), (2, 3), (3, 3)):
            moved = np.clip((LUT[np.roll(labels, shift, axis=axis)] * scale - lo) / (hi - lo), 0, 1)
            assert (np.abs(moved - img) < 0.02)[wall].mean() < 0.8, (axis, shift)
        _, real_labels, _ = preprocess_with_labels(p.cine, masks, config)  # the crop the real image gets
        for k in (1, 2, 3):
            assert (real_labels == k).any(), f"label {k} lost in preprocessing"


def test_label_map_shape_must_match_the_study(phantoms):
    p = phantoms[0]
    with pytest.raises(ValueError, match="label map shape"):
        preprocess_with_labels(p.cine, p.truth.masks[:, :-1], PreprocessConfig())


def test_aha_segments_placed_from_the_lv_and_rv_hold_the_truth_scar(phantoms):
    """Put the phantom's truth scar into the segments placed from its truth LV / RV: the segments that hold scar
    pixels are the generator's scarred segments (the placement a reader makes agrees with the segment table)."""
    hits, total = 0, 0
    for p in phantoms[:2]:
        _, labels, prep = preprocess_with_labels(p.cine, p.truth.masks, PreprocessConfig())
        lab = torch.from_numpy(labels).long()
        maps = (torch.stack([lab == 1, (lab == 2) | (lab == 4), lab == 3, lab == 4]).float() * 20 - 10)[None]
        ids = aha_segment_ids(maps, torch.from_numpy(prep.geometry)[None])[0]
        area = torch.zeros(18).scatter_add_(0, ids.reshape(-1), (lab == 4).float().mean(1).reshape(-1))[1:17]
        truth = np.array([float(r["scar_extent_pct"]) > 0 for r in p.truth.segments[:16]])
        predicted = area.numpy() > 3.0
        hits += int((predicted == truth).sum())
        total += truth.size
    assert hits / total >= 0.85, hits / total


def test_geometry_says_which_end_is_the_apex(phantoms):
    for p in phantoms:
        _, _, prep = preprocess_with_labels(p.cine, p.truth.masks, PreprocessConfig())
        assert prep.geometry[2] == 0.0  # the phantom's slice 0 is the most apical (docs/phantom.md)
        assert abs(np.hypot(prep.geometry[0], prep.geometry[1]) - 1.0) < 1e-5


def _batch(b=2, s=4, t=6, h=16, labels=True):
    lab = torch.randint(0, 5, (b, s, t, h, h), dtype=torch.uint8)
    return {
        "study_target": torch.tensor([1.0, UNKNOWN])[:b],
        "slice_target": torch.full((b, s), UNKNOWN),
        "segment_target": torch.full((b, 17), UNKNOWN),
        "has_labels": torch.tensor([labels, False])[:b],
        "labels": lab,
    }


def test_loss_uses_the_targets_that_exist_and_ignores_the_rest():
    torch.manual_seed(0)
    out = {
        "study_logit": torch.zeros(2, requires_grad=True),
        "slice_logits": torch.zeros(2, 4, requires_grad=True),
        "segment_logits": torch.zeros(2, 17, requires_grad=True),
        "maps": torch.zeros(2, 4, 4, 6, 16, 16, requires_grad=True),
    }
    loss = ScarLoss()
    parts = loss.parts(out, _batch())
    assert set(parts) == {"study", "pixel"}  # no slice or segment labels; the second study has no label map
    total = loss(out, _batch())
    total.backward()
    assert out["maps"].grad[1].abs().sum() == 0 and out["maps"].grad[0].abs().sum() > 0
    assert out["study_logit"].grad[1] == 0  # unknown study label
    assert set(ScarLoss().parts(out, _batch(labels=False))) == {"study"}  # study labels only still train


def test_pixel_loss_ignores_unlabelled_pixels():
    torch.manual_seed(1)
    labels = torch.randint(0, 5, (1, 3, 4, 8, 8), dtype=torch.uint8)
    labels[:, 1] = IGNORE
    maps = torch.randn(1, 4, 3, 4, 8, 8)
    other = maps.clone()
    other[:, :, 1] = torch.randn_like(other[:, :, 1]) * 10  # change the maps only where nothing is labelled
    assert torch.allclose(pixel_loss(maps, labels), pixel_loss(other, labels))


def test_map_head_outputs_the_contract():
    torch.manual_seed(0)
    model = build_model("stran", map_head="scar", widths=[8, 8, 16, 16], map_channels=8).eval()
    x = torch.rand(2, 1, 6, 12, 32, 32)
    out = run_model(model, x, torch.tensor([[-1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]))
    assert out["study_logit"].shape == (2,) and out["slice_logits"].shape == (2, 6)
    assert out["segment_logits"].shape == (2, 17)
    assert out["scar_logits"].shape == (2, 6, 12, 32, 32) and out["maps"].shape == (2, 4, 6, 12, 32, 32)
    assert out["attention"].shape == (2, 6, 12, 32, 32)
    assert 0.0 <= float(out["attention"].min()) and float(out["attention"].max()) <= 1.0
    assert "segment_logits" not in run_model(model, x, None)
    model.train()
    trained = run_model(model, x, torch.tensor([[-1.0, 0.0, 0.0]] * 2))
    assert trained["maps"].shape[3] == 5 and trained["map_phases"].shape == (5,)  # training decodes 5 phases
    with pytest.raises(ValueError, match="paper layout"):
        build_model("stran", map_head="scar", layout="paper")


def test_label_format_grows_segments_and_a_scar_mask_and_old_labels_stay_valid():
    old = validate_label({"study_label": 1, "slice_labels": [0, 1, None], "source": "LGE"}, n_slices=3)
    assert old.segment_labels == () and old.scar_mask == "" and "segment_labels" not in old.to_json()
    seg = [0] * 17
    seg[6] = 1
    seg[16] = None
    new = validate_label({"study_label": 1, "segment_labels": seg, "scar_mask": "PAT1.scar_mask.nii.gz"})
    assert new.segment_labels[6] == 1 and new.segment_labels[16] is None and new.scar_mask == "PAT1.scar_mask.nii.gz"
    assert new.to_json()["segment_labels"] == seg
    for bad, words in (
        ({"study_label": 1, "segment_labels": [0] * 16}, "17 entries"),
        ({"study_label": 1, "segment_labels": [0] * 16 + [2]}, "segment 17"),
        ({"study_label": 0, "segment_labels": [1] + [0] * 16}, "no scar"),
        ({"study_label": 1, "scar_mask": "../x.nii.gz"}, "plain file name"),
        ({"study_label": 1, "scar_mask": "mask.png"}, "NIfTI"),
    ):
        with pytest.raises(LabelError, match=words):
            validate_label(bad)
