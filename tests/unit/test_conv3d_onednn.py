"""stran.models.common.conv3d: a CPU float batch of one goes to oneDNN instead of PyTorch's reference kernel, with
the same values and gradients as nn.Conv3d; the authors' layout gives the same outputs through it (no mock: a
batch of two takes PyTorch's own path)."""

from __future__ import annotations

import torch
from torch import nn

from stran.models import build_model
from stran.models.common import conv3d


def test_same_values_and_gradients_as_the_module() -> None:
    torch.manual_seed(0)
    conv = nn.Conv3d(4, 6, 3, padding=(0, 1, 1), stride=(1, 2, 2), bias=True)
    x = torch.rand(1, 4, 7, 10, 10, requires_grad=True)
    ours, theirs = conv3d(conv, x), conv(x)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    g_ours = torch.autograd.grad(ours.square().sum(), (x, conv.weight))
    g_theirs = torch.autograd.grad(theirs.square().sum(), (x, conv.weight))
    for a, b in zip(g_ours, g_theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-4)
    with torch.profiler.profile() as prof:
        conv3d(conv, x.detach())
    assert not any("slow_conv3d" in e.name for e in prof.events())


def test_a_batch_of_two_is_left_to_pytorch() -> None:
    conv = nn.Conv3d(2, 2, 3, padding=1)
    x = torch.rand(2, 2, 4, 5, 5)
    assert torch.equal(conv3d(conv, x), conv(x))


def test_the_paper_layout_answers_the_same_through_it() -> None:
    """A study alone (through conv3d's oneDNN call) and the same study in a batch of two (left to PyTorch)."""
    torch.manual_seed(1)
    model = build_model("stran_paper_layout").eval()
    x = torch.rand(1, 1, 10, 20, 32, 32)
    with torch.no_grad():
        alone = model(x)
        batched = model(torch.cat([x, torch.rand_like(x)]))
    for key in ("study_logit", "slice_logits", "attention"):
        torch.testing.assert_close(alone[key][0], batched[key][0], atol=1e-5, rtol=1e-5)
