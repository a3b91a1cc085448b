"""numpy's AVX-512 sort, turned off on AMD Zen 4 processors before numpy is loaded.

numpy sorts 32- and 64-bit values with x86-simd-sort. Its AVX-512 kernels store each partition
with ``vpcompress`` to memory, which Zen 4 runs in microcode (AMD's optimization guide for Zen 4
says to avoid it). There they are ~5x slower than numpy's AVX2 kernels: 2,000,000 uint64 sorted
in 0.11-0.14 s against 0.023-0.029 s on this project's 2-core AMD EPYC machine (numpy 2.4.6),
and argsort likewise. See numpy/x86-simd-sort#6; OpenJDK turns its AVX-512 sort off on Zen 4.
The point-in-time join sorts every view's rows and the entity rows, so this is most of its time
there (benchmarks/RESULTS.md).

numpy reads ``NPY_DISABLE_CPU_FEATURES`` once, when it is first imported. Importing
``mlops_pipelines`` sets it only when all of these hold: numpy (2.4 or later, whose names for its
targets were checked here) is not imported yet, the variable is not set (set it yourself, even to
"", to decide), and the processor is a Zen 4 (AMD family 19h with AVX-512; Zen 5, family 1Ah, has
a fast ``vpcompress``). It then also holds for the processes
started from this one (Dagster's run workers). The ``mlops`` CLI and the Dagster code location
import this package before numpy; a notebook that imports pandas first keeps numpy as it is, and
is told once, by a :class:`SlowSortWarning`, when a large join runs.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path

VARIABLE = "NPY_DISABLE_CPU_FEATURES"
CPUINFO = Path("/proc/cpuinfo")


def is_zen4(cpuinfo: str) -> bool:
    """Whether ``cpuinfo`` (the text of ``/proc/cpuinfo``) describes an AMD Zen 4 processor:
    vendor AuthenticAMD, family 25 (19h, Zen 3 and Zen 4), AVX-512 (Zen 4 only)."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # (the first processor is enough: all are alike)
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())
    return (fields.get("vendor_id") == "AuthenticAMD" and fields.get("cpu family") == "25"
            and "avx512f" in fields.get("flags", "").split())


def _grouped_by_level(numpy_version: str) -> bool:
    """Whether this numpy names its x86 targets by x86-64 level (X86_V4), as since 2.4."""
    try:
        major, minor = (int(part) for part in numpy_version.split(".")[:2])
    except ValueError:
        return True
    return (major, minor) >= (2, 4)


def features_to_disable(numpy_version: str) -> str:
    """numpy's names of its AVX-512 targets: since 2.4 grouped by x86-64 level (X86_V4)."""
    if _grouped_by_level(numpy_version):
        return "X86_V4 AVX512_ICL AVX512_SPR"
    return "AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR"


@functools.cache
def this_cpu_is_zen4() -> bool:
    """Whether this machine's processor is a Zen 4 (False where ``/proc/cpuinfo`` cannot be read)."""
    try:
        return is_zen4(CPUINFO.read_text(errors="replace"))
    except OSError:  # (not Linux)
        return False


def _zen4(cpuinfo: str | None) -> bool:
    """:func:`is_zen4` of ``cpuinfo``, or of this machine when None."""
    return this_cpu_is_zen4() if cpuinfo is None else is_zen4(cpuinfo)


def avoid_slow_avx512_sort(environ: MutableMapping[str, str] | None = None,
                           loaded: Mapping[str, object] | None = None, cpuinfo: str | None = None) -> bool:
    """Set ``NPY_DISABLE_CPU_FEATURES`` for a Zen 4 processor when numpy is not loaded yet and
    the variable is not set. Returns whether it was set. (``environ``, ``loaded``, the modules
    loaded, and ``cpuinfo`` default to this process's.)"""
    environ = os.environ if environ is None else environ
    loaded = sys.modules if loaded is None else loaded
    if VARIABLE in environ or "numpy" in loaded:
        return False
    if not _zen4(cpuinfo):
        return False
    from importlib import metadata  # (here: it loads the email package, ~40 ms)

    try:
        version = metadata.version("numpy")
    except metadata.PackageNotFoundError:
        return False
    if not _grouped_by_level(version):
        # (set only for the numpy whose names and behaviour were checked here, 2.4; an older
        # one is told by the warning)
        return False
    environ[VARIABLE] = features_to_disable(version)
    return True


class SlowSortWarning(UserWarning):
    """numpy, loaded before this package, sorts with its AVX-512 kernels on an AMD Zen 4."""


LARGE_JOIN_ROWS = 1_000_000  # feature and entity rows of one view: below this, sorting costs a few ms
_warned = False


def numpy_features() -> Mapping[str, bool]:
    """numpy's view of the CPU features it dispatches to (empty if numpy does not say)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__  # (numpy 1.x)
        except ImportError:
            return {}
    return __cpu_features__


def warn_if_sorting_slowly(rows: int, environ: Mapping[str, str] | None = None,
                           features: Mapping[str, bool] | None = None, cpuinfo: str | None = None) -> bool:
    """Warn once per process (a :class:`SlowSortWarning`) when a join of ``rows`` rows is about to
    sort them with numpy's AVX-512 kernels on a Zen 4, numpy having been imported before this
    package could turn them off, and the user has not chosen (``NPY_DISABLE_CPU_FEATURES`` unset).
    Returns whether it warned."""
    global _warned
    environ = os.environ if environ is None else environ
    if _warned or rows < LARGE_JOIN_ROWS or VARIABLE in environ:
        return False
    features = numpy_features() if features is None else features
    if not (features.get("X86_V4") or features.get("AVX512_SKX")):
        return False
    if not _zen4(cpuinfo):
        return False
    _warned = True
    import warnings

    import numpy

    warnings.warn(SlowSortWarning(
        "numpy sorts with its AVX-512 kernels on this AMD Zen 4 processor, ~5x slower than with its AVX2 ones, "
        "and the point-in-time join sorts every view's rows: import mlops_pipelines before numpy or pandas, or "
        f"start Python with {VARIABLE}='{features_to_disable(numpy.__version__)}' (set it to '' to keep numpy's "
        "kernels and this warning away)"), stacklevel=4)
    return True
