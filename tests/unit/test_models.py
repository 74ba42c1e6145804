"""Model zoo: output contract, gradients, attention, circular-shift invariance, MC dropout, registry."""

from __future__ import annotations

import pytest
import torch

from stran.models import (
    available_models,
    build_model,
    default_config,
    enable_mc_dropout,
    mc_dropout_layers,
    model_options,
    set_attention_enabled,
)

torch.set_num_threads(1)

ALL = [
    "spatial",
    "temporal",
    "spatiotemporal",
    "st_dual_attention",
    "stran",
    "stran_paper_layout",
    "cnn3d",
    "cnn_lstm",
    "r2plus1d",
]
WITH_ATTENTION = ["st_dual_attention", "stran", "stran_paper_layout"]
# networks with a scar-map head by default: the ST family on the true 4-D layout (stran.models.maps)
WITH_MAP_HEAD = ["spatial", "temporal", "spatiotemporal", "st_dual_attention", "stran"]
# networks whose study logit must not depend on where the RR cycle starts (never downsample T, circular kernels)
SHIFT_INVARIANT = [
    "spatial",
    "temporal",
    "spatiotemporal",
    "st_dual_attention",
    "stran",
    "stran_paper_layout",
    "r2plus1d",
]


def _build(name: str, slices: int, **config):
    if name == "stran_paper_layout":
        config.setdefault("n_slices", slices)  # slices are input channels in the paper layout
    torch.manual_seed(0)
    return build_model(name, **config)


def _input(b, s, t, h, w, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 1, s, t, h, w, generator=g)


def test_registry_lists_every_network():
    assert available_models() == ALL


# (batch, slices, phases, rows, columns): the corners of the supported range. The default-size networks run on the
# first; narrow versions of the same architectures (SMALL) on the larger inputs, to keep the suite fast.
SIZES = [(2, 8, 16, 64, 64), (1, 14, 30, 72, 72), (2, 10, 20, 128, 100)]
SMALL = {
    "cnn3d": {"widths": [8, 8, 8, 8], "blocks": [1, 1, 1, 1]},
    "cnn_lstm": {"widths": [8, 8, 8, 8, 8]},
}


@pytest.mark.parametrize("name", ALL)
def test_output_contract(name):
    for i, (b, s, t, h, w) in enumerate(SIZES):
        config = {} if i == 0 else SMALL.get(name, {"widths": [8, 8, 8, 8]})
        model = _build(name, s, **config).eval()
        with torch.no_grad():
            out = model(_input(b, s, t, h, w))
        maps = {"maps", "scar_logits", "unit_logits", "unit_valid", "aha_ids"} if name in WITH_MAP_HEAD else set()
        assert set(out) == {"study_logit", "slice_logits", "attention"} | maps
        if maps:
            assert out["maps"].shape == (b, 4, s, t, h, w) and out["scar_logits"].shape == (b, s, t, h, w)
            assert out["unit_logits"].shape == (b, s, 18) and out["aha_ids"].shape == (b, s, h, w)
        assert out["study_logit"].shape == (b,)
        assert out["slice_logits"].shape == (b, s)
        assert out["attention"].shape == (b, s, t, h, w)
        for key in ("study_logit", "slice_logits", "attention", *sorted(maps - {"unit_valid", "aha_ids"})):
            assert out[key].dtype == torch.float32
            assert torch.isfinite(out[key]).all()
        a = out["attention"]
        assert a.min() >= 0.0 and a.max() <= 1.0


@pytest.mark.parametrize("name", ALL)
def test_every_parameter_gets_a_gradient(name):
    s = 8
    model = _build(name, s).train()
    x = _input(1, s, 16, 48, 48)
    out = model(x)
    g = torch.Generator().manual_seed(3)
    loss = (out["study_logit"] * torch.randn(1, generator=g)).sum() + (
        out["slice_logits"] * torch.randn(1, s, generator=g)
    ).sum()
    if "maps" in out:  # a map head's decisions read measures of the maps; the pixel loss teaches the maps
        loss = loss + (out["maps"] * torch.randn(out["maps"].shape, generator=g)).sum()
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not dead, f"{name}: parameters without gradient: {dead}"
    if name in WITH_ATTENTION:
        att = [n for n, _ in model.named_parameters() if ".dual." in n or ".mask." in n]
        assert att, "attention parameters expected"
        if name != "st_dual_attention":
            assert any(".mask." in n for n in att)


@pytest.mark.parametrize("name", WITH_ATTENTION)
def test_attention_gates_change_the_output(name):
    model = _build(name, 8).eval()
    x = _input(1, 8, 16, 48, 48)
    with torch.no_grad():
        on = model(x)
        assert set_attention_enabled(model, False) > 0
        off = model(x)
        set_attention_enabled(model, True)
        again = model(x)
    # untrained, a map head's decisions barely move (its scar map starts near zero everywhere): look at the maps
    key = "maps" if "maps" in on else "study_logit"
    assert not torch.allclose(on[key], off[key], atol=1e-6)
    if key == "study_logit":
        assert not torch.allclose(on["slice_logits"], off["slice_logits"], atol=1e-6)
    assert torch.equal(on[key], again[key])


