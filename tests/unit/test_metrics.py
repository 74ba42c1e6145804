"""Metrics against values computed by hand on small inputs."""

from __future__ import annotations

import numpy as np
import pytest

from stran.engine.metrics import (
    bootstrap_ci,
    expected_calibration_error,
    reliability_curve,
    roc_auc,
    threshold_metrics,
    youden_threshold,
)

Y = np.array([0, 0, 1, 1, 0, 1])
P = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])


def test_auc_by_hand():
    # positives 0.35, 0.8, 0.9 vs negatives 0.1, 0.4, 0.2: 8 of 9 pairs ordered correctly (0.35 < 0.4)
    assert roc_auc(Y, P) == pytest.approx(8 / 9)


def test_auc_counts_ties_as_half():
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)


def test_auc_undefined_with_one_class():
    assert np.isnan(roc_auc(np.array([1, 1]), np.array([0.2, 0.9])))


def test_threshold_metrics_by_hand():
    m = threshold_metrics(Y, P, 0.3)  # predicted positive: 0.4, 0.35, 0.8, 0.9
    assert (m.tp, m.fp, m.tn, m.fn) == (3, 1, 2, 0)
    assert m.accuracy == pytest.approx(5 / 6)
    assert m.sensitivity == pytest.approx(1.0)
    assert m.specificity == pytest.approx(2 / 3)
    assert m.precision == pytest.approx(3 / 4)
    assert m.f1 == pytest.approx(2 * 3 / (2 * 3 + 1 + 0))


def test_youden_threshold_picks_the_best_cut():
    # at 0.35: sens 1, spec 2/3 (J = 2/3); at 0.8: sens 2/3, spec 1 (J = 2/3); 0.35 comes first (lower threshold)
    t = youden_threshold(Y, P)
    m = threshold_metrics(Y, P, t)
    assert m.sensitivity + m.specificity - 1 == pytest.approx(2 / 3)


def test_ece_by_hand():
    y = np.array([1, 0, 1, 1])
    p = np.array([0.9, 0.9, 0.1, 0.1])
    # bin 9: mean p 0.9, observed 0.5 -> |0.4| * 2/4; bin 1: mean p 0.1, observed 1.0 -> |0.9| * 2/4
    assert expected_calibration_error(y, p) == pytest.approx(0.4 * 0.5 + 0.9 * 0.5)
    curve = reliability_curve(y, p)
    assert [(c["bin"], c["count"]) for c in curve] == [(1, 2), (9, 2)]


def test_bootstrap_ci_brackets_the_estimate_and_is_reproducible():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(50), np.ones(50)].astype(int)
    p = np.r_[rng.normal(0.4, 0.15, 50), rng.normal(0.6, 0.15, 50)]
    lo, hi = bootstrap_ci(roc_auc, y, p, n_boot=500, seed=1)
    assert lo < roc_auc(y, p) < hi and hi - lo < 0.3
    assert (lo, hi) == bootstrap_ci(roc_auc, y, p, n_boot=500, seed=1)
