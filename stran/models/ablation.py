"""The seed paper's ablation networks: one skeleton (:class:`~stran.models.stran.STNet`), a pluggable unit.

| registry name        | unit                         | attention                              |
|----------------------|------------------------------|----------------------------------------|
| ``spatial``          | 3D kernel over (S, H, W)     | none                                   |
| ``temporal``         | 1D kernel over T (length 11) | none                                   |
| ``spatiotemporal``   | factorized 4D (3D then 1D)   | none                                   |
| ``st_dual_attention``| factorized 4D                | dual (temporal + spatial gates)        |
| ``stran``            | factorized 4D                | dual + residual attention (1 + M) x    |

Every other option (widths, kernels, layout, ...) is shared and validated by the registry.
"""

from __future__ import annotations

from .stran import STNet

ABLATION_PRESETS: dict[str, dict[str, str]] = {
    "spatial": {"unit": "spatial", "attention": "none"},
    "temporal": {"unit": "temporal", "attention": "none"},
    "spatiotemporal": {"unit": "spatiotemporal", "attention": "none"},
    "st_dual_attention": {"unit": "spatiotemporal", "attention": "dual"},
    "stran": {"unit": "spatiotemporal", "attention": "residual_dual"},
}


def build_ablation(name: str, **config) -> STNet:
    preset = ABLATION_PRESETS[name]
    return STNet(name=name, **preset, **config)