def test_attention_map_is_not_constant():
    model = _build("stran", 8).eval()
    with torch.no_grad():
        a = model(_input(1, 8, 16, 32, 32))["attention"]
    assert a.std() > 0


@pytest.mark.parametrize("name", SHIFT_INVARIANT)
def test_circular_phase_shift_leaves_study_logit_unchanged(name):
    model = _build(name, 8).eval()
    x = _input(1, 8, 18, 32, 32)
    with torch.no_grad():
        ref = model(x)
        for k in (1, 7):
            out = model(torch.roll(x, shifts=k, dims=3))
            torch.testing.assert_close(out["study_logit"], ref["study_logit"], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(out["slice_logits"], ref["slice_logits"], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(out["attention"], torch.roll(ref["attention"], k, dims=2), atol=1e-5, rtol=1e-4)


def test_a_phase_permutation_does_change_the_logit():
    """The invariance above is not a network that ignores time: reversing the cycle changes the output."""
    model = _build("stran", 8).eval()
    x = _input(1, 8, 18, 32, 32)
    perm = torch.randperm(18, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the scar map, per slice and phase, put back in the original phase order
        a = model(x)["maps"]
        b = torch.flip(model(torch.flip(x, dims=[3]))["maps"], dims=[3])
        c = torch.empty_like(a)
        c[:, :, :, perm] = model(x[:, :, :, perm])["maps"]
    assert not torch.allclose(a, c, atol=1e-6) or not torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("name", ["stran", "cnn3d", "cnn_lstm", "r2plus1d", "stran_paper_layout"])
def test_mc_dropout(name):
    model = _build(name, 8).eval()
    assert mc_dropout_layers(model) > 0
    x = _input(1, 8, 16, 32, 32)
    with torch.no_grad():
        assert enable_mc_dropout(model, True) > 0
        a, b = model(x), model(x)
        assert not torch.equal(a["study_logit"], b["study_logit"])
        assert not torch.equal(a["slice_logits"], b["slice_logits"])
        enable_mc_dropout(model, False)
        c, d = model(x), model(x)
        assert torch.equal(c["study_logit"], d["study_logit"])
        assert torch.equal(c["slice_logits"], d["slice_logits"])
    # batch norm stayed in eval mode throughout
    assert not any(m.training for m in model.modules())


def test_mc_dropout_keeps_batch_norm_statistics():
    model = _build("stran", 8).eval()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    enable_mc_dropout(model)
    with torch.no_grad():
        model(_input(1, 8, 16, 32, 32))
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def test_stage_dropout_option_adds_mc_layers():
    assert mc_dropout_layers(build_model("stran", stage_dropout=0.1)) == mc_dropout_layers(build_model("stran")) + 4


# ----------------------------------------------------------------------------------------------------- registry


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(ValueError) as e:
        build_model("stran-v3")
    assert "stran-v3" in str(e.value) and "cnn_lstm" in str(e.value) and "r2plus1d" in str(e.value)


def test_unknown_option_lists_valid_options():
    with pytest.raises(ValueError) as e:
        build_model("stran", width=8)
    msg = str(e.value)
    assert "width" in msg and "widths" in msg and "temporal_kernel" in msg


@pytest.mark.parametrize(
    "config",
    [
        {"temporal_kernel": 10},
        {"temporal_kernel": "11"},
        {"layout": "5d"},
        {"widths": [16, 32, 64]},
        {"dropout": 1.5},
        {"temporal_mode": "grouped"},
        {"downsample": [2, 2, 3, 2]},
        {"units_per_block": True},
    ],
)
def test_invalid_option_values_are_refused(config):
    with pytest.raises(ValueError) as e:
        build_model("stran", **config)
    assert next(iter(config)) in str(e.value)


def test_paper_layout_has_no_layout_option_and_fixed_slices():
    with pytest.raises(ValueError):
        build_model("stran_paper_layout", layout="4d")
    model = build_model("stran_paper_layout", n_slices=12).eval()
    with pytest.raises(ValueError, match="12 slices"):
        model(_input(1, 10, 16, 32, 32))
    assert build_model("stran", layout="paper", map_head="none").layout == "paper"
    with pytest.raises(ValueError, match="map_head='none'"):
        build_model("stran", layout="paper")


def test_config_is_resolved_and_json_serialisable():
    import json

    model = build_model("stran", temporal_kernel=9, widths=(8, 16, 32, 64))
    assert model.model_name == "stran"
    assert model.config["temporal_kernel"] == 9 and model.config["widths"] == [8, 16, 32, 64]
    assert set(model.config) == set(default_config("stran")) == set(model_options("stran"))
    json.dumps(model.config)


def test_bad_input_is_refused_with_a_clear_message():
    model = build_model("stran").eval()
    with pytest.raises(ValueError, match=r"\(B, 1, S, T, H, W\)"):
        model(torch.rand(1, 10, 20, 64, 64))
    with pytest.raises(ValueError, match="floating-point"):
        model(torch.ones(1, 1, 10, 20, 64, 64, dtype=torch.int64))
