"""Drift from a stored reference profile agrees with drift from the raw reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops_pipelines.monitoring.drift import detect_drift
from mlops_pipelines.monitoring.profile import ReferenceProfile, build_profile, detect_drift_from_profile

RNG = np.random.default_rng(5)


@pytest.mark.parametrize("n", [500, 50_000])
def test_profile_matches_raw_reference(n):
    reference = pd.DataFrame({
        "delay": np.where(RNG.random(n) < 0.05, np.nan, RNG.gamma(2, 10, n)),
        "hour": RNG.integers(5, 23, n).astype(float),   # many ties: a discrete column
        "carrier": RNG.choice(["AA", "UA", "DL", None], n),
    })
    current = pd.DataFrame({
        "delay": RNG.gamma(2.3, 10, n // 2),
        "hour": RNG.integers(6, 23, n // 2).astype(float),
        "carrier": RNG.choice(["AA", "UA", "B6"], n // 2),
    })
    profile = ReferenceProfile.from_json(build_profile(reference, categorical=["carrier"]).to_json())
    raw = detect_drift(reference, current, categorical=["carrier"])
    stored = detect_drift_from_profile(profile, current)
    for a, b in zip(raw.columns, stored.columns, strict=True):
        assert a.column == b.column
        assert b.psi == pytest.approx(a.psi, abs=1e-12)
        assert b.jensen_shannon == pytest.approx(a.jensen_shannon, abs=1e-12)
        assert b.statistic == pytest.approx(a.statistic, abs=2 / profile.resolution if a.kind == "numeric" else 1e-9)
        assert (b.reference_null_share, b.current_null_share) == pytest.approx(
            (a.reference_null_share, a.current_null_share))
        if a.kind == "numeric":
            assert b.wasserstein_normalised == pytest.approx(a.wasserstein_normalised, abs=0.01)
    assert stored.drifted_columns == raw.drifted_columns
