"""Shared pieces of the model zoo: the tensor layout, input checks, MC dropout, heads, attention maps.

Layout
------
Every network takes ``x`` of shape ``(B, C=1, S, T, H, W)`` (slices, phases, rows, columns).

The networks of the ST family (spatial, temporal, spatiotemporal, ST + dual attention, ST-RAN) and R(2+1)D keep
their feature maps as a *logical* ``(B, C, S, T, H, W)`` tensor whose *memory* order is ``(B, T, S, H, W, C)``
("phase-major, channels-last"). That one memory order is, without any copy:

* ``(B*T, C, S, H, W)`` in ``channels_last_3d``: the phase-folded view a 3D kernel over (slice, row, column)
  needs (:func:`phase_fold`);
* ``(B, C, T, S*H*W)`` in ``channels_last``: the view a 1D kernel over phases needs, run as a ``(k, 1)``
  ``conv2d`` (:func:`time_view`);
* ``(B*T*S, C, H, W)`` in ``channels_last``: the view in-plane pooling and 2D kernels need (:func:`plane_view`);
* ``(N, C)``: the matrix batch norm (:class:`BatchNorm6d`) and 1x1x1 convolutions (:class:`Pointwise`) need.

oneDNN runs these channels-last convolutions 1.4-1.6x faster than the contiguous alternatives on this CPU (see
``docs/models.md``), and no layer has to copy the tensor to change view. Circular padding of the phases is one
``cat`` on the (B, T, S*H*W*C) memory (:func:`circular_pad_phases`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------------------------- layout helpers


def to_canonical(x: torch.Tensor) -> torch.Tensor:
    """Same logical (B, C, S, T, H, W) tensor, stored phase-major channels-last (one copy)."""
    return x.permute(0, 3, 2, 4, 5, 1).contiguous().permute(0, 5, 2, 1, 3, 4)


def cat_channels(xs: list[torch.Tensor]) -> torch.Tensor:
    """Canonical tensors joined along the channels, in their channels-last memory (a canonical result). ``torch.cat``
    on dim 1 returns a channel-major tensor, which the next ``Pointwise`` must transpose back (measured 21 ms against
    3 ms for the map decoder's 48 channels at 10 x 20 x 16 x 16)."""
    return torch.cat([x.permute(0, 3, 2, 4, 5, 1) for x in xs], dim=-1).permute(0, 5, 2, 1, 3, 4)


def space_to_depth(x: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, C, S, T, H, W) -> canonical (B, C*f*f, S, T, H/f, W/f): every f x f pixel patch becomes f*f channels.

    Lossless in-plane downsampling (the stem of the ST family). H and W are zero padded at the bottom/right to a
    multiple of ``factor`` first. Returns a canonical (phase-major channels-last) tensor.
    """
    b, c, s, t, h, w = x.shape
    if factor == 1:
        return to_canonical(x)
    ph, pw = (-h) % factor, (-w) % factor
    if ph or pw:
        x = F.pad(x.reshape(b, c * s * t, h, w), (0, pw, 0, ph)).reshape(b, c, s, t, h + ph, w + pw)
        h, w = h + ph, w + pw
    hf, wf = h // factor, w // factor
    y = x.reshape(b, c, s, t, hf, factor, wf, factor)
    # memory order (B, T, S, hf, wf, C, f, f): channels (c, i, j) last
    y = y.permute(0, 3, 2, 4, 6, 1, 5, 7).reshape(b, t, s, hf, wf, c * factor * factor)
    return y.permute(0, 5, 2, 1, 3, 4)


def phase_fold(x: torch.Tensor) -> torch.Tensor:
    """(B, C, S, T, H, W) -> (B*T, C, S, H, W): phases folded into the batch."""
    b, c, s, t, h, w = x.shape
    return x.permute(0, 3, 1, 2, 4, 5).reshape(b * t, c, s, h, w)


def phase_unfold(y: torch.Tensor, batch: int) -> torch.Tensor:
    """Inverse of :func:`phase_fold`."""
    bt, c, s, h, w = y.shape
    return y.reshape(batch, bt // batch, c, s, h, w).permute(0, 2, 3, 1, 4, 5)


def time_view(x: torch.Tensor) -> torch.Tensor:
    """(B, C, S, T, H, W) -> (B, C, T, S*H*W): a 1D kernel over T becomes a (k, 1) conv2d."""
    b, c, s, t, h, w = x.shape
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, c, t, s * h * w)


def time_unview(y: torch.Tensor, s: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`time_view`."""
    b, c, t, _ = y.shape
    return y.reshape(b, c, t, s, h, w).permute(0, 1, 3, 2, 4, 5)


def plane_view(x: torch.Tensor) -> torch.Tensor:
    """(B, C, S, T, H, W) -> (B*T*S, C, H, W): every image of the cine in the batch."""
    b, c, s, t, h, w = x.shape
    return x.permute(0, 3, 2, 1, 4, 5).reshape(b * t * s, c, h, w)


def plane_unview(y: torch.Tensor, b: int, s: int, t: int) -> torch.Tensor:
    """Inverse of :func:`plane_view`."""
    _, c, h, w = y.shape
    return y.reshape(b, t, s, c, h, w).permute(0, 3, 2, 1, 4, 5)


def pool_hw(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """In-plane average pooling by ``factor`` (slices and phases untouched).

    For a factor of 2 this is exactly the authors' ``Resizing(h/2, w/2)`` (bilinear, half-pixel, no antialias).
    """
    if factor == 1:
        return x
    b, c, s, t, h, w = x.shape
    k = min(factor, h, w)
    return plane_unview(F.avg_pool2d(plane_view(x), k), b, s, t)


def circular_pad_time(v: torch.Tensor, pad: int, dim: int = 2) -> torch.Tensor:
    """Circular padding of any tensor along its phase axis ``dim`` (a cine covers one full RR cycle)."""
    if pad == 0:
        return v
    n = v.shape[dim]
    if n < pad:
        raise ValueError(f"circular padding of {pad} phases needs at least {pad} phases, got {n}")
    return torch.cat([v.narrow(dim, n - pad, pad), v, v.narrow(dim, 0, pad)], dim)


class Pointwise(nn.Module):
    """1x1x1 convolution (channel mixing only) on a canonical 6D tensor, run as one GEMM over channels-last memory."""

    def __init__(self, cin: int, cout: int, bias: bool = False) -> None:
        super().__init__()
        self.linear = nn.Linear(cin, cout, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # logical (B, C, S, T, H, W) -> (B, T, S, H, W, C) matches the memory order: no copy
        y = self.linear(x.permute(0, 3, 2, 4, 5, 1))
        return y.permute(0, 5, 2, 1, 3, 4)


class BatchNorm6d(nn.BatchNorm3d):
    """Batch norm over (B, C, S, T, H, W): statistics per channel over batch, slices, phases and pixels.

    Runs on the (B*T*S*H*W, C) matrix that the canonical memory already is (no copy): measured 1.5-3x faster than
    BatchNorm3d on the channels_last_3d view on this CPU, mostly for the small late-stage tensors.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() != 2:
            raise ValueError(f"BatchNorm6d works on the flattened (N, C) view, got {input.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        b, c, s, t, h, w = x.shape
        y = super().forward(x.permute(0, 3, 2, 4, 5, 1).reshape(-1, c))
        return y.view(b, t, s, h, w, c).permute(0, 5, 2, 1, 3, 4)


def conv3d(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``, computed by oneDNN when ``x`` is a CPU float batch of one: PyTorch's heuristic sends such a
    3-D convolution with a 3 x 3 in-plane kernel to its reference kernel (``slow_conv3d``), 14x slower here for
    (1, 16, 22, 16, 16) (docs/models.md, "Batch 1 and oneDNN"). Same values up to float rounding; autograd works."""
    if (x.shape[0] == 1 and x.device.type == "cpu" and x.dtype == torch.float32 and conv.padding_mode == "zeros"
            and isinstance(conv.padding, tuple) and torch.backends.mkldnn.is_available()):
        return torch.mkldnn_convolution(x, conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation,
                                        conv.groups)
    return conv(x)


def circular_pad_phases(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Circular padding of the phases of a canonical (B, C, S, T, H, W) tensor, as one ``cat`` on its memory.

    Returns the padded tensor as the *memory* (B, T + 2 pad, S*H*W, C), contiguous.
    """
    b, c, s, t, h, w = x.shape
    if t < pad:
        raise ValueError(f"circular padding of {pad} phases needs at least {pad} phases, got {t}")
    m = x.permute(0, 3, 2, 4, 5, 1).reshape(b, t, s * h * w * c)  # a view when x is canonical
    if pad:
        m = torch.cat([m[:, t - pad :], m, m[:, :pad]], dim=1)
    return m.view(b, t + 2 * pad, s * h * w, c)


# ------------------------------------------------------------------------------------------------------ inputs


def check_input(x: torch.Tensor, model_name: str, *, min_phases: int = 1, n_slices: int | None = None) -> None:
    """Refuse an input that is not (B, 1, S, T, H, W) float with a message that says what was expected."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{model_name}: expected a torch.Tensor of shape (B, 1, S, T, H, W), got {type(x).__name__}")
    if x.dim() != 6 or x.shape[1] != 1:
        raise ValueError(
            f"{model_name}: expected input of shape (B, 1, S, T, H, W) = (batch, channel, slices, phases, rows, "
            f"columns), got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(
            f"{model_name}: expected a floating-point input (intensities roughly in [0, 1]), got {x.dtype}"
        )
    if x.shape[3] < min_phases:
        raise ValueError(f"{model_name}: needs at least {min_phases} phases, got {x.shape[3]}")
    if n_slices is not None and x.shape[2] != n_slices:
        raise ValueError(
            f"{model_name}: this network was built for {n_slices} slices (slices are input channels in this "
            f"layout), got {x.shape[2]}; rebuild it with n_slices={x.shape[2]} or resample the slices"
        )
    if min(x.shape[4], x.shape[5]) < 8:
        raise ValueError(f"{model_name}: images of at least 8 x 8 pixels are needed, got {x.shape[4]} x {x.shape[5]}")


# ------------------------------------------------------------------------------------------------- MC dropout


class MCDropout(nn.Dropout):
    """Dropout that can stay active in eval mode (Monte-Carlo dropout) while batch norm stays in eval.

    Active when the module is training *or* its ``mc_active`` flag is set (see :func:`enable_mc_dropout`).
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(p=p)
        self.mc_active = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if self.p == 0.0:
            return x
        return F.dropout(x, self.p, self.training or self.mc_active, False)

    def extra_repr(self) -> str:
        return f"p={self.p}, mc_active={self.mc_active}"


def enable_mc_dropout(model: nn.Module, enabled: bool = True) -> int:
    """Keep every :class:`MCDropout` of ``model`` sampling at inference (``enabled=True``) or not.

    Does not touch batch norm or the train/eval mode: call ``model.eval()`` first, then this, then run the
    forward pass several times. Returns how many dropout layers with ``p > 0`` were switched.
    """
    n = 0
    for m in model.modules():
        if isinstance(m, MCDropout):
            m.mc_active = bool(enabled)
            n += int(m.p > 0)
    return n


def mc_dropout_layers(model: nn.Module) -> int:
    """Number of dropout layers with p > 0 that MC dropout can sample."""
    return sum(1 for m in model.modules() if isinstance(m, MCDropout) and m.p > 0)


def set_attention_enabled(model: nn.Module, enabled: bool = True) -> int:
    """Switch every attention gate of ``model`` on or off (off: gates are 1, residual masks are 0).

    Returns how many attention modules were switched (0 for a network without attention).
    """
    n = 0
    for m in model.modules():
        if hasattr(m, "attention_enabled") and m is not model:
            m.attention_enabled = bool(enabled)
            n += 1
    if hasattr(model, "attention_enabled"):
        model.attention_enabled = bool(enabled)
    return n


# ------------------------------------------------------------------------------------------------------- heads


class SliceStudyHeads(nn.Module):
    """Study and per-slice heads on features (B, C, S, T, h, w).

    ``study_logit`` = Linear(C, 1) on the global average over (S, T, h, w). ``slice_logits``: with slice-preserving
    features, a second Linear(C, 1) on the average over (T, h, w) of each slice (weights shared across slices); with
    ``global_slices=n`` (a layout with no slice axis), a Linear(C, n) on the global average. Dropout (MC-capable)
    precedes both.
    """

    def __init__(self, channels: int, dropout: float, global_slices: int | None = None) -> None:
        super().__init__()
        self.drop = MCDropout(dropout)
        self.study = nn.Linear(channels, 1)
        self.global_slices = global_slices
        self.slice = nn.Linear(channels, global_slices or 1)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        per_slice = feats.mean(dim=(3, 4, 5)).transpose(1, 2)  # (B, S, C)
        pooled = per_slice.mean(dim=1)  # = global average: every slice has the same number of voxels
        study = self.study(self.drop(pooled)).squeeze(-1)
        if self.global_slices:
            slices = self.slice(self.drop(pooled))
        else:
            slices = self.slice(self.drop(per_slice)).squeeze(-1)
        return study, slices

    @torch.no_grad()
    def cam(self, feats: torch.Tensor) -> torch.Tensor:
        """Class activation map (B, S, T, h, w): sigmoid(w . f(v) + b), the study probability the head would give
        if every voxel looked like voxel v (the study logit is exactly the mean of w . f(v) + b)."""
        w = self.study.weight[0]
        cam = torch.einsum("bcsthw,c->bsthw", feats, w) + self.study.bias[0]
        return torch.sigmoid(cam)


def map_to_input(a: torch.Tensor, size_hw: tuple[int, int], stem_factor: int) -> torch.Tensor:
    """(B, S, T, h, w) map on the feature grid -> (B, S, T, H, W) on the input grid.

    The space-to-depth stem zero pads H, W at the bottom/right to a multiple of ``stem_factor``: upsample to the padded
    grid, then crop, so that the map stays aligned with the image.
    """
    h, w = size_hw
    hp, wp = h + (-h) % stem_factor, w + (-w) % stem_factor
    a = upsample_map(a, (hp, wp))
    return a[..., :h, :w].contiguous() if (hp, wp) != (h, w) else a


def space_to_depth_slices(x: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, 1, S, T, H, W) -> (B*S, f*f, T, H/f, W/f) in channels_last_3d: one (T, H, W) video per slice, every f x f
    patch as f*f channels (zero padding bottom/right to a multiple of f). The stem of the per-slice 3D networks."""
    b, c, s, t, h, w = x.shape
    ph, pw = (-h) % factor, (-w) % factor
    if ph or pw:
        x = F.pad(x.reshape(b, c * s * t, h, w), (0, pw, 0, ph)).reshape(b, c, s, t, h + ph, w + pw)
        h, w = h + ph, w + pw
    hf, wf = h // factor, w // factor
    y = x.reshape(b, c, s, t, hf, factor, wf, factor).permute(0, 2, 3, 4, 6, 1, 5, 7)
    y = y.reshape(b * s, t, hf, wf, c * factor * factor)  # memory (B*S, T, hf, wf, C)
    return y.permute(0, 4, 1, 2, 3)


def upsample_map(a: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """(B, S, T, h, w) in [0, 1] -> (B, S, T, H, W), bilinear in-plane, clamped to [0, 1]."""
    b, s, t, h, w = a.shape
    if (h, w) != tuple(size_hw):
        a = F.interpolate(a.reshape(b * s * t, 1, h, w), size=tuple(size_hw), mode="bilinear", align_corners=False)
        a = a.reshape(b, s, t, *size_hw)
    return a.clamp(0.0, 1.0).contiguous()


def run_model(model: nn.Module, image: torch.Tensor, geometry: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Forward pass of any network of the zoo; ``geometry`` (B, 3) goes to the networks with a map head (it places
    the AHA segments), the others take the image only."""
    if getattr(model, "map_head", False):
        return model(image, geometry)
    return model(image)


def output_dict(study: torch.Tensor, slices: torch.Tensor, attention: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"study_logit": study, "slice_logits": slices, "attention": attention}
