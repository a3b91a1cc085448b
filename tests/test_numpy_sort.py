"""numpy's AVX-512 sort turned off on AMD Zen 4, before numpy loads, and only then."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
