"""MC dropout with the trunk computed once (STNet.mc_study_logits, used by the Detector): the same samples as the
forward pass of a batch of copies, because only the map head's dropout samples; None where that does not hold."""

from __future__ import annotations

import pytest
import torch

from stran.models import build_model, enable_mc_dropout, run_model


def small(**options):
    torch.manual_seed(0)
    model = build_model("stran", widths=(8, 8, 16, 16), map_channels=8, **options).eval()
    return model


def test_the_same_samples_as_the_batched_forward_pass() -> None:
    model = small(dropout=0.5)
    x = torch.rand(1, 1, 6, 8, 32, 32)
    g = torch.tensor([[-1.0, 0.0, 1.0]])
    with torch.no_grad():
        enable_mc_dropout(model, True)
        torch.manual_seed(11)
        batched = run_model(model, x.expand(5, *x.shape[1:]), g.expand(5, 3))["study_logit"]
        torch.manual_seed(11)
        shared = model.mc_study_logits(x, g, 5)
        enable_mc_dropout(model, False)
    assert shared.shape == (5,) and batched.std() > 0  # dropout samples
    torch.testing.assert_close(shared, batched, atol=1e-4, rtol=0)


@pytest.mark.parametrize("options", [{"stage_dropout": 0.2}, {"map_head": "none"}, {"layout": "paper", "map_head": "none"}])
def test_not_used_where_the_trunk_samples_too(options) -> None:
    model = small(**options)
    x = torch.rand(1, 1, 10, 8, 32, 32)
    assert model.mc_study_logits(x, torch.tensor([[-1.0, 0.0, 1.0]]), 3) is None
