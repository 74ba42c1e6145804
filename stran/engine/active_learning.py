"""Active-learning simulation: the review loop replayed on a phantom cohort (``training/simulate_active_learning.py``).

The learner is what reviewing can teach the shipped model: its maps stay fixed (trained on a separate cohort with
pixel truth) and the reviewed labels (study, slice and AHA segment labels, as a reviewer submits them; no scar masks)
teach the decision stage, the wall reader, fitted with ``stran.engine.reader_fit.fit_reader`` on the labelled
studies only. Because the maps are frozen, everything expensive is computed once per study: the reader's measures
of the deterministic maps (sample 0) and of ``samples`` MC-dropout passes of the map decoder (samples 1..M: dropout
sits only in the decoder of the shipped network, so these are exactly the passes ``Detector.forward`` makes). A
round is then a reader fit and a few matrix products: the MC study probabilities of every pool study go through
``stran.engine.detect.mc_uncertainty``, the one scoring function the app's ``most_uncertain`` strategy uses.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from stran.engine.dataset import UNKNOWN, CachedStudies, StudyRecord
from stran.engine.detect import mc_uncertainty
from stran.engine.metrics import roc_auc
from stran.engine.reader_fit import Measured, fit_reader
from stran.models import enable_mc_dropout, load_checkpoint
from stran.models.maps import aha_segment_ids
from stran.models.wall_reader import WallReader
from stran.transforms.preprocess import PreprocessConfig

STRATEGIES = ("random", "entropy", "bald", "diverse")
STRATEGY_NAMES = {"random": "random (baseline)", "entropy": "MC-dropout predictive entropy (shipped most_uncertain)",
                  "bald": "BALD (mutual information)", "diverse": "uncertainty-weighted k-means (diverse batch)"}
LABEL_SETS = ("review", "study")  # review: study + slice + segment labels; study: the study label only


@dataclass
class MCMeasures:
    """The wall reader's inputs for N studies: sample 0 = deterministic maps, 1..M = MC-dropout maps."""

    ids: list[str]
    scenario: list[str]
    features: torch.Tensor  # (N, 1+M, S*18, F)
    mass: torch.Tensor  # (N, 1+M, S*18)
    apex_last: torch.Tensor  # (N,)
    study: torch.Tensor  # (N,)
    slices: torch.Tensor  # (N, S)
    segments: torch.Tensor  # (N, 17)

    def measured(self, idx: Sequence[int], labels: str = "review") -> Measured:
        """The deterministic measures of ``idx`` as ``reader_fit`` takes them; no unit truth (reviewers give no
        masks), and with ``labels="study"`` no slice or segment labels either."""
        i = torch.as_tensor(list(idx), dtype=torch.long)
        slices, segments = self.slices[i], self.segments[i]
        if labels == "study":
            slices, segments = torch.full_like(slices, UNKNOWN), torch.full_like(segments, UNKNOWN)
        unit = torch.full((len(i), self.slices.shape[1], self.features.shape[2] // self.slices.shape[1]), UNKNOWN)
        return Measured(self.features[i, 0], self.mass[i, 0], self.apex_last[i], unit, self.study[i], slices, segments)


@torch.no_grad()
def mc_measures(model: torch.nn.Module, image: torch.Tensor, geometry: torch.Tensor,
                samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Measures (1+samples, S*18, F) and masses of one study (1, 1, S, T, H, W): the backbone once, the map decoder
    once in evaluation mode and ``samples`` times with MC dropout (what ``run_model`` does on a map-head network)."""
    model.eval()
    stages, _ = model.features(image)
    feats, masses = [], []
    for k in range(1 + samples):
        enable_mc_dropout(model, k > 0)
        try:
            logits = model.decoder(image, stages)
        finally:
            enable_mc_dropout(model, False)
        f, m = model.reader.measures(image, logits, aha_segment_ids(logits, geometry))
        feats.append(f[0])
        masses.append(m[0])
    return torch.stack(feats), torch.stack(masses)


def _measure_chunk(args: tuple[str, list[StudyRecord], list[str], int, int, list[int]]) -> dict[str, torch.Tensor]:
    checkpoint, records, files, samples, seed, index = args
    torch.set_num_threads(1)
    model, _ = load_checkpoint(checkpoint)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("features", "mass", "apex_last", "study", "slices",
                                                            "segments")}
    for record, file, i in zip(records, files, index, strict=True):
        item = CachedStudies([record], [torch.load(file, map_location="cpu", weights_only=False)])[0]
        torch.manual_seed(seed * 1_000_003 + i)  # the same draws whatever the chunking
        f, m = mc_measures(model, item["image"][None], item["geometry"][None], samples)
        for key, value in (("features", f), ("mass", m), ("apex_last", item["geometry"][2]),
                           ("study", item["study_target"]), ("slices", item["slice_target"]),
                           ("segments", item["segment_target"])):
            parts[key].append(value)
    return {k: torch.stack(v) for k, v in parts.items()}


def measure_cohort(checkpoint: Path, records: Sequence[StudyRecord], cache_dir: Path, *, samples: int = 8,
                   seed: int = 0, workers: int = 2, progress: Callable[[str], None] | None = None) -> MCMeasures:
    """Preprocess (tensor cache) and measure every study with the checkpoint's frozen maps, ``workers`` processes."""
    from stran.engine.tensor_cache import build_cache
    from stran.lifetime import exit_with_parent

    _, meta = load_checkpoint(checkpoint)
    config = PreprocessConfig(**((meta.get("extra") or {}).get("train_config") or {}).get("preprocess", {}))
    files = build_cache([(r.path, r.mask_path) for r in records], config, cache_dir, workers=workers,
                        progress=progress is not None)
    n = len(records)
    bounds = np.linspace(0, n, max(1, min(workers, n)) + 1).astype(int)
    jobs = [(str(checkpoint), list(records[a:b]), [str(f) for f in files[a:b]], samples, seed, list(range(a, b)))
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    if progress:
        progress(f"measuring {n} studies ({1 + samples} map passes each, {len(jobs)} process(es))")
    if len(jobs) > 1:
        with ProcessPoolExecutor(len(jobs), initializer=exit_with_parent, initargs=(None, 0.5, os.getpid())) as pool:
            chunks = list(pool.map(_measure_chunk, jobs))
    else:
        chunks = [_measure_chunk(jobs[0])]
    parts = {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}
    return MCMeasures([r.study_id for r in records], [r.meta.get("scenario", "") for r in records], **parts)


@torch.no_grad()
def probabilities(reader: WallReader, m: MCMeasures, idx: Sequence[int]) -> np.ndarray:
    """Study probabilities (len(idx), 1+M): column 0 the deterministic pass, then the MC-dropout passes."""
    reader.eval()
    i = torch.as_tensor(list(idx), dtype=torch.long)
    n, k = len(i), m.features.shape[1]
    f = m.features[i].reshape(n * k, *m.features.shape[2:])
    apex = m.apex_last[i].repeat_interleave(k)
    logit = reader.decide(f, m.mass[i].reshape(n * k, -1), apex)["study_logit"]
    return torch.sigmoid(logit).view(n, k).numpy()


@torch.no_grad()
def embeddings(reader: WallReader, m: MCMeasures, idx: Sequence[int]) -> np.ndarray:
    """A study's place in the reader's measure space: the normalised measures averaged over its valid units and
    those of its highest-scoring unit (the one the study logit follows), deterministic maps."""
    reader.eval()
    i = torch.as_tensor(list(idx), dtype=torch.long)
    f, mass = m.features[i, 0], m.mass[i, 0]
    z = reader.norm(f.reshape(-1, f.shape[-1])).view_as(f)
    out = reader.decide(f, mass, m.apex_last[i])
    valid = out["unit_valid"].reshape(len(i), -1, 1).float()
    top = out["unit_logits"].reshape(len(i), -1).masked_fill(valid[..., 0] == 0, -1e9).argmax(dim=1)
    mean = (z * valid).sum(dim=1) / valid.sum(dim=1).clamp_min(1.0)
    return torch.cat([mean, z[torch.arange(len(i)), top]], dim=1).numpy()


def weighted_kmeans_pick(x: np.ndarray, weights: np.ndarray, k: int, rng: np.random.Generator,
                         iters: int = 20) -> list[int]:
    """Rows of ``x`` nearest to the centres of a ``weights``-weighted k-means (k-means++ start): k distinct rows."""
    k = min(k, len(x))
    w = np.clip(weights, 1e-12, None)
    centres = [x[rng.choice(len(x), p=w / w.sum())]]
    for _ in range(1, k):
        d = np.min(((x[:, None] - np.asarray(centres)[None]) ** 2).sum(-1), axis=1) * w
        centres.append(x[rng.choice(len(x), p=d / d.sum())] if d.sum() > 0 else x[rng.integers(len(x))])
    c = np.asarray(centres)
    for _ in range(iters):
        assign = ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)
        for j in range(k):
            members = assign == j
            if members.any():
                c[j] = (x[members] * w[members, None]).sum(0) / w[members].sum()
    picked: list[int] = []
    for j in range(k):  # nearest unpicked row to each centre
        order = ((x - c[j]) ** 2).sum(-1).argsort(kind="stable")
        picked.append(int(next(r for r in order if r not in picked)))
    return picked


def pick(strategy: str, reader: WallReader, m: MCMeasures, pool: Sequence[int], k: int,
         rng: np.random.Generator, *, prefilter: int = 10) -> list[int]:
    """The next ``k`` studies (indices into ``m``) of ``pool`` by ``strategy``; ties go to the pool's order."""
    pool = list(pool)
    if strategy == "random":
        return [pool[j] for j in rng.choice(len(pool), size=min(k, len(pool)), replace=False)]
    scores = [mc_uncertainty(p[1:]) for p in probabilities(reader, m, pool)]
    if strategy in ("entropy", "bald"):
        key = "entropy" if strategy == "entropy" else "mutual_information"
        order = np.argsort(-np.array([s[key] for s in scores]), kind="stable")
        return [pool[j] for j in order[:k]]
    if strategy == "diverse":  # Zhdanov 2019: the prefilter * k most uncertain, clustered, weighted by entropy
        entropy = np.array([s["entropy"] for s in scores])
        top = np.argsort(-entropy, kind="stable")[: prefilter * k]
        x = embeddings(reader, m, [pool[j] for j in top])
        return [pool[top[j]] for j in weighted_kmeans_pick(x, entropy[top], k, rng)]
    raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")


def fit(m: MCMeasures, labelled: Sequence[int], *, labels: str, epochs: int, seed: int) -> WallReader:
    """A fresh wall reader fitted on the labelled studies only (``fit_reader``; no separate validation studies: the
    labelled ones select the epoch, as few labels leave none to spare)."""
    torch.manual_seed(seed)
    holder = SimpleNamespace(reader=WallReader())
    data = m.measured(labelled, labels)
    fit_reader(holder, data, data, epochs=epochs, seed=seed)  # type: ignore[arg-type]
    return holder.reader


def held_out_auc(reader: WallReader, m: MCMeasures, held_out: Sequence[int]) -> float:
    """Study AUC of the deterministic pass on the held-out studies."""
    y = m.study[torch.as_tensor(list(held_out))].numpy().astype(int)
    return float(roc_auc(y, probabilities(reader, m, held_out)[:, 0]))


def simulate(m: MCMeasures, strategy: str, seed_set: Sequence[int], pool: Sequence[int], held_out: Sequence[int], *,
             k: int, rounds: int, seed: int, labels: str = "review", epochs: int = 150,
             log: Callable[[str], None] | None = None) -> dict:
    """One repeat of one strategy: fit on the seed set, then ``rounds`` times pick k, "review" them (their truth
    labels join the labelled set), refit, evaluate. Returns the curve and the picks."""
    if set(seed_set) & set(pool) or set(seed_set) & set(held_out) or set(pool) & set(held_out):
        raise ValueError("seed set, pool and held-out set must be disjoint")
    rng = np.random.default_rng(seed)
    labelled, remaining, picks = list(seed_set), list(pool), []
    reader = fit(m, labelled, labels=labels, epochs=epochs, seed=seed)
    n_labels, aucs = [len(labelled)], [held_out_auc(reader, m, held_out)]
    for r in range(rounds):
        if not remaining:
            break
        chosen = pick(strategy, reader, m, remaining, k, rng)
        picks.append([m.ids[i] for i in chosen])
        labelled += chosen
        remaining = [i for i in remaining if i not in set(chosen)]
        reader = fit(m, labelled, labels=labels, epochs=epochs, seed=seed)
        n_labels.append(len(labelled))
        aucs.append(held_out_auc(reader, m, held_out))
        if log:
            log(f"{strategy:8s} seed {seed}: round {r + 1}/{rounds}, {len(labelled)} labels, held-out AUC {aucs[-1]:.3f}")
    return {"strategy": strategy, "seed": seed, "n_labels": n_labels, "auc": aucs, "picks": picks,
            "seed_set": [m.ids[i] for i in seed_set]}


def labels_to_reach(n_labels: Sequence[int], auc: Sequence[float], target: float) -> float | None:
    """Labels at which a (mean) learning curve first reaches ``target`` (linear between rounds); None if never."""
    for j, (n, a) in enumerate(zip(n_labels, auc, strict=True)):
        if a >= target:
            if j == 0:
                return float(n)
            n0, a0 = n_labels[j - 1], auc[j - 1]
            return float(n0 + (n - n0) * (target - a0) / (a - a0))
    return None
