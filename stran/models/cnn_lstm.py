"""State of the art "CNN-LSTM": 3D convolutions, additive self-attention and an LSTM, per slice.

The authors' Keras model (``Architectures/SOTA/Architecture_CNN_LSTM.py``) is trained per slice (every slice a
sample carrying the patient's label): five Conv3D over one slice's (20, 64, 64) cine (32, 32, 32 (k5), 64, 64
filters, max-pools 2 in every axis), the 2 x 7 x 7 x 64 map flattened into 98 tokens, SeqSelfAttention (additive,
tanh, 32 units), LSTM(10), Dense(1, sigmoid). Here, with the same ingredients:

* one slice = one (T, H, W) video, slices folded into the batch, weights shared across slices;
* the zoo's lossless space-to-depth stem (4 x 4 pixel patches -> 16 channels, 64 -> 16 px), then five 3D
  convolutions (k = 3, BN, ReLU), channels 16/32/32/64/64, max-pools (1, 2, 2) in-plane only after convs 2 and 4
  (16 -> 4 px), so the **phases are kept** and the LSTM runs over the cardiac cycle (the authors' LSTM runs over
  a raster of mixed time/space tokens); the authors' k = 5 third conv is k = 3 here (5^3 taps cost more than the
  rest of the network together); dropout 0.4 after convs 3 and 5 as the authors';
* tokens: one per phase, the conv features averaged in-plane (B*S, T, 64);
* additive self-attention over the phases (keras-self-attention's ``SeqSelfAttention``: e[t, t'] =
  w_a . tanh(W_t h_t + W_x h_t' + b_h), softmax over t', full context), then LSTM(32) over the phases;
* heads: ``slice_logits`` = Linear(32, 1) on each slice's last LSTM state; ``study_logit`` = Linear(32, 1) on the
  average of the slices' last states (the authors had no study-level aggregation);
* ``attention`` (gradient-free, in [0, 1]): the self-attention each phase receives (mean over queries, divided by
  its maximum over phases) times the in-plane activation of the last conv (channel mean, divided by its maximum
  per slice), upsampled bilinearly to (H, W).

The LSTM reads the phases in order from the first trigger, so this network is not invariant to a circular phase
shift (the ST family is).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import MCDropout, check_input, output_dict, space_to_depth_slices
from .resnet3d import ChannelsLast3d


class AdditiveSelfAttention(nn.Module):
    """keras-self-attention SeqSelfAttention(attention_type='additive'), full context, without its b_a (a constant
    added to every score of a softmax row changes nothing)."""

    def __init__(self, features: int, units: int = 32) -> None:
        super().__init__()
        self.wt = nn.Linear(features, units, bias=False)
        self.wx = nn.Linear(features, units, bias=True)  # bias = b_h
        self.wa = nn.Linear(units, 1, bias=False)  # a bias b_a would cancel in the softmax (always zero gradient)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.wt(h).unsqueeze(2)  # (N, T, 1, U)
        k = self.wx(h).unsqueeze(1)  # (N, 1, T, U)
        e = self.wa(torch.tanh(q + k)).squeeze(-1)  # (N, T, T)
        a = torch.softmax(e, dim=-1)
        return a @ h, a


class CNNLSTM(nn.Module):
    def __init__(
        self,
        widths: tuple[int, ...] = (16, 32, 32, 64, 64),
        attention_units: int = 32,
        lstm_hidden: int = 32,
        stem_stride: int = 4,
        dropout: float = 0.4,
    ) -> None:
        super().__init__()
        self.name = "cnn_lstm"
        w = list(widths)

        def conv(cin: int, cout: int, stride: tuple[int, int, int] = (1, 1, 1)) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False),
                ChannelsLast3d(),
                nn.BatchNorm3d(cout),
                nn.ReLU(inplace=True),
            )

        self.stem_stride = stem_stride
        self.convs = nn.Sequential(
            conv(stem_stride * stem_stride, w[0]),
            conv(w[0], w[1]),
            nn.MaxPool3d((1, 2, 2)),
            conv(w[1], w[2]),
            MCDropout(dropout),
            conv(w[2], w[3]),
            nn.MaxPool3d((1, 2, 2)),
            conv(w[3], w[4]),
            MCDropout(dropout),
        )
        self.attention = AdditiveSelfAttention(w[4], attention_units)
        self.lstm = nn.LSTM(w[4], lstm_hidden, batch_first=True)
        self.drop = MCDropout(dropout)
        self.study_head = nn.Linear(lstm_hidden, 1)
        self.slice_head = nn.Linear(lstm_hidden, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_input(x, self.name)
        b, _, s, t, h, w = x.shape
        f = self.convs(space_to_depth_slices(x, self.stem_stride))  # (B*S, C, T, h', w')
        tokens = f.mean(dim=(3, 4)).transpose(1, 2)  # (B*S, T, C)
        ctx, a = self.attention(tokens)
        _, (hn, _) = self.lstm(ctx)
        last = hn[-1].reshape(b, s, -1)  # (B, S, hidden)
        study = self.study_head(self.drop(last.mean(dim=1))).squeeze(-1)
        slices = self.slice_head(self.drop(last)).squeeze(-1)
        with torch.no_grad():
            imp = a.detach().mean(dim=1)  # (B*S, T): attention each phase receives
            imp = imp / imp.amax(dim=1, keepdim=True).clamp_min(1e-12)
            act = f.detach().mean(dim=1)  # (B*S, T, h', w'), >= 0 after ReLU
            act = act / act.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
            fct = self.stem_stride
            hp, wp = h + (-h) % fct, w + (-w) % fct  # padded grid of the stem, cropped below
            act = F.interpolate(act, size=(hp, wp), mode="bilinear", align_corners=False)
            att = (imp[:, :, None, None] * act).reshape(b, s, t, hp, wp)[..., :h, :w].clamp(0, 1).contiguous()
        return output_dict(study, slices, att)
