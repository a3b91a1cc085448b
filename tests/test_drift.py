"""Drift statistics against scipy's references, and the edge cases of real data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mlops_pipelines.monitoring.drift import DriftThresholds, detect_drift, psi

RNG = np.random.default_rng(13)


def _column(report, name):
    return next(c for c in report.columns if c.column == name)


@pytest.mark.parametrize("n", [30, 2000, 20000])
def test_ks_and_wasserstein_equal_scipy(n):
    ref, cur = RNG.normal(0, 2, n), RNG.normal(0.3, 2.5, n + 7)
    col = _column(detect_drift(pd.DataFrame({"x": ref}), pd.DataFrame({"x": cur})), "x")
    expected = stats.ks_2samp(ref, cur)
    assert col.statistic == pytest.approx(expected.statistic, abs=1e-9)
    assert col.p_value == pytest.approx(expected.pvalue, abs=1e-9)
    assert col.wasserstein_normalised * np.std(ref) == pytest.approx(stats.wasserstein_distance(ref, cur), abs=1e-9)


def test_chi2_equals_scipy_on_the_aligned_table_with_a_new_category():
    ref = pd.Series(["AA"] * 50 + ["UA"] * 30 + ["DL"] * 20)
    cur = pd.Series(["AA"] * 40 + ["UA"] * 30 + ["DL"] * 20 + ["ZZ"] * 10)  # ZZ unseen in reference
    col = _column(detect_drift(pd.DataFrame({"c": ref}), pd.DataFrame({"c": cur})), "c")
    table = np.array([[50, 30, 20, 0], [40, 30, 20, 10]])
    statistic, p_value, _, _ = stats.chi2_contingency(table, correction=False)
    assert (col.test, col.statistic, col.p_value) == ("chi2", pytest.approx(statistic), pytest.approx(p_value))
    assert col.drift and col.decided_by == "p_value"


@pytest.mark.parametrize(
    ("reference", "current", "drift", "test"),
    [
        ([5.0] * 100, [5.0] * 100, False, "ks"),                    # constant and equal: no drift
        ([5.0] * 100, [6.0] * 100, True, "ks"),                     # constant, moved
        ([np.nan] * 50, [np.nan] * 50, False, "none"),              # all null on both sides
        ([1.0, 2.0, 3.0] * 20, [np.nan] * 60, True, "none"),        # became all null
        ([1.0, np.inf, 2.0, -np.inf, np.nan] * 20, [2.0, np.nan, 1.0, np.inf, -np.inf] * 20, False, "ks"),  # left out
        ([1.0, 2.0] * 50, [1.0, 2.0, np.nan, np.nan, np.nan] * 20, True, "ks"),  # 60% newly missing: drift
        ([1.0, 2.0], [1.5], False, "ks"),                           # tiny samples: a test, no alarm
    ],
    ids=["constant", "constant-moved", "all-null", "became-null", "nan-inf", "newly-missing", "tiny"],
)
def test_numeric_edge_cases(reference, current, drift, test):
    col = _column(detect_drift(pd.DataFrame({"x": reference}), pd.DataFrame({"x": current})), "x")
    assert (col.drift, col.test) == (drift, test)


def test_single_category_on_both_sides_does_not_drift():
    col = _column(detect_drift(pd.DataFrame({"c": ["a"] * 10}), pd.DataFrame({"c": ["a"] * 99})), "c")
    assert (col.statistic, col.p_value, col.drift) == (0.0, 1.0, False)


def test_large_samples_do_not_alarm_on_a_negligible_shift():
    # 1e6 rows each: KS rejects a 0.01-sigma shift, the distance rule does not.
    ref, cur = RNG.normal(0, 1, 1_000_000), RNG.normal(0.01, 1, 1_000_000)
    col = _column(detect_drift(pd.DataFrame({"x": ref}), pd.DataFrame({"x": cur})), "x")
    assert col.p_value < 0.05 and not col.drift and col.decided_by == "wasserstein"


def test_thresholds_can_be_set_per_column():
    ref, cur = RNG.normal(0, 1, 20000), RNG.normal(0.05, 1, 20000)
    frames = pd.DataFrame({"a": ref, "b": ref}), pd.DataFrame({"a": cur, "b": cur})
    report = detect_drift(*frames, column_thresholds={"b": {"wasserstein": 0.01}})
    assert report.drifted_columns == ["b"] and report.share_drifted == 0.5


def test_psi_floors_empty_bins():
    assert psi(np.array([0.5, 0.5, 0.0]), np.array([0.5, 0.4, 0.1])) == pytest.approx(
        (0.1 - 1e-4) * np.log(0.1 / 1e-4) + (0.4 - 0.5) * np.log(0.4 / 0.5))


def test_report_shapes():
    report = detect_drift(pd.DataFrame({"x": [1.0, 2.0, 3.0], "c": list("abc")}),
                          pd.DataFrame({"x": [1.0, 2.0, 3.0], "c": list("abc")}),
                          thresholds=DriftThresholds(alpha=0.01))
    assert list(report.to_frame()["column"]) == ["x", "c"]
    assert report.to_dict()["share_drifted"] == 0.0 and not report.dataset_drift
    with pytest.raises(KeyError, match=r"\['nope'\] are not in both"):
        detect_drift(pd.DataFrame({"x": [1.0]}), pd.DataFrame({"x": [1.0]}), columns=["nope"])


def test_cli_reports_json_and_refuses_missing_files(tmp_path):
    import json
    import subprocess
    import sys

    pd.DataFrame({"x": RNG.normal(0, 1, 300), "c": ["a", "b", "c"] * 100}).to_parquet(tmp_path / "ref.parquet")
    pd.DataFrame({"x": RNG.normal(3, 1, 300), "c": ["a", "b", "c"] * 100}).to_csv(tmp_path / "cur.csv", index=False)
    cli = [sys.executable, "-m", "mlops_pipelines.cli", "drift", "--reference", str(tmp_path / "ref.parquet")]
    done = subprocess.run([*cli, "--current", str(tmp_path / "cur.csv"), "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["drifted_columns"] == ["x"] and report["share_drifted"] == 0.5
    missing = subprocess.run([*cli, "--current", str(tmp_path / "nope.csv")], capture_output=True, text=True)
    assert missing.returncode == 2 and "nope.csv" in missing.stderr.strip().splitlines()[-1]


def test_the_cli_compares_csv_numbers_as_numbers_and_every_text_column(tmp_path, capsys):
    """`mlops drift` read CSV cells as text, so two samples of one normal distribution drifted (a
    chi-squared test of one category per number); `--categorical origin` turned every other text
    column into an untested 'numeric' one (a carrier mix flipped from 90/10 to 10/90 passed), and
    a misspelt name was ignored; two files without a shared column gave pandas' error."""
    import json

    from mlops_pipelines.cli import main

    rng = np.random.default_rng(1)  # (KS p-value 0.86)
    for name in ("ref", "cur"):
        pd.DataFrame({"x": rng.normal(0, 1, 3000).round(2)}).to_csv(tmp_path / f"{name}.csv", index=False)
    assert main(["drift", "--reference", str(tmp_path / "ref.csv"), "--current", str(tmp_path / "cur.csv"),
                 "--json"]) == 0
    column = json.loads(capsys.readouterr().out)["columns"][0]
    assert (column["kind"], column["test"], column["drift"]) == ("numeric", "ks", False)
    pd.DataFrame({"carrier": ["AA"] * 900 + ["UA"] * 100, "origin": ["JFK", "LGA"] * 500}).to_parquet(
        tmp_path / "ref.parquet")
    pd.DataFrame({"carrier": ["AA"] * 100 + ["UA"] * 900, "origin": ["JFK", "LGA"] * 500}).to_parquet(
        tmp_path / "cur.parquet")
    files = ["--reference", str(tmp_path / "ref.parquet"), "--current", str(tmp_path / "cur.parquet")]
    assert main(["drift", *files, "--categorical", "origin", "--json"]) == 0
    drifted = {c["column"]: (c["test"], c["drift"]) for c in json.loads(capsys.readouterr().out)["columns"]}
    assert drifted == {"carrier": ("chi2", True), "origin": ("chi2", False)}
    assert main(["drift", *files, "--categorical", "Carrier"]) == 2
    assert "categorical columns ['Carrier'] are not compared" in capsys.readouterr().err
    assert main(["drift", "--reference", str(tmp_path / "ref.csv"), "--current", str(tmp_path / "cur.parquet")]) == 2
    assert "share no column (reference: ['x'], current: ['carrier', 'origin'])" in capsys.readouterr().err
