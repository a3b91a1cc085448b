"""numpy's AVX-512 sort turned off on AMD Zen 4, before numpy loads, and only then."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from mlops_pipelines import numpy_sort

ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 avx2 avx512f avx512dq avx512bw avx512vl

processor\t: 1
vendor_id\t: AuthenticAMD
"""
ZEN3 = ZEN4.replace(" avx512f avx512dq avx512bw avx512vl", "")  # (family 25 too, without AVX-512)
ZEN5 = ZEN4.replace("cpu family\t: 25", "cpu family\t: 26")
INTEL = ZEN4.replace("AuthenticAMD", "GenuineIntel").replace("cpu family\t: 25", "cpu family\t: 6")


def test_only_a_zen_4_processor_is_recognised():
    assert numpy_sort.is_zen4(ZEN4)
    assert not numpy_sort.is_zen4(ZEN3)
    assert not numpy_sort.is_zen4(ZEN5)
    assert not numpy_sort.is_zen4(INTEL)
    assert not numpy_sort.is_zen4("")


def test_the_variable_is_set_on_zen_4_only_before_numpy_and_never_over_the_users():
    environ: dict[str, str] = {}
    assert numpy_sort.avoid_slow_avx512_sort(environ, loaded={}, cpuinfo=ZEN4)
    assert environ == {"NPY_DISABLE_CPU_FEATURES": numpy_sort.features_to_disable(
        __import__("numpy").__version__)}
    for cpuinfo in (ZEN3, ZEN5, INTEL):
        environ = {}
        assert not numpy_sort.avoid_slow_avx512_sort(environ, loaded={}, cpuinfo=cpuinfo)
        assert environ == {}
    environ = {}
    assert not numpy_sort.avoid_slow_avx512_sort(environ, loaded={"numpy": object()}, cpuinfo=ZEN4)
    assert environ == {}  # (too late: numpy read the variable when it loaded)
    environ = {"NPY_DISABLE_CPU_FEATURES": ""}  # the user's choice, even empty
    assert not numpy_sort.avoid_slow_avx512_sort(environ, loaded={}, cpuinfo=ZEN4)
    assert environ == {"NPY_DISABLE_CPU_FEATURES": ""}


def test_the_variable_is_left_to_the_user_with_a_numpy_older_than_2_4(monkeypatch):
    """Older numpys name their targets otherwise (AVX512_SKX); only 2.4's were checked here."""
    from importlib import metadata

    monkeypatch.setattr(metadata, "version", lambda name: "2.3.5")
    environ: dict[str, str] = {}
    assert not numpy_sort.avoid_slow_avx512_sort(environ, loaded={}, cpuinfo=ZEN4)
    assert environ == {}


def test_numpy_names_its_avx512_targets_by_version():
    assert numpy_sort.features_to_disable("2.4.6") == "X86_V4 AVX512_ICL AVX512_SPR"
    assert numpy_sort.features_to_disable("3.0.0rc1") == "X86_V4 AVX512_ICL AVX512_SPR"
    assert "AVX512_SKX" in numpy_sort.features_to_disable("1.26.4").split()
    assert "X86_V4" not in numpy_sort.features_to_disable("2.2.0").split()


def test_importing_the_package_first_turns_numpys_avx512_off_on_this_machine_only_if_it_is_a_zen_4():
    """A fresh interpreter, as the CLI and the Dagster code location start: the package, then
    numpy. numpy's own view of its features says whether the variable took effect."""
    script = ("import mlops_pipelines, numpy, os, json; "
              "from numpy._core._multiarray_umath import __cpu_features__ as f; "
              "print(json.dumps([os.environ.get('NPY_DISABLE_CPU_FEATURES'), f.get('X86_V4', f.get('AVX512_SKX'))]))")
    env = {k: v for k, v in os.environ.items() if k != "NPY_DISABLE_CPU_FEATURES"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    variable, avx512 = json.loads(out.stdout)
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if numpy_sort.is_zen4(cpuinfo):
        assert variable == numpy_sort.features_to_disable(__import__("numpy").__version__)
        assert avx512 is False
    else:
        assert variable is None


def test_a_large_join_with_numpys_avx512_sort_on_zen_4_warns_once_and_only_then(monkeypatch):
    monkeypatch.setattr(numpy_sort, "_warned", False)
    avx512 = {"X86_V4": True}
    large = numpy_sort.LARGE_JOIN_ROWS
    # Not on other processors, not for small joins, not when numpy has no AVX-512 kernels or the
    # user chose (the variable set, even empty).
    assert not numpy_sort.warn_if_sorting_slowly(large, environ={}, features=avx512, cpuinfo=INTEL)
    assert not numpy_sort.warn_if_sorting_slowly(large - 1, environ={}, features=avx512, cpuinfo=ZEN4)
    assert not numpy_sort.warn_if_sorting_slowly(large, environ={}, features={"X86_V4": False}, cpuinfo=ZEN4)
    assert not numpy_sort.warn_if_sorting_slowly(large, environ={"NPY_DISABLE_CPU_FEATURES": ""},
                                                 features=avx512, cpuinfo=ZEN4)
    with pytest.warns(numpy_sort.SlowSortWarning, match=r"import mlops_pipelines before numpy or pandas, or start "
                                                        r"Python with NPY_DISABLE_CPU_FEATURES='X86_V4"):
        assert numpy_sort.warn_if_sorting_slowly(large, environ={}, features=avx512, cpuinfo=ZEN4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once a process
        assert not numpy_sort.warn_if_sorting_slowly(large, environ={}, features=avx512, cpuinfo=ZEN4)


def test_a_large_join_warns_when_numpy_was_loaded_first_on_this_machine_only_if_it_is_a_zen_4(tmp_path):
    """A fresh interpreter that imports numpy before the package, then joins 1,100,000 rows."""
    script = f"""
import warnings, numpy, pandas as pd, duckdb
from mlops_pipelines.features.store import FeatureStore
from mlops_pipelines.features.views import Feature, FeatureView
con = duckdb.connect({str(tmp_path / "w.duckdb")!r})
con.execute("create table t as select i % 1000 as k, timestamp '2013-01-01' + to_seconds(i) as ts, i * 1.0 as x "
            "from range(900000) r(i)")
con.close()
store = FeatureStore({str(tmp_path / "w.duckdb")!r}, [FeatureView("v", "t", "k", "ts", (Feature("x"),))])
# (over 100,000 entity rows: the view is read whole, 900,000 rows, not narrowed to the keys asked)
entities = pd.DataFrame({{"k": [i % 1000 for i in range(1, 200_001)],
                         "event_timestamp": pd.Timestamp("2013-02-01", tz="UTC")}})
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out = store.get_historical_features(entities, ["v:x"])
print(out["x"].iloc[0], [type(w.message).__name__ for w in caught])
"""
    env = {k: v for k, v in os.environ.items() if k != "NPY_DISABLE_CPU_FEATURES"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    last, _, names = out.stdout.strip().partition(" ")
    assert float(last) == 899_001.0  # (k = 1: rows 1, 1001, ..., 899001, all before 2013-02-01)
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    assert ("SlowSortWarning" in names) == numpy_sort.is_zen4(cpuinfo)
