"""Training on 2 CPU processes (torchrun, gloo on 127.0.0.1) gives the weights of the 1-process run with the same
global batch; only rank 0 writes; a ``state.pt`` resumes under torchrun; ``--distributed`` without torchrun's
environment is one line saying how to launch.

The comparison runs in float64 (measured: 4.6e-12), so that only rounding can differ; in float32 the two runs sum
the same numbers in another order and end up to 1.8e-5 apart (docs/training.md). The configuration's loss terms are means over equal shares of the global batch (study, slice and segment labels; no
dropout, no augmentation), the case in which DDP's average of the ranks' gradients is the 1-process gradient.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stran.resources import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

STUDIES = REPO / "sample_data" / "studies"  # made on first use (stran.serve.ensure_samples): a fresh clone has none
TOLERANCE = 1e-9  # max abs weight difference in float64 (measured: 4.6e-12)
CONFIG = {"model": "stran", "model_config": {"widths": [4, 8, 8, 16], "map_channels": 8, "dropout": 0.0},
          "epochs": 2, "batch_size": 2, "lr": 3e-3, "seed": 3, "augment": False, "refit_reader": False,
          "num_threads": 1, "patience": 10, "pixel_loss_weight": 0.0, "unit_loss_weight": 0.0,
          "preprocess": {"n_slices": 8, "n_phases": 16, "size": 64, "spacing_mm": 1.8}}

SCRIPT = r'''
import json, os, shutil, sys
import torch
torch.set_default_dtype(torch.float64)
from stran.engine import distributed, trainer as trainer_mod
from stran.engine.dataset import find_studies, split_records
from stran.engine.trainer import TrainConfig, Trainer

studies, out, cache, config, logs, snapshot = sys.argv[1:7]
ctx = distributed.init() if distributed.launched_by_torchrun() else distributed.SINGLE
writes = []

def recorded(fn):
    def call(path, *args, **kwargs):
        writes.append(os.path.basename(str(path)))
        return fn(path, *args, **kwargs)
    return call

for name in ("atomic_path", "atomic_write_text", "save_checkpoint"):
    setattr(trainer_mod, name, recorded(getattr(trainer_mod, name)))
on = trainer_mod._on
trainer_mod._on = lambda batch, device: {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v
                                         for k, v in on(batch, device).items()}

def keep_first_epoch(event):  # a copy of the run folder as a run killed after its first epoch leaves it
    if snapshot != "-" and event["event"] == "epoch" and event["epoch"] == 0:
        shutil.copytree(out, snapshot)

train, val = split_records(find_studies(studies, require_labels=True), [0.6, 0.4], seed=0)
result = Trainer(TrainConfig(**json.loads(config)), train, val, out, cache_dir=cache).fit(
    progress=False, callback=keep_first_epoch)
with open(os.path.join(logs, f"rank{ctx.rank}.json"), "w") as fh:
    json.dump({"writes": writes, "train_loss": [h.train_loss for h in result.history],
               "resumed_from": result.resumed_from_epoch, "world_size": ctx.world_size}, fh)
distributed.shutdown()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                           "MASTER_PORT")}
    return {**env, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}


def _train(tmp: Path, name: str, cache: Path, *, processes: int, out: Path | None = None,
           snapshot: Path | None = None) -> dict[int, dict]:
    script, logs = tmp / "train.py", tmp / f"logs-{name}"
    script.write_text(SCRIPT)
    logs.mkdir()
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr",
                     "127.0.0.1", "--master_port", str(_free_port())]
    from stran.serve import ensure_samples

    args = [str(script), str(ensure_samples(STUDIES)), str(out or tmp / name), str(cache), json.dumps(CONFIG), str(logs),
            str(snapshot or "-")]
    proc = subprocess.run(launcher + args, capture_output=True, text=True, timeout=240, env=_env())
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return {int(p.stem[4:]): json.loads(p.read_text()) for p in logs.glob("rank*.json")}


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "state.pt", map_location="cpu", weights_only=False)["model"]


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    cache = tmp / "cache"
    one = _train(tmp, "one", cache, processes=1, snapshot=tmp / "after-epoch-1")
    two = _train(tmp, "two", cache, processes=2)
    shutil.copytree(tmp / "after-epoch-1", tmp / "resumed")
    resumed = _train(tmp, "resumed", cache, processes=2, out=tmp / "resumed")
    return tmp, one, two, resumed


def test_two_processes_give_the_one_process_weights(runs):
    tmp, one, two, _ = runs
    assert two[0]["world_size"] == 2 and set(two) == {0, 1}
    difference = _max_difference(_weights(tmp / "one"), _weights(tmp / "two"))
    assert difference < TOLERANCE, f"max abs weight difference {difference:.3g}"
    assert two[0]["train_loss"] == two[1]["train_loss"]  # every rank reports the group's loss
    assert two[0]["train_loss"] == pytest.approx(one[0]["train_loss"], rel=1e-6)
    print(f"max abs weight difference, 1 vs 2 processes: {difference:.3g}")


def test_only_rank_0_writes(runs):
    tmp, _, two, _ = runs
    assert two[1]["writes"] == []
    assert {"best.pt", "state.pt", "history.json"} <= set(two[0]["writes"])
    assert sorted(p.name for p in (tmp / "two").iterdir()) == ["best.pt", "history.json", "state.pt"]


def test_a_state_resumes_under_torchrun(runs):
    """The state a 1-process run left after its first epoch, resumed by 2 processes, ends where both others end."""
    tmp, _, _, resumed = runs
    assert resumed[0]["resumed_from"] == resumed[1]["resumed_from"] == 1
    assert _max_difference(_weights(tmp / "one"), _weights(tmp / "resumed")) < TOLERANCE


def test_distributed_without_torchrun_says_how_to_launch(tmp_path, capsys, monkeypatch):
    from stran.cli import main

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert main(["train", str(tmp_path), "--out", str(tmp_path / "run"), "--distributed"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "torchrun" in err[0] and "--nproc_per_node" in err[0]


def test_a_one_process_run_trains_where_it_is_told(tmp_path, capsys):
    """``auto`` takes the GPU when PyTorch sees one, else the CPU; ``cuda`` without one is a one-line error."""
    from stran.cli import main
    from stran.engine import distributed

    cuda = torch.cuda.is_available()
    assert distributed.single("auto").device.type == ("cuda" if cuda else "cpu")
    assert distributed.single("cpu").device.type == "cpu"
    with pytest.raises(ValueError, match="'gpu' is not one of"):
        distributed.single("gpu")
    if not cuda:
        assert main(["train", str(tmp_path), "--out", str(tmp_path / "run"), "--device", "cuda"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "sees no CUDA GPU" in err[0] and "--device cpu" in err[0]
        assert not (tmp_path / "run").exists()  # nothing written
