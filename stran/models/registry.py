"""Model registry: ``build_model(name, **config)``, ``available_models()``, ``default_config(name)``.

Every network of the zoo takes (B, 1, S, T, H, W) and returns ``{"study_logit": (B,), "slice_logits": (B, S),
"attention": (B, S, T, H, W) in [0, 1]}``. ``build_model`` validates the config (unknown keys, types, ranges,
choices) and raises a ``ValueError`` that lists the valid names or options. The built model carries
``model.model_name`` and ``model.config`` (the full, JSON-serialisable config, defaults filled in) so that a
checkpoint can rebuild it exactly.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

# ------------------------------------------------------------------------------------------ option validation


@dataclass(frozen=True)
class Option:
    default: Any
    kind: str  # "int", "float", "str", "ints"
    help: str
    choices: tuple = ()
    minimum: float | None = None
    maximum: float | None = None
    odd: bool = False
    length: int | None = None
    legacy: Any = None  # the value a checkpoint written before this option existed implies (None: the default)

    def describe(self) -> str:
        extra = f" one of {list(self.choices)}" if self.choices else ""
        return f"{self.help} (default {self.default!r}{extra})"

    def validate(self, model: str, key: str, value: Any) -> Any:
        def bad(why: str) -> ValueError:
            return ValueError(f"{model}: option {key}={value!r} is invalid: {why}. {key}: {self.describe()}")

        if self.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad("expected an integer")
            values = [value]
        elif self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise bad("expected a number")
            value = float(value)
            values = [value]
        elif self.kind == "str":
            if not isinstance(value, str):
                raise bad("expected a string")
            values = []
        elif self.kind == "ints":
            if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
                raise bad("expected a list of integers")
            value = [v for v in value]
            if any(isinstance(v, bool) or not isinstance(v, int) for v in value):
                raise bad("expected a list of integers")
            if self.length is not None and len(value) != self.length:
                raise bad(f"expected {self.length} values")
            values = value
        else:  # pragma: no cover
            raise AssertionError(self.kind)
        if self.kind == "str" and self.choices and value not in self.choices:
            raise bad(f"choose one of {list(self.choices)}")
        for v in values:
            if self.choices and self.kind != "str" and v not in self.choices:
                raise bad(f"each value must be one of {list(self.choices)}")
            if self.minimum is not None and v < self.minimum:
                raise bad(f"must be >= {self.minimum}")
            if self.maximum is not None and v > self.maximum:
                raise bad(f"must be <= {self.maximum}")
            if self.odd and int(v) % 2 == 0:
                raise bad("must be odd")
        return value


_STNET_OPTIONS: dict[str, Option] = {
    "layout": Option(
        "4d",
        "str",
        "tensor layout: '4d' = true factorized 4D on (S, T, H, W); 'paper' = slices as channels, 3D kernels over (T, H, W)",
        choices=("4d", "paper"),
    ),
    "widths": Option([16, 32, 64, 128], "ints", "channels of the four residual stages", minimum=1, length=4),
    "spatial_kernel": Option(3, "int", "3D kernel size over (slice, row, column)", minimum=1, maximum=7, odd=True),
    "temporal_kernel": Option(
        11, "int", "1D kernel length over the phases (circular padding)", minimum=1, maximum=15, odd=True
    ),
    "temporal_mode": Option(
        "depthwise",
        "str",
        "temporal step of the factorized 4D unit: one kernel per channel or channel-mixing",
        choices=("depthwise", "full"),
    ),
    "stem_stride": Option(
        4, "int", "in-plane space-to-depth factor of the stem (4: 64 px -> 16 px, 16 channels)", choices=(1, 2, 4)
    ),
    "downsample": Option([1, 2, 2, 2], "ints", "in-plane pooling factor before each stage", choices=(1, 2), length=4),
    "units_per_block": Option(2, "int", "convolution units per residual block", choices=(1, 2)),
    "dropout": Option(0.25, "float", "dropout before the heads (MC-dropout capable)", minimum=0.0, maximum=0.9),
    "stage_dropout": Option(0.0, "float", "dropout after every stage (MC-dropout capable)", minimum=0.0, maximum=0.9),
    "n_slices": Option(
        10, "int", "number of slices (input channels; used by layout='paper' only)", minimum=1, maximum=64
    ),
    "map_head": Option(
        "scar",
        "str",
        "'scar': per-pixel LV / myocardium / RV / scar maps, and the study, slice and AHA-segment scores read off the "
        "scar map (stran.models.maps); 'none': global-feature heads",
        choices=("none", "scar"),
        legacy="none",
    ),
    "map_channels": Option(32, "int", "channels of the map decoder", minimum=4, maximum=256),
    "map_train_phases": Option(
        5, "int", "phases whose maps are decoded and supervised per training step (evenly spaced, random start; "
        "0 = all); evaluation always decodes every phase", minimum=0, maximum=64,
    ),
}

_RESNET3D_OPTIONS: dict[str, Option] = {
    "widths": Option([16, 32, 64, 128], "ints", "channels of the four stages", minimum=1, length=4),
    "blocks": Option([2, 5, 5, 2], "ints", "residual blocks per stage", minimum=1, length=4),
    "temporal_stride": Option(
        2, "int", "stride over the phases at stages 2-4 (the authors stride every axis)", choices=(1, 2)
    ),
    "stem_stride": Option(4, "int", "in-plane space-to-depth factor of the stem", choices=(1, 2, 4)),
    "dropout": Option(0.25, "float", "dropout before the heads (MC-dropout capable)", minimum=0.0, maximum=0.9),
}

_CNN_LSTM_OPTIONS: dict[str, Option] = {
    "widths": Option([16, 32, 32, 64, 64], "ints", "channels of the five 3D convolutions", minimum=1, length=5),
    "attention_units": Option(32, "int", "units of the additive self-attention over phases", minimum=1),
    "lstm_hidden": Option(32, "int", "LSTM hidden size", minimum=1),
    "stem_stride": Option(4, "int", "in-plane space-to-depth factor of the stem", choices=(1, 2, 4)),
    "dropout": Option(
        0.4, "float", "dropout after conv 3 and 5 and before the heads (MC-dropout capable)", minimum=0.0, maximum=0.9
    ),
}

_R2PLUS1D_OPTIONS: dict[str, Option] = {
    "widths": Option([16, 32, 64, 128], "ints", "channels of the four residual stages", minimum=1, length=4),
    "stem_kernel": Option(
        3, "int", "in-plane kernel of the stem (after space-to-depth)", minimum=1, maximum=9, odd=True
    ),
    "spatial_kernel": Option(3, "int", "in-plane kernel of the blocks", minimum=1, maximum=7, odd=True),
    "temporal_kernel": Option(
        3, "int", "temporal kernel (circular) of the stem and blocks", minimum=1, maximum=15, odd=True
    ),
    "mid_channels": Option(
        "tran",
        "str",
        "intermediate channels: 'tran' (Tran et al. 2018, parameter-matched to a k x k x t 3D conv) or 'equal' (the authors' code)",
        choices=("tran", "equal"),
    ),
    "stem_stride": Option(4, "int", "in-plane space-to-depth factor of the stem", choices=(1, 2, 4)),
    "downsample": Option([1, 2, 2, 2], "ints", "in-plane pooling factor before each stage", choices=(1, 2), length=4),
    "dropout": Option(0.25, "float", "dropout before the heads (MC-dropout capable)", minimum=0.0, maximum=0.9),
}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    builder: Callable[..., nn.Module]
    options: dict[str, Option] = field(default_factory=dict)


def _ablation(name: str) -> Callable[..., nn.Module]:
    def build(**config: Any) -> nn.Module:
        from .ablation import build_ablation

        return build_ablation(name, **{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})

    return build


def _paper_layout(**config: Any) -> nn.Module:
    from .ablation import build_ablation

    config = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    model = build_ablation("stran", layout="paper", map_head="none", **config)
    model.name = "stran_paper_layout"
    return model


def _resnet3d(**config: Any) -> nn.Module:
    from .resnet3d import ResNet3D

    return ResNet3D(**config)


def _cnn_lstm(**config: Any) -> nn.Module:
    from .cnn_lstm import CNNLSTM

    return CNNLSTM(**config)


def _r2plus1d(**config: Any) -> nn.Module:
    from .r2plus1d import R2Plus1D

    return R2Plus1D(**config)


_paper_options = {
    k: v
    for k, v in _STNET_OPTIONS.items()
    if k not in ("layout", "map_head", "map_channels", "map_train_phases")
}
# options that do not apply to a network are refused rather than silently ignored
_spatial_options = {k: v for k, v in _STNET_OPTIONS.items() if k not in ("temporal_kernel", "temporal_mode")}
_temporal_options = {k: v for k, v in _STNET_OPTIONS.items() if k not in ("spatial_kernel", "temporal_mode")}

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            "spatial",
            "ablation: 3D kernel over (slice, row, column) only, no attention",
            _ablation("spatial"),
            _spatial_options,
        ),
        ModelSpec(
            "temporal",
            "ablation: 1D kernel over the phases only, no attention",
            _ablation("temporal"),
            _temporal_options,
        ),
        ModelSpec(
            "spatiotemporal",
            "ablation: factorized 4D convolution, no attention",
            _ablation("spatiotemporal"),
            _STNET_OPTIONS,
        ),
        ModelSpec(
            "st_dual_attention",
            "ablation: factorized 4D convolution + dual (temporal and spatial) attention",
            _ablation("st_dual_attention"),
            _STNET_OPTIONS,
        ),
        ModelSpec(
            "stran",
            "ST-RAN: factorized 4D convolution + dual attention + residual attention at every stage",
            _ablation("stran"),
            _STNET_OPTIONS,
        ),
        ModelSpec(
            "stran_paper_layout",
            "ST-RAN in the authors' layout: slices as input channels, 3D kernels over (phase, row, column)",
            _paper_layout,
            _paper_options,
        ),
        ModelSpec(
            "cnn3d",
            "state of the art: 3D ResNet [2, 5, 5, 2] over (phase, row, column) per slice",
            _resnet3d,
            _RESNET3D_OPTIONS,
        ),
        ModelSpec(
            "cnn_lstm",
            "state of the art: 3D CNN + self-attention + LSTM over the phases, per slice",
            _cnn_lstm,
            _CNN_LSTM_OPTIONS,
        ),
        ModelSpec(
            "r2plus1d",
            "state of the art: R(2+1)D, 2D in-plane then 1D temporal kernels, per slice",
            _r2plus1d,
            _R2PLUS1D_OPTIONS,
        ),
    ]
}


def available_models() -> list[str]:
    """Registry names, in the order of the seed paper's tables (ablation, ST-RAN, state of the art)."""
    return list(MODELS)


