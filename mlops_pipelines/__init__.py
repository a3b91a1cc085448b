"""mlops-pipelines: a local-first MLOps lifecycle on Dagster, on the real 2013 NYC flights data."""

from mlops_pipelines.numpy_sort import avoid_slow_avx512_sort

__version__ = "0.1.0"

# Before anything here imports numpy: its AVX-512 sort is ~5x slower on AMD Zen 4 (see the module).
avoid_slow_avx512_sort()
