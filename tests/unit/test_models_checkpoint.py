"""Checkpoints: atomic save, exact reload through the registry, canonical hash, refusal of tampered or foreign files."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from stran.models import (
    CheckpointCompatibilityError,
    CheckpointIntegrityError,
    NotAStranCheckpointError,
    build_model,
    load_checkpoint,
    model_sha256,
    save_checkpoint,
)

torch.set_num_threads(1)


def _trained_like(name="stran", **config):
    """A model whose weights and BN statistics differ from a fresh build (so a reload is really tested)."""
    torch.manual_seed(0)
    model = build_model(name, **config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.train()
    with torch.no_grad():
        model(torch.rand(1, 1, 8, 16, 32, 32))
    return model.eval()


def test_reload_gives_identical_outputs(tmp_path):
    model = _trained_like("stran", temporal_kernel=9)
    path = tmp_path / "ckpt" / "stran.pt"
    meta = save_checkpoint(
        path, model, name="stran", config=model.config, extra={"threshold": np.float32(0.4), "trained_on": "phantom-v1"}
    )
    assert meta["sha256"] == model_sha256(model, model.config)
    assert [p.name for p in path.parent.iterdir()] == ["stran.pt"]  # no temporary file left behind

    loaded, meta2 = load_checkpoint(path)
    assert not loaded.training
    assert meta2["model_name"] == "stran" and meta2["config"]["temporal_kernel"] == 9
    assert meta2["extra"] == {"threshold": pytest.approx(0.4), "trained_on": "phantom-v1"}
    assert meta2["format"] == "stran-checkpoint" and meta2["format_version"] == 1
    assert meta2["sha256"] == meta["sha256"] and "created_utc" in meta2 and "stran_version" in meta2
    x = torch.rand(1, 1, 8, 16, 48, 48)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_file_layout_is_what_monai_label_expects(tmp_path):
    model = _trained_like("spatial")
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, name="spatial", config=model.config)
    raw = torch.load(path, weights_only=True)
    assert set(raw) >= {
        "format",
        "format_version",
        "model_name",
        "config",
        "model",
        "sha256",
        "stran_version",
        "created_utc",
        "extra",
    }
    fresh = build_model("spatial", **raw["config"])
    fresh.load_state_dict(raw["model"])  # BasicInferTask: model.load_state_dict(checkpoint["model"])


def test_hash_is_canonical():
    model = _trained_like("temporal")
    h = model_sha256(model, model.config)
    # same weights, other dict order / memory layout / config key order: same hash
    state = {k: v.clone() for k, v in reversed(list(model.state_dict().items()))}
    state = {k: (v.t().contiguous().t() if v.dim() == 2 else v) for k, v in state.items()}
    assert model_sha256(state, dict(reversed(list(model.config.items()))), "temporal") == h
    # a different weight or config: a different hash
    state2 = dict(state)
    key = next(k for k in state2 if k.endswith("weight"))
    state2[key] = state2[key].clone().contiguous()
    state2[key].view(-1)[0] += 1e-6
    assert model_sha256(state2, model.config, "temporal") != h
    assert model_sha256(model, {**model.config, "dropout": 0.5}) != h


def _rewrite(path, mutate):
    raw = torch.load(path, weights_only=True)
    mutate(raw)
    torch.save(raw, path)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda raw: raw["model"].__setitem__(next(iter(raw["model"])), next(iter(raw["model"].values())) * 1.001),
        lambda raw: raw["config"].__setitem__("dropout", 0.5),
        lambda raw: raw.__setitem__("model_name", "spatiotemporal"),
    ],
    ids=["weights", "config", "model_name"],
)
def test_tampered_checkpoint_is_refused(tmp_path, mutate):
    model = _trained_like("stran")
    path = tmp_path / "stran.pt"
    save_checkpoint(path, model, name="stran", config=model.config)
    _rewrite(path, mutate)
    with pytest.raises(CheckpointIntegrityError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert str(path) in msg and "integrity" in msg and "trusted copy" in msg


def test_truncated_file_is_refused(tmp_path):
    model = _trained_like("temporal")
    path = tmp_path / "t.pt"
    save_checkpoint(path, model, name="temporal", config=model.config)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises((NotAStranCheckpointError, CheckpointIntegrityError)) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value)


def test_foreign_files_are_refused(tmp_path):
    model = build_model("temporal")
    bare = tmp_path / "bare.pt"
    torch.save(model.state_dict(), bare)
    with pytest.raises(NotAStranCheckpointError, match="bare state_dict"):
        load_checkpoint(bare)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file at all")
    with pytest.raises(NotAStranCheckpointError, match="not a ST-RAN Scar checkpoint"):
        load_checkpoint(junk)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_newer_format_is_refused(tmp_path):
    model = build_model("temporal")
    path = tmp_path / "new.pt"
    save_checkpoint(path, model, name="temporal", config=model.config)
    _rewrite(path, lambda raw: raw.__setitem__("format_version", 2))
    with pytest.raises(CheckpointCompatibilityError, match="format_version"):
        load_checkpoint(path)


def test_save_validates_name_config_and_extra(tmp_path):
    model = build_model("temporal")
    with pytest.raises(ValueError, match="unknown model"):
        save_checkpoint(tmp_path / "a.pt", model, name="nope", config={})
    with pytest.raises(TypeError, match="extra"):
        save_checkpoint(tmp_path / "b.pt", model, name="temporal", config=model.config, extra={"f": object()})
    assert not os.listdir(tmp_path)