def _spec(name: str) -> ModelSpec:
    if not isinstance(name, str) or name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
    return MODELS[name]


def model_options(name: str) -> dict[str, str]:
    """Option name -> one-line description (with default and choices) for ``name``."""
    return {k: o.describe() for k, o in _spec(name).options.items()}


def default_config(name: str) -> dict[str, Any]:
    return {k: copy.deepcopy(o.default) for k, o in _spec(name).options.items()}


def resolve_config(name: str, **config: Any) -> dict[str, Any]:
    """Validate ``config`` for ``name`` and return the full config (defaults filled in, JSON-serialisable)."""
    spec = _spec(name)
    unknown = sorted(set(config) - set(spec.options))
    if unknown:
        valid = "; ".join(f"{k}: {o.describe()}" for k, o in spec.options.items())
        raise ValueError(f"{name}: unknown option(s) {', '.join(unknown)}. Valid options: {valid}")
    full = default_config(name)
    for key, value in config.items():
        full[key] = spec.options[key].validate(name, key, value)
    return full


def stored_config(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's stored config with the options added since it was written set to what it implied
    (``Option.legacy``), so an older checkpoint rebuilds the architecture it was trained with."""
    spec = _spec(name)
    filled = dict(config)
    for key, option in spec.options.items():
        if key not in filled and option.legacy is not None:
            filled[key] = option.legacy
    return filled


def build_model(name: str, **config: Any) -> nn.Module:
    """Build a registered network. Raises ``ValueError`` (listing the valid names/options) on a bad name or option."""
    spec = _spec(name)
    full = resolve_config(name, **config)
    model = spec.builder(**copy.deepcopy(full))
    model.model_name = name
    model.config = full
    return model
