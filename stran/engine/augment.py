"""Training augmentation that respects cine: one spatial transform for every phase and slice of a study.

Inputs are the preprocessed ``image`` (1, S, T, H, W) in [0, 1], its
``labels`` (S, T, H, W) uint8 label map (255 = no label) and ``slice_target``
(S,). The label map follows every spatial and temporal change of the image
(nearest neighbour; pixels moved in from outside have no label). Applied after
the cache, so every epoch sees new random draws.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose, MapTransform, RandAffine, Randomizable

from stran.engine.dataset import IGNORE, UNKNOWN


@dataclass(frozen=True)
class AugmentConfig:
    rotate_deg: float = 15.0
    scale: float = 0.1
    translate_px: float = 4.0
    gamma: tuple[float, float] = (0.8, 1.25)
    intensity_scale: float = 0.1
    noise_std: float = 0.03
    phase_roll: bool = True
    slice_dropout: float = 0.1


class RandCineAffined(Randomizable, MapTransform):
    """The same random in-plane rotation, scale and shift for all S x T frames of the study."""

    def __init__(self, rotate_deg: float, scale: float, translate_px: float, keys: str = "image") -> None:
        MapTransform.__init__(self, keys)
        self.affine = RandAffine(
            prob=1.0,
            rotate_range=(np.deg2rad(rotate_deg),),
            scale_range=(scale, scale),
            translate_range=(translate_px, translate_px),
            padding_mode="border",
            mode="bilinear",
        )

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandCineAffined:
        super().set_random_state(seed, state)
        self.affine.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        self.affine.randomize()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        img = torch.as_tensor(d["image"])
        c, s, t, h, w = img.shape
        self.randomize()
        frames = img.reshape(c * s * t, h, w)  # every frame is a channel: one affine for all of them
        out = self.affine(frames, randomize=False)
        d["image"] = torch.as_tensor(out).reshape(c, s, t, h, w).float()
        if "labels" in d:
            lab = torch.as_tensor(d["labels"]).reshape(s * t, h, w).float() + 1.0  # 0 = moved in from outside
            moved = torch.as_tensor(self.affine(lab, mode="nearest", padding_mode="zeros", randomize=False))
            moved = moved.reshape(s, t, h, w)
            d["labels"] = torch.where(moved < 0.5, IGNORE, moved - 1.0).to(torch.uint8)
        return d


class RandCineIntensityd(Randomizable, MapTransform):
    """Random gamma, global intensity scale and Gaussian noise (scanner-to-scanner variation)."""

    def __init__(self, gamma: tuple[float, float], intensity_scale: float, noise_std: float, keys: str = "image") -> None:
        MapTransform.__init__(self, keys)
        self.gamma, self.intensity_scale, self.noise_std = gamma, intensity_scale, noise_std

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        img = torch.as_tensor(d["image"]).clamp(0, 1)
        g = float(np.exp(self.R.uniform(np.log(self.gamma[0]), np.log(self.gamma[1]))))
        k = 1.0 + self.R.uniform(-self.intensity_scale, self.intensity_scale)
        noise_std = self.R.uniform(0, self.noise_std)
        noise = torch.from_numpy(self.R.standard_normal(img.shape).astype(np.float32)) * noise_std
        d["image"] = (img.pow(g) * k + noise).clamp(0, 1.5)
        return d


class RandPhaseRolld(Randomizable, MapTransform):
    """Circular shift of the phases: a cine loop has no preferred start."""

    def __init__(self, keys: str = "image") -> None:
        MapTransform.__init__(self, keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        img = torch.as_tensor(d["image"])
        shift = int(self.R.randint(img.shape[2]))
        d["image"] = torch.roll(img, shifts=shift, dims=2)
        if "labels" in d:
            d["labels"] = torch.roll(torch.as_tensor(d["labels"]), shifts=shift, dims=1)
        return d


class RandSliceDropoutd(Randomizable, MapTransform):
    """With probability ``prob`` blank one slice (a missing or unusable acquisition); its slice label becomes unknown."""

    def __init__(self, prob: float, keys: str = "image") -> None:
        MapTransform.__init__(self, keys)
        self.prob = prob

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.R.rand() < self.prob:
            img = torch.as_tensor(d["image"]).clone()
            j = int(self.R.randint(img.shape[1]))
            img[:, j] = 0.0
            target = torch.as_tensor(d["slice_target"]).clone()
            target[j] = UNKNOWN
            d["image"], d["slice_target"] = img, target
            if "labels" in d:
                labels = torch.as_tensor(d["labels"]).clone()
                labels[j] = IGNORE
                d["labels"] = labels
        return d


def build_augmentation(config: AugmentConfig | None = None) -> Compose:
    c = config or AugmentConfig()
    steps: list[MapTransform] = [
        RandCineAffined(c.rotate_deg, c.scale, c.translate_px),
        RandCineIntensityd(c.gamma, c.intensity_scale, c.noise_std),
    ]
    if c.phase_roll:
        steps.append(RandPhaseRolld())
    if c.slice_dropout > 0:
        steps.append(RandSliceDropoutd(c.slice_dropout))
    return Compose(steps)
