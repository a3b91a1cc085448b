"""The drift HTML page is self-contained, escaped, and plots the most drifted columns."""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd
import pytest

from mlops_pipelines.monitoring.drift import DriftReport
from mlops_pipelines.monitoring.html_report import render_drift_html
from mlops_pipelines.monitoring.profile import ReferenceProfile, build_profile, detect_drift_from_profile

IMG = '<img src="data:image/png;base64,'
COLUMNS = ["delay", "carrier", "hour", "a<b", "x$y"]


def _frames(seed: int = 7, n: int = 600) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    reference = pd.DataFrame({
        "delay": rng.normal(10, 5, n),                          # shifted in current
        "carrier": rng.choice(["AA", "UA", "DL"], n),           # gains a new category in current
        "hour": rng.integers(5, 23, n).astype(float),           # unchanged
        "a<b": rng.normal(0, 1, n),                             # a name that needs escaping
        "x$y": rng.normal(0, 1, n),                             # a name matplotlib would read as math
    })
    current = pd.DataFrame({
        "delay": np.where(rng.random(n) < 0.02, np.nan, rng.normal(14, 5, n)),
        "carrier": rng.choice(["AA", "UA", "DL", "B6"], n),
        "hour": rng.integers(5, 23, n).astype(float),
        "a<b": rng.normal(0, 1, n),
        "x$y": rng.normal(0.5, 1, n),
    })
    return reference, current


@pytest.fixture(scope="module")
def setup() -> tuple[ReferenceProfile, pd.DataFrame, DriftReport]:
    reference, current = _frames()
    profile = build_profile(reference, categorical=["carrier"], resolution=200)
    return profile, current, detect_drift_from_profile(profile, current)


@pytest.mark.parametrize("top", [1, 3, 4, 10])
def test_page_is_self_contained_and_plots_top_columns(setup, top):
    profile, current, report = setup
    page = render_drift_html(report, profile, current, "Drift <2013-05>", top=top,
                             summary={"month": "2013-05", "champion version": 3, "drift share": 0.123456,
                                      "roc_auc_vs_holdout": 0.7123456})
    assert page.startswith("<!DOCTYPE html>")
    assert page.count(IMG) == min(top, len(COLUMNS))
    assert "http://" not in page and "https://" not in page
    assert "<link" not in page and "<script" not in page
    for name in ["delay", "carrier", "hour", "x$y"]:
        assert name in page
    assert "a&lt;b" in page and "a<b" not in page
    assert "Drift &lt;2013-05&gt;" in page
    assert "0.1235" in page and "0.7123" in page and "0.123456" not in page  # 4 significant digits
    assert "champion version" in page


def test_embedded_images_are_png(setup):
    profile, current, report = setup
    page = render_drift_html(report, profile, current, "t", top=5)
    uris = [chunk.split('"', 1)[0] for chunk in page.split(IMG)[1:]]
    assert len(uris) == 5
    assert all(base64.b64decode(uri).startswith(b"\x89PNG") for uri in uris)


def test_table_and_plots_rank_drifted_columns_first(setup):
    profile, current, report = setup
    assert {"delay", "carrier"} <= set(report.drifted_columns)
    assert "hour" not in report.drifted_columns
    page = render_drift_html(report, profile, current, "t", top=2)
    table = page.split("<h2>Columns</h2>", 1)[1].split("</table>", 1)[0]
    assert table.index("delay") < table.index(">hour<")
    captions = [c.split("</figcaption>")[0].split(";")[0] for c in page.split("<figcaption>")[1:]]
    assert len(captions) == 2 and set(captions) <= set(report.drifted_columns)


def test_new_category_is_marked(setup):
    profile, current, report = setup
    page = render_drift_html(report, profile, current, "t", top=len(COLUMNS))
    assert "B6 (new)" in page
    assert "AA (new)" not in page and page.count("(new)") == 1


def test_columns_missing_from_profile_or_current_are_skipped(setup):
    profile, current, report = setup
    thin = ReferenceProfile(numeric={k: v for k, v in profile.numeric.items() if k != "delay"},
                            categorical=profile.categorical)
    page = render_drift_html(report, thin, current.drop(columns=["carrier"]), "t", top=len(COLUMNS))
    assert page.count(IMG) == len(COLUMNS) - 2
    assert "delay" in page and "carrier" in page  # still in the table


def test_columns_without_values_still_render():
    reference = pd.DataFrame({"n": [np.nan] * 5, "m": [1.0, 2, 3, 4, 5], "c": [None] * 5})
    current = pd.DataFrame({"n": [np.nan] * 4, "m": [np.nan] * 4, "c": [None] * 4})
    profile = build_profile(reference, categorical=["c"])
    page = render_drift_html(detect_drift_from_profile(profile, current), profile, current, "t", top=3)
    assert page.count(IMG) == 3 and "n/a" in page


def test_empty_report():
    page = render_drift_html(DriftReport(), ReferenceProfile(), pd.DataFrame(), "Empty", summary={"month": "x"})
    assert page.startswith("<!DOCTYPE html>")
    assert "No columns were compared" in page
    assert IMG not in page and "month" in page
