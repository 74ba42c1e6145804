"""The active-learning simulation (stran.engine.active_learning, training/simulate_active_learning.py).

The fast tests run the loop on synthetic measures in which one measure carries the label (so labels matter and a
broken loop shows); the slow one runs ``--quick`` end to end: a tiny phantom cohort, the shipped model's frozen maps.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stran.engine import active_learning as al
from stran.engine import detect
from stran.models.wall_reader import N_FEATURES, N_IDS

REPO = Path(__file__).resolve().parents[2]
SLICES, SAMPLES = 4, 3


@pytest.fixture(scope="module")
def measures() -> al.MCMeasures:
    """60 studies, half scar; scar studies have a few units whose first measures are low (dark wall)."""
    torch.manual_seed(0)
    n, units = 60, SLICES * N_IDS
    study = torch.tensor([i % 2 for i in range(n)], dtype=torch.float32)
    features = torch.randn(n, 1 + SAMPLES, units, N_FEATURES) * 0.1 + 1.0
    for i in range(n):
        if study[i] == 1:
            hit = torch.randperm(units)[:3]
            features[i, :, hit, :3] -= 0.15 * (1 + torch.rand(1))
    features += torch.randn_like(features) * 0.05  # MC passes differ
    return al.MCMeasures(
        ids=[f"S{i:03d}" for i in range(n)], scenario=["A" if i % 2 else "D" for i in range(n)],
        features=features, mass=torch.full((n, 1 + SAMPLES, units), 10.0), apex_last=torch.zeros(n),
        study=study, slices=torch.full((n, SLICES), al.UNKNOWN), segments=torch.full((n, 17), al.UNKNOWN))


def _sets() -> tuple[list[int], list[int], list[int]]:
    return list(range(0, 4)), list(range(4, 40)), list(range(40, 60))


@pytest.mark.parametrize("strategy", al.STRATEGIES)
def test_loop_picks_new_studies_and_curves_have_one_point_per_round(measures, strategy):
    seed_set, pool, held = _sets()
    run = al.simulate(measures, strategy, seed_set, pool, held, k=5, rounds=3, seed=1, epochs=15)
    picked = [s for batch in run["picks"] for s in batch]
    assert len(picked) == len(set(picked)) == 15  # never the same study twice
    ids = set(measures.ids)
    assert set(picked) <= {measures.ids[i] for i in pool} and set(picked) & {measures.ids[i] for i in seed_set} == set()
    assert set(picked) <= ids
    assert run["n_labels"] == [4, 9, 14, 19] and len(run["auc"]) == 4
    assert all(0.0 <= a <= 1.0 for a in run["auc"])


def test_disjoint_sets_are_required(measures):
    with pytest.raises(ValueError, match="disjoint"):
        al.simulate(measures, "random", [0, 1], [1, 2, 3], [10, 11], k=1, rounds=1, seed=0, epochs=2)
    with pytest.raises(ValueError, match="disjoint"):
        al.simulate(measures, "random", [0, 1], [2, 3], [3, 11], k=1, rounds=1, seed=0, epochs=2)


def test_random_with_a_fixed_seed_is_reproducible_and_seeds_differ(measures):
    seed_set, pool, held = _sets()
    a = al.simulate(measures, "random", seed_set, pool, held, k=4, rounds=2, seed=3, epochs=10)
    b = al.simulate(measures, "random", seed_set, pool, held, k=4, rounds=2, seed=3, epochs=10)
    c = al.simulate(measures, "random", seed_set, pool, held, k=4, rounds=2, seed=4, epochs=10)
    assert a["picks"] == b["picks"] and a["auc"] == b["auc"]
    assert a["picks"] != c["picks"]


def test_labels_teach_the_reader(measures):
    seed_set, pool, held = _sets()
    few = al.held_out_auc(al.fit(measures, seed_set, labels="study", epochs=40, seed=0), measures, held)
    many = al.held_out_auc(al.fit(measures, seed_set + pool, labels="study", epochs=40, seed=0), measures, held)
    assert many > 0.85 and many > few + 0.2  # 4 labels: near chance; 40: separates


@pytest.mark.parametrize(("strategy", "key"), [("entropy", "entropy"), ("bald", "mutual_information")])
def test_uncertainty_strategies_rank_by_the_apps_scoring_function(measures, monkeypatch, strategy, key):
    assert al.mc_uncertainty is detect.mc_uncertainty  # one scoring function for the app and the simulation
    seed_set, pool, _ = _sets()
    reader = al.fit(measures, seed_set, labels="review", epochs=10, seed=0)
    calls: list[int] = []
    monkeypatch.setattr(al, "mc_uncertainty", lambda p: calls.append(len(p)) or detect.mc_uncertainty(p))
    picked = al.pick(strategy, reader, measures, pool, 3, np.random.default_rng(0))
    assert calls == [SAMPLES] * len(pool)  # every pool study scored from its MC passes (not the deterministic one)
    probs = al.probabilities(reader, measures, pool)[:, 1:]
    scores = np.array([detect.mc_uncertainty(p)[key] for p in probs])
    assert picked == [pool[j] for j in np.argsort(-scores, kind="stable")[:3]]


def test_weighted_kmeans_picks_distinct_rows_one_per_cluster():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, 0.05, size=(10, 2)) for c in ((0, 0), (5, 0), (0, 5))])
    picked = al.weighted_kmeans_pick(x, np.ones(len(x)), 3, rng)
    assert len(set(picked)) == 3 and sorted(p // 10 for p in picked) == [0, 1, 2]


def test_labels_to_reach_interpolates_and_says_never():
    assert al.labels_to_reach([10, 20, 30], [0.6, 0.7, 0.8], 0.75) == pytest.approx(25.0)
    assert al.labels_to_reach([10, 20], [0.8, 0.9], 0.7) == 10.0
    assert al.labels_to_reach([10, 20], [0.6, 0.7], 0.75) is None


@pytest.mark.slow
def test_quick_simulation_end_to_end(tmp_path):
    sys.path.insert(0, str(REPO / "training"))
    import simulate_active_learning as sim

    from stran.engine.dataset import build_dataset
    from stran.models import load_checkpoint, run_model
    from stran.transforms.preprocess import PreprocessConfig

    result = sim.main(["--quick", "--work", str(tmp_path), "--workers", "1"])
    out = tmp_path / "active_learning_quick"
    assert (out / "learning_curves.png").stat().st_size > 10_000 and "| labels |" in (out / "results.md").read_text()
    saved = json.loads((out / "results.json").read_text())
    assert saved["summary"]["curves"].keys() == set(al.STRATEGIES)
    q = sim.QUICK
    held = set(saved["held_out"])
    assert len(held) == q["held_out"]
    for run in saved["runs"]:
        picked = [s for batch in run["picks"] for s in batch]
        assert len(picked) == len(set(picked)) == q["k"] * q["rounds"]
        assert not (set(picked) | set(run["seed_set"])) & held and not set(picked) & set(run["seed_set"])
        assert run["n_labels"] == [q["seed_size"] + q["k"] * r for r in range(q["rounds"] + 1)]
    # a repeat's seed set is the same for every strategy; random is reproducible from its seed
    assert sim.main(["--quick", "--work", str(tmp_path), "--workers", "1", "--strategies", "random",
                     "--out", str(tmp_path / "again")])["runs"] == [r for r in result["runs"] if r["strategy"] == "random"]
    # the cached measures are the shipped model's own: its reader on them gives the network's study probability
    args = sim.parse_args(["--quick", "--work", str(tmp_path)])
    records = sim.cohort_records(args)
    m = sim.load_measures(args, records)
    model, meta = load_checkpoint(args.checkpoint)
    ds = build_dataset(records[:2], PreprocessConfig(**meta["extra"]["train_config"]["preprocess"]),
                       cache_dir=tmp_path / "cache")
    with torch.no_grad():
        for i in range(2):
            net = torch.sigmoid(run_model(model, ds[i]["image"][None], ds[i]["geometry"][None])["study_logit"])
            assert al.probabilities(model.reader, m, [i])[0, 0] == pytest.approx(float(net[0]), abs=1e-5)
