"""The factorized 4D convolution equals a full 4D convolution whose kernel is the outer product of its factors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stran.models.common import to_canonical
from stran.models.factorized import FactorizedConv4d, SpatialConv, TemporalConv, full_conv4d

torch.set_num_threads(1)


def reference_conv4d(x: torch.Tensor, k: torch.Tensor, stride_hw: int = 1) -> torch.Tensor:
    """Explicit 4D convolution, written independently of the package: for every output phase t, the sum over the
    temporal taps dt of a conv3d over (S, H, W) of input phase (t + dt - kT//2) mod T (circular in time), zero
    padding in S, H, W. x: (B, Cin, S, T, H, W); k: (Cout, Cin, kS, kT, kH, kW)."""
    t_len = x.shape[3]
    ks, kt, kh, kw = k.shape[2:]
    outs = []
    for t in range(t_len):
        acc = 0
        for dt in range(kt):
            src = (t + dt - kt // 2) % t_len
            acc = acc + F.conv3d(
                x[:, :, :, src], k[:, :, :, dt], stride=(1, stride_hw, stride_hw), padding=(ks // 2, kh // 2, kw // 2)
            )
        outs.append(acc)
    return torch.stack(outs, dim=3)


def _kernel_from_factors(layer: FactorizedConv4d) -> torch.Tensor:
    """Outer product of the two factors, built here from the raw weights (not with the layer's own helper)."""
    ws = layer.spatial.conv.weight.detach()  # (M, Cin, kS, kH, kW)
    wt = layer.temporal.conv.weight.detach()[..., 0]  # (Cout, M or 1, kT)
    cout, cin = wt.shape[0], ws.shape[1]
    kt = wt.shape[-1]
    k = torch.zeros(cout, cin, ws.shape[2], kt, ws.shape[3], ws.shape[4], dtype=ws.dtype)
    for o in range(cout):
        mids = [o] if layer.temporal.mode == "depthwise" else range(ws.shape[0])
        for m in mids:
            w_t = wt[o, 0] if layer.temporal.mode == "depthwise" else wt[o, m]
            # outer product: spatial kernel (Cin, kS, kH, kW) x temporal kernel (kT,)
            k[o] += ws[m][:, :, None, :, :] * w_t[None, None, :, None, None]
    return k


@pytest.mark.parametrize("mode", ["depthwise", "full"])
@pytest.mark.parametrize("stride", [1, 2])
def test_factorized_equals_full_4d_convolution(mode, stride):
    torch.manual_seed(0)
    layer = FactorizedConv4d(3, 4, spatial_kernel=3, temporal_kernel=5, temporal_mode=mode, stride_hw=stride).double()
    x = torch.randn(2, 3, 4, 7, 10, 10, dtype=torch.float64)
    y = layer(to_canonical(x))
    k = _kernel_from_factors(layer)
    ref = reference_conv4d(x, k, stride)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, atol=1e-10, rtol=1e-10)
    # the layer's own kernel and the package's full_conv4d (used by the benchmark) agree too
    torch.testing.assert_close(layer.full_kernel(), k)
    torch.testing.assert_close(full_conv4d(x, k, stride_hw=stride), ref, atol=1e-10, rtol=1e-10)


def test_default_temporal_kernel_is_11_and_circular():
    layer = FactorizedConv4d(1, 1, temporal_kernel=11, temporal_mode="depthwise").double()
    assert layer.temporal.conv.weight.shape[-2] == 11
    # an impulse in the last phase reaches the first phases: circular, not zero, padding
    x = torch.zeros(1, 1, 1, 20, 1, 1, dtype=torch.float64)
    x[..., 19, :, :] = 1.0
    with torch.no_grad():
        layer.spatial.conv.weight.zero_()
        layer.spatial.conv.weight[0, 0, 1, 1, 1] = 1.0
        layer.temporal.conv.weight.fill_(1.0)
    y = layer(to_canonical(x))[0, 0, 0, :, 0, 0]
    assert y[:5].eq(1).all() and y[14:].eq(1).all() and y[5:14].eq(0).all()


def test_spatial_and_temporal_parts_act_on_their_own_axes():
    x = torch.randn(1, 2, 5, 9, 8, 8)
    s = SpatialConv(2, 3, 3)
    t = TemporalConv(2, 3, 5, mode="full")
    with torch.no_grad():
        ys = s(to_canonical(x))
        yt = t(to_canonical(x))
        # phases independent for the spatial kernel: changing phase 4 changes only output phase 4
        x2 = x.clone()
        x2[:, :, :, 4] += 1
        d = (s(to_canonical(x2)) - ys).abs().amax(dim=(0, 1, 2, 4, 5))
        assert d[4] > 0 and d[torch.arange(9) != 4].eq(0).all()
        # pixels independent for the temporal kernel
        x3 = x.clone()
        x3[:, :, 2, :, 3, 3] += 1
        d = (t(to_canonical(x3)) - yt).abs().amax(dim=(0, 1, 3))
        assert d[2, 3, 3] > 0 and (d > 0).sum() == 1


def test_temporal_depthwise_needs_equal_channels():
    with pytest.raises(ValueError, match="depthwise"):
        TemporalConv(2, 3, 11, mode="depthwise")
    with pytest.raises(ValueError, match="odd"):
        TemporalConv(2, 2, 10)
