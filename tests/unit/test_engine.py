"""The training engine on a tiny phantom cohort: learning, checkpoints, resume after a kill, determinism,
evaluation (and its refusal of a test set that overlaps training)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from stran.engine.dataset import find_studies, split_records
from stran.engine.evaluate import HeldOutOverlapError, evaluate_checkpoint
from stran.engine.trainer import STATE_FILE, TrainConfig, Trainer, TrainingStateMismatch
from stran.models import load_checkpoint
from stran.phantom import generate_cohort
from stran.transforms import PreprocessConfig

pytestmark = pytest.mark.timeout(900)

SMALL = {"widths": [4, 8, 8, 16], "map_channels": 8}
PREP = {"n_slices": 8, "n_phases": 16, "size": 64, "spacing_mm": 1.8}


def small_config(**kw) -> TrainConfig:
    base = dict(model="stran", model_config=SMALL, epochs=3, batch_size=2, lr=3e-3, seed=3, preprocess=PREP, patience=10)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort")
    generate_cohort(out, 10, 42, workers=2, progress=False)
    return out


@pytest.fixture(scope="module")
def splits(cohort):
    records = find_studies(cohort, require_labels=True)
    train, val = split_records(records, [0.6, 0.4], seed=0)
    return train, val


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_records_have_labels_and_metadata(cohort):
    records = find_studies(cohort, require_labels=True)
    assert len(records) == 10
    assert {r.label.study_label for r in records} == {0, 1}
    assert all(r.meta["scenario"] in "ABCD" for r in records)
    assert any(len(r.label.slice_labels) > 0 for r in records)


def test_split_is_deterministic_stratified_and_disjoint(cohort):
    records = find_studies(cohort, require_labels=True)
    a = split_records(records, [0.6, 0.4], seed=0)
    b = split_records(records, [0.6, 0.4], seed=0)
    assert [r.study_id for r in a[0]] == [r.study_id for r in b[0]]
    assert not {r.study_id for r in a[0]} & {r.study_id for r in a[1]}
    assert {r.label.study_label for r in a[1]} == {0, 1}


def test_training_lowers_the_loss_and_writes_a_loadable_checkpoint(splits, cache, tmp_path):
    train, val = splits
    result = Trainer(small_config(epochs=4, augment=False), train, val, tmp_path, cache_dir=cache).fit(progress=False)
    losses = [h.train_loss for h in result.history]
    assert losses[-1] < losses[0]
    model, meta = load_checkpoint(result.best_checkpoint)
    assert meta["model_name"] == "stran" and meta["extra"]["train_ids"] == sorted(r.study_id for r in train)
    assert 0.0 <= meta["extra"]["threshold"] <= 1.0
    out = model(torch.rand(1, 1, 8, 16, 64, 64))
    assert out["slice_logits"].shape == (1, 8)


def test_same_seed_same_result(splits, cache, tmp_path):
    train, val = splits
    a = Trainer(small_config(epochs=2), train, val, tmp_path / "a", cache_dir=cache).fit(progress=False)
    b = Trainer(small_config(epochs=2), train, val, tmp_path / "b", cache_dir=cache).fit(progress=False)
    assert [h.train_loss for h in a.history] == [h.train_loss for h in b.history]
    assert load_checkpoint(a.best_checkpoint)[1]["sha256"] == load_checkpoint(b.best_checkpoint)[1]["sha256"]


TRAIN_SCRIPT = """
import sys, json
from stran.engine.dataset import find_studies, split_records
from stran.engine.trainer import Trainer, TrainConfig
cohort, out, cache = sys.argv[1:4]
records = find_studies(cohort, require_labels=True)
train, val = split_records(records, [0.6, 0.4], seed=0)
config = TrainConfig(**json.loads(sys.argv[4]))
result = Trainer(config, train, val, out, cache_dir=cache).fit(progress=False)
print(json.dumps([h.train_loss for h in result.history]))
"""


def run_training(cohort: Path, out: Path, cache: Path, config: dict, kill_after_epoch: int | None = None) -> list[float]:
    args = [sys.executable, "-c", TRAIN_SCRIPT, str(cohort), str(out), str(cache), json.dumps(config)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if kill_after_epoch is None:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]
        return json.loads(stdout.strip().splitlines()[-1])
    state = out / STATE_FILE
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if state.exists() and torch.load(state, weights_only=False)["epoch"] >= kill_after_epoch:
            break
        time.sleep(0.2)
    time.sleep(1.0)  # let it get into the next epoch
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return []


def test_kill_mid_epoch_then_resume_gives_the_uninterrupted_result(cohort, cache, tmp_path):
    config = {"model": "stran", "model_config": SMALL, "epochs": 3, "batch_size": 2, "lr": 3e-3, "seed": 5,
              "preprocess": PREP, "patience": 10}
    reference = run_training(cohort, tmp_path / "ref", cache, config)
    run_training(cohort, tmp_path / "run", cache, config, kill_after_epoch=0)
    leftovers = [p.name for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]
    assert not leftovers, f"half-written files left behind: {leftovers}"
    load_checkpoint(tmp_path / "run" / "best.pt")  # the checkpoint on disk is valid right after the kill
    resumed = run_training(cohort, tmp_path / "run", cache, config)
    np.testing.assert_allclose(resumed, reference, rtol=1e-5)


def test_resuming_with_other_options_is_refused(splits, cache, tmp_path):
    train, val = splits
    Trainer(small_config(epochs=1), train, val, tmp_path, cache_dir=cache).fit(progress=False)
    with pytest.raises(TrainingStateMismatch, match="other options"):
        Trainer(small_config(epochs=1, lr=1e-2), train, val, tmp_path, cache_dir=cache).fit(progress=False)


def test_invalid_options_are_refused():
    with pytest.raises(ValueError, match="epochs"):
        small_config(epochs=0)
    with pytest.raises(ValueError, match="lr"):
        small_config(lr=5.0)


def test_evaluation_writes_reports_and_refuses_overlap(splits, cache, cohort, tmp_path):
    train, val = splits
    result = Trainer(small_config(epochs=1), train, val, tmp_path / "run", cache_dir=cache).fit(progress=False)
    with pytest.raises(HeldOutOverlapError, match="held-out"):
        evaluate_checkpoint(result.best_checkpoint, train, tmp_path / "eval")
    held_out = find_studies(cohort, require_labels=True)
    fresh = [r for r in held_out if r.study_id not in {x.study_id for x in train + val}]
    assert not fresh  # every study was used: build a fresh held-out cohort
    test_dir = tmp_path / "test-cohort"
    generate_cohort(test_dir, 4, 43, workers=1, progress=False)
    report = evaluate_checkpoint(result.best_checkpoint, find_studies(test_dir), tmp_path / "eval", n_boot=200,
                                 cache_dir=cache)
    for name in ("metrics.json", "metrics.md", "predictions.csv", "roc.png", "reliability.png"):
        assert (tmp_path / "eval" / name).stat().st_size > 0
    assert report["n_studies"] == 4 and {k for k in report["by_scenario"] if " vs " not in k} <= set("ABCD")
    assert 0.0 <= report["auc"]["value"] <= 1.0


def test_preprocess_config_round_trips_through_the_checkpoint(splits, cache, tmp_path):
    train, val = splits
    result = Trainer(small_config(epochs=1), train, val, tmp_path, cache_dir=cache).fit(progress=False)
    meta = load_checkpoint(result.best_checkpoint)[1]
    assert PreprocessConfig(**meta["extra"]["train_config"]["preprocess"]) == PreprocessConfig(**PREP)


def test_train_command_logs_scalars_for_tensorboard(cohort, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from stran.cli import main

    out = tmp_path / "run"
    argv = ["train", str(cohort), "--out", str(out), "--model-config", json.dumps(SMALL), "--epochs", "2",
            "--batch-size", "3", "--val-split", "0.4", "--tensorboard"]
    assert main(argv) == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    history = json.loads((out / "history.json").read_text())
    assert [e.value for e in events.Scalars("val/loss")] == pytest.approx([h["val_loss"] for h in history])
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    assert len(events.Scalars("train/step_loss")) == 2 * 2  # 6 training studies in batches of 3, two epochs


def test_fine_tuning_reports_the_starting_weights_loss_and_keeps_to_its_time_budget(splits, cache, tmp_path):
    """The loss the starting weights have on the validation studies (what a retrained model must beat) comes back
    with the result; with a time budget smaller than one epoch, training stops after the first epoch."""
    train, val = splits
    first = Trainer(small_config(epochs=1, refit_reader=False), train, val, tmp_path / "a", cache_dir=cache)
    start = first.fit(progress=False)
    assert start.initial_val_loss is None  # a random initialisation is nothing to defend
    tuned = Trainer(small_config(epochs=5, refit_reader=False, init_checkpoint=str(start.best_checkpoint),
                                 time_budget_s=1e-3), train, val, tmp_path / "b", cache_dir=cache).fit(progress=False)
    assert tuned.initial_val_loss == pytest.approx(start.best_val_loss, rel=1e-4)
    assert len(tuned.history) == 1 and tuned.stopped_by_budget
