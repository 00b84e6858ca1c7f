"""Drift: the population stability index per feature, recent sessions against the training window."""

from __future__ import annotations

import numpy as np

from engine.ml.insight import PSI_MAJOR, PSI_MODERATE, drift_reading, out_of_range, psi, usual_psi


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shifted_one() -> None:
    rng = np.random.default_rng(4)
    train = rng.normal(0.0, 1.0, (1000, 3))
    train[::17, 2] = np.nan  # missing values are ignored, not binned
    now = np.column_stack([rng.normal(0.0, 1.0, 200), rng.normal(1.0, 1.0, 200), rng.normal(0.0, 1.0, 200)])
    value = psi(train, now)
    assert value[0] < PSI_MODERATE and value[2] < PSI_MODERATE
    assert value[1] > PSI_MAJOR  # a one-sigma shift of the mean
    assert np.isnan(psi(train[:, :1], np.full((5, 1), 0.3)))[0]  # too few recent values to bin
    assert psi(train[:, 0], train[:, 0])[0] < 1e-9  # a sample against itself


def test_a_slow_feature_reads_shifted_only_beyond_what_its_own_training_windows_show() -> None:
    rng = np.random.default_rng(9)
    slow = np.cumsum(rng.normal(0.0, 1.0, 1500))  # a random walk: any 60-row window sits in a few bins
    fast = rng.normal(0.0, 1.0, 1500)
    train = np.column_stack([slow, fast])
    usual = usual_psi(train, 60)
    assert usual[0] > max(PSI_MAJOR, usual[1])  # a slow feature scores far higher in its own windows
    inside = psi(train, train[600:660])  # one of the training window's own blocks
    assert inside[0] > PSI_MAJOR  # the rule of thumb alone would call it shifted ...
    assert drift_reading(float(inside[0]), float(usual[0])) == "as in training"  # ... but the model saw it
    recent = np.column_stack([np.full(60, slow.max() + 50.0), rng.normal(3.0, 1.0, 60)])
    far, outside = psi(train, recent), out_of_range(train, recent)
    assert outside[0] == 1.0 and drift_reading(float(far[0]), float(usual[0]), float(outside[0])) == "shifted"
    assert drift_reading(float(far[1]), float(usual[1]), float(outside[1])) == "shifted"
    assert out_of_range(train, train[600:660])[0] == 0.0
    assert drift_reading(None, None) == "—"
