"""Drift detection benchmark: our ``detect_drift`` against Evidently's ``DataDriftPreset``.

Seeded data (numpy ``default_rng(seed)``): a reference and a current frame of ``--rows`` rows each
(1,000,000 by default), 20 numeric and 5 categorical columns. Drift is injected in 7 of them, the
other 18 are drawn again from the reference's distribution:

* n00 normal, mean shifted by 0.5 sd;
* n01 normal, scale x1.5 (same mean);
* n02 normal, a mixture: 25% of rows moved by +2.5 sd;
* n03 lognormal, shifted by 0.5 sd, 5% NaN on both sides;
* n04 exponential, scale x1.5 (skewed; mean and spread move together);
* c00 shares shifted (0.40/0.30/0.20/0.10 -> 0.20/0.25/0.25/0.30);
* c01 a new category "NEW" with 20% of the rows.

NaNs also sit, in the same share on both sides, in n07 (10%), n15 (2%) and c04 (4%).

Each step runs in its own subprocess, so that each engine's peak RSS is its own (``os.wait4``;
Linux carries a parent's RSS at fork into the child's maxrss, so the driver imports no numpy or
pandas, and generation runs in a child too):

* generate (project venv, not timed): writes ``reference.parquet``, ``current.parquet`` and
  ``meta.json`` to a temporary folder;
* ours (project venv): ``detect_drift(reference, current, categorical=[...]).to_frame()``;
* evidently (``benchmarks/.venv-evidently``, created here if missing with the latest ``evidently``
  from PyPI and ``pandas<3``, which Evidently 0.7.23 needs without declaring it, so that Evidently
  never enters the project's environment):
  ``Report([DataDriftPreset()], include_tests=True).run(current, reference).dict()`` with an
  explicit ``DataDefinition`` (the same numeric and categorical columns as ours).

The timed part of each engine is the drift call and getting its result as plain data (our
``to_frame()``, Evidently's ``Dataset.from_pandas`` + ``run`` + ``dict()``); reading the parquet
files is timed separately, interpreter start and imports are in the process wall time only. Peak
RSS covers the whole child: imports, the two frames and the drift computation.

Verdicts: every injected column must be flagged by both engines; disagreements on the other
columns are reported separately (at more than 1,000 rows Evidently's defaults are a normed
Wasserstein distance for numeric columns and the Jensen-Shannon distance, natural log, for
categorical ones, both at 0.1; ours are the normed Wasserstein distance and the Jensen-Shannon
distance in base 2, both at 0.1, above 5,000 values).

Each timed child starts once the 1-minute load average is below ``--max-load`` (1.5), polling
for ``--max-wait`` seconds (600) in all before running anyway; the load at each start is printed.
``--profile`` prints a cProfile of a second ``detect_drift`` call in our child (not timed).

    .venv/bin/python benchmarks/drift.py [--rows 100000] [--seed 7] [--repeat 1]
        [--skip-evidently] [--profile] [--max-load 1.5] [--max-wait 600] [--keep]

Exit code 1 when an engine fails or an injected column is not flagged by both engines.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EVIDENTLY_VENV = HERE / ".venv-evidently"
# Latest Evidently. Its releases up to 0.7.23 at least import
# pandas.core.dtypes.common.infer_dtype_from_object, gone in pandas 3, without capping pandas:
# the benchmark venv keeps pandas 2 (the project's venv has pandas 3).
EVIDENTLY_REQUIREMENTS = ("evidently", "pandas<3", "pyarrow")

# (name, distribution, injected drift or None, NaN share on both sides)
NUMERIC = [
    ("n00", "normal", "mean +0.5 sd", 0.0),
    ("n01", "normal", "scale x1.5", 0.0),
    ("n02", "normal", "mixture 25% at +2.5 sd", 0.0),
    ("n03", "lognormal", "mean +0.5 sd, 5% NaN", 0.05),
    ("n04", "exponential", "scale x1.5", 0.0),
    ("n05", "normal", None, 0.0),
    ("n06", "lognormal", None, 0.0),
    ("n07", "normal", None, 0.10),
    ("n08", "uniform", None, 0.0),
    ("n09", "gamma", None, 0.0),
    ("n10", "poisson", None, 0.0),
    ("n11", "student_t", None, 0.0),
    ("n12", "bimodal", None, 0.0),
    ("n13", "exponential", None, 0.0),
    ("n14", "normal", None, 0.0),
    ("n15", "lognormal", None, 0.02),
    ("n16", "uniform", None, 0.0),
    ("n17", "gamma", None, 0.0),
    ("n18", "poisson", None, 0.0),
    ("n19", "normal", None, 0.0),
]
# (name, categories, reference shares, current shares or None (= reference), NaN share, injected)
CATEGORICAL = [
    ("c00", ["A", "B", "C", "D"], [0.40, 0.30, 0.20, 0.10], [0.20, 0.25, 0.25, 0.30], 0.0,
     "shares shifted"),
    ("c01", ["v1", "v2", "v3", "v4", "v5", "NEW"], [0.30, 0.25, 0.20, 0.15, 0.10, 0.0],
     [0.24, 0.20, 0.16, 0.12, 0.08, 0.20], 0.0, "new category (20%)"),
    ("c02", ["x", "y", "z"], [0.5, 0.3, 0.2], None, 0.0, None),
    ("c03", [f"k{i:02d}" for i in range(50)], "zipf", None, 0.0, None),
    ("c04", ["red", "green", "blue", "cyan", "magenta", "yellow"], [0.3, 0.2, 0.2, 0.1, 0.1, 0.1],
     None, 0.04, None),
]


# --------------------------------------------------------------------------------------------
# Data generation (project venv, child process, not timed)
# --------------------------------------------------------------------------------------------

def generate(folder: Path, rows: int, seed: int) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)

    def draw(distribution: str, n: int) -> np.ndarray:
        if distribution == "normal":
            return rng.normal(10.0, 2.0, n)
        if distribution == "lognormal":
            return rng.lognormal(0.0, 0.5, n)
        if distribution == "exponential":
            return rng.exponential(3.0, n)
        if distribution == "uniform":
            return rng.uniform(-5.0, 5.0, n)
        if distribution == "gamma":
            return rng.gamma(2.0, 2.0, n)
        if distribution == "poisson":
            return rng.poisson(20.0, n).astype("float64")
        if distribution == "student_t":
            return rng.standard_t(3.0, n)
        if distribution == "bimodal":
            return np.where(rng.random(n) < 0.4, rng.normal(-3.0, 1.0, n), rng.normal(3.0, 1.0, n))
        raise ValueError(distribution)

    def inject(values: np.ndarray, reference: np.ndarray, drift: str, distribution: str) -> np.ndarray:
        sd, mean = float(np.nanstd(reference)), float(np.nanmean(reference))
        if drift.startswith("mean +0.5 sd"):
            return values + 0.5 * sd
        if drift == "scale x1.5" and distribution == "exponential":
            return values * 1.5
        if drift == "scale x1.5":
            return mean + (values - mean) * 1.5
        if drift == "mixture 25% at +2.5 sd":
            return np.where(rng.random(values.size) < 0.25, values + 2.5 * sd, values)
        raise ValueError(drift)

    def with_nans(values: np.ndarray, share: float) -> np.ndarray:
        if share:
            values = values.copy()
            values[rng.random(values.size) < share] = np.nan
        return values

    reference, current = {}, {}
    for name, distribution, drift, nan_share in NUMERIC:
        ref = draw(distribution, rows)
        cur = draw(distribution, rows)
        if drift:
            cur = inject(cur, ref, drift, distribution)
        reference[name] = pa.array(with_nans(ref, nan_share), from_pandas=True)
        current[name] = pa.array(with_nans(cur, nan_share), from_pandas=True)

    def labels(categories: list[str], shares, nan_share: float) -> pa.Array:
        if isinstance(shares, str):  # zipf over the categories
            weights = 1.0 / np.arange(1, len(categories) + 1)
            shares = weights / weights.sum()
        codes = rng.choice(len(categories), size=rows, p=np.asarray(shares, dtype="float64"))
        mask = rng.random(rows) < nan_share if nan_share else None
        indices = pa.array(codes.astype("int32"), mask=mask)
        return pa.DictionaryArray.from_arrays(indices, pa.array(categories)).cast(pa.string())

    for name, categories, ref_shares, cur_shares, nan_share, _ in CATEGORICAL:
        reference[name] = labels(categories, ref_shares, nan_share)
        current[name] = labels(categories, cur_shares if cur_shares is not None else ref_shares, nan_share)

    pq.write_table(pa.table(reference), folder / "reference.parquet")
    pq.write_table(pa.table(current), folder / "current.parquet")
    meta = {
        "rows": rows,
        "seed": seed,
        "numeric": [name for name, *_ in NUMERIC],
        "categorical": [name for name, *_ in CATEGORICAL],
        "injected": {**{name: drift for name, _, drift, _ in NUMERIC if drift},
                     **{c[0]: c[5] for c in CATEGORICAL if c[5]}},
        "nan_columns": [n for n, _, _, s in NUMERIC if s] + [c[0] for c in CATEGORICAL if c[4]],
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


# --------------------------------------------------------------------------------------------
# Engines (each in its own subprocess)
# --------------------------------------------------------------------------------------------

def _read(folder: Path):
    import pandas as pd

    start = time.perf_counter()
    reference = pd.read_parquet(folder / "reference.parquet")
    current = pd.read_parquet(folder / "current.parquet")
    return reference, current, time.perf_counter() - start


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(folder: Path, meta: dict, profile: bool) -> dict:
    from mlops_pipelines.monitoring.drift import detect_drift

    reference, current, read_seconds = _read(folder)
    loaded_mb = _rss_mb()
    start = time.perf_counter()
    report = detect_drift(reference, current, categorical=meta["categorical"])
    frame = report.to_frame()
    seconds = time.perf_counter() - start
    columns = {
        row["column"]: {
            "drift": bool(row["drift"]),
            "score": row["wasserstein_normalised"] if row["kind"] == "numeric" else row["jensen_shannon"],
            "method": row["decided_by"],
        }
        for row in frame.to_dict("records")
    }
    if profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        detect_drift(reference, current, categorical=meta["categorical"])
        profiler.disable()
        print("cProfile of a second detect_drift call (cumulative, top 25):")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
        print("cProfile (tottime, top 15):")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    import pandas as pd

    return {"seconds": seconds, "read_seconds": read_seconds, "loaded_mb": loaded_mb,
            "columns": columns, "version": f"pandas {pd.__version__}"}


def run_evidently(folder: Path, meta: dict) -> dict:
    import evidently

    reference, current, read_seconds = _read(folder)
    loaded_mb = _rss_mb()
    try:
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset
    except ImportError:  # evidently < 0.7: the legacy API
        return run_evidently_legacy(reference, current, meta, read_seconds, loaded_mb)

    start = time.perf_counter()
    definition = DataDefinition(numerical_columns=meta["numeric"], categorical_columns=meta["categorical"])
    snapshot = Report([DataDriftPreset()], include_tests=True).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    result = snapshot.dict()
    seconds = time.perf_counter() - start

    # One ValueDrift metric per column (value = drift score, config = method and threshold) and,
    # with include_tests, one test per column whose status is FAIL when the column drifted.
    columns = {}
    for metric in result["metrics"]:
        config = metric.get("config", {})
        if config.get("type", "").endswith("ValueDrift"):
            columns[config["column"]] = {"score": metric["value"], "method": config.get("method"),
                                         "threshold": config.get("threshold")}
    for test in result["tests"]:
        params = test.get("metric_config", {}).get("params", {})
        if params.get("type", "").endswith("ValueDrift") and params.get("column") in columns:
            columns[params["column"]]["drift"] = test["status"] == "FAIL"
    import pandas as pd

    return {"seconds": seconds, "read_seconds": read_seconds, "loaded_mb": loaded_mb, "columns": columns,
            "version": f"evidently {evidently.__version__}, pandas {pd.__version__}"}


def run_evidently_legacy(reference, current, meta: dict, read_seconds: float, loaded_mb: float) -> dict:
    """evidently < 0.7 (``evidently.report.Report``, ``evidently.metric_preset.DataDriftPreset``)."""
    import evidently

    try:
        from evidently import ColumnMapping
        from evidently.metric_preset import DataDriftPreset
        from evidently.report import Report
    except ImportError:  # the same API, kept as evidently.legacy in 0.7
        from evidently.legacy.metric_preset import DataDriftPreset
        from evidently.legacy.pipeline.column_mapping import ColumnMapping
        from evidently.legacy.report import Report

    start = time.perf_counter()
    report = Report(metrics=[DataDriftPreset()])
    report.run(reference_data=reference, current_data=current,
               column_mapping=ColumnMapping(numerical_features=meta["numeric"],
                                            categorical_features=meta["categorical"]))
    result = report.as_dict()
    seconds = time.perf_counter() - start
    columns = {}
    for metric in result["metrics"]:
        by_column = metric.get("result", {}).get("drift_by_columns")
        if by_column:
            columns = {name: {"drift": bool(c["drift_detected"]), "score": c["drift_score"],
                              "method": c["stattest_name"], "threshold": c.get("stattest_threshold")}
                       for name, c in by_column.items()}
    return {"seconds": seconds, "read_seconds": read_seconds, "loaded_mb": loaded_mb, "columns": columns,
            "version": f"evidently {evidently.__version__} (legacy API)"}


def engine_main(engine: str, folder: Path, rows: int, seed: int, profile: bool) -> None:
    if engine == "generate":
        result = generate(folder, rows, seed)
    else:
        meta = json.loads((folder / "meta.json").read_text())
        result = run_ours(folder, meta, profile) if engine == "ours" else run_evidently(folder, meta)
    result["self_peak_mb"] = _rss_mb()
    print("RESULT " + json.dumps(result, default=float), flush=True)


# --------------------------------------------------------------------------------------------
# Driver (project venv; imports no numpy or pandas)
# --------------------------------------------------------------------------------------------

def ensure_evidently_venv() -> Path:
    python = EVIDENTLY_VENV / "bin" / "python"
    check = [str(python), "-c", "from evidently.presets import DataDriftPreset; import pyarrow"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"creating {EVIDENTLY_VENV} with {' '.join(EVIDENTLY_REQUIREMENTS)} ...", flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(EVIDENTLY_VENV)], check=True)
        (EVIDENTLY_VENV / ".gitignore").write_text("*\n")  # never committed
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", *EVIDENTLY_REQUIREMENTS], check=True)
    subprocess.run(check, check=True)
    return python


def wait_for_load(max_load: float, deadline: float) -> float:
    """Poll the 1-minute load average until it is below ``max_load`` (until ``deadline`` at most)."""
    load = os.getloadavg()[0]
    while load >= max_load and time.monotonic() < deadline:
        print(f"  load average {load:.2f} >= {max_load}: waiting ...", flush=True)
        time.sleep(15)
        load = os.getloadavg()[0]
    if load >= max_load:
        print(f"  load average still {load:.2f} (waited long enough): running anyway", flush=True)
    return load


def child(python: str, engine: str, folder: Path, args: argparse.Namespace,
          project: bool) -> tuple[dict | None, float, float]:
    """This script as ``--engine ENGINE`` in a child; (its RESULT, its peak RSS in MB, its wall s)."""
    command = [python, str(Path(__file__).resolve()), "--engine", engine, "--dir", str(folder),
               "--rows", str(args.rows), "--seed", str(args.seed)] + (["--profile"] if args.profile else [])
    env = dict(os.environ)
    if project:
        env["PYTHONPATH"] = str(HERE.parent)
    else:
        env.pop("PYTHONPATH", None)
    log = folder / f"{engine}.log"
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    text = log.read_text()
    results = [line for line in text.splitlines() if line.startswith("RESULT ")]
    if engine == "ours" and args.profile:
        print("\n".join(line for line in text.splitlines() if not line.startswith("RESULT ")))
    if code != 0 or not results:
        tail = "\n".join(text.splitlines()[-30:])
        print(f"[{engine}] failed (exit {code}):\n{tail}", flush=True)
        return None, usage.ru_maxrss / 1024, wall
    return json.loads(results[-1][len("RESULT "):]), usage.ru_maxrss / 1024, wall


def run_engine(python: str, engine: str, folder: Path, args: argparse.Namespace, project: bool,
               deadline: float) -> dict | None:
    """``--repeat`` fresh processes, each started once the load is low: the median drift time, the
    largest peak RSS, the highest 1-minute load average measured at a start."""
    runs = []
    for _ in range(args.repeat):
        load = wait_for_load(args.max_load, deadline)
        result, peak_mb, wall = child(python, engine, folder, args, project)
        if result is None:
            return None
        runs.append({**result, "peak_mb": peak_mb, "wall": wall, "load": load})
    runs.sort(key=lambda r: r["seconds"])
    median = runs[len(runs) // 2]
    return {**median, "times": [r["seconds"] for r in runs], "peak_mb": max(r["peak_mb"] for r in runs),
            "load": max(r["load"] for r in runs)}


def flag(value: bool | None) -> str:
    return "-" if value is None else ("DRIFT" if value else "ok")


def report(meta: dict, ours: dict, evidently: dict | None) -> bool:
    injected = meta["injected"]
    names = meta["numeric"] + meta["categorical"]
    print(f"\nPer column ({meta['rows']:,} rows each side, seed {meta['seed']}):")
    header = (f"{'column':<7} {'injected':<24} {'ours':<6} {'score':>7} {'by':<15} "
              f"{'evidently':<9} {'score':>7} {'method':<32} {'agree':<5}")
    print(header)
    print("-" * len(header))
    missed, disagree_other = [], []
    for name in names:
        o = ours["columns"].get(name, {})
        e = (evidently or {}).get("columns", {}).get(name, {})
        o_flag, e_flag = o.get("drift"), e.get("drift")
        if name in injected:
            ok = bool(o_flag) and (evidently is None or bool(e_flag))
            if not ok:
                missed.append(name)
        else:
            ok = evidently is None or o_flag == e_flag
            if not ok:
                disagree_other.append(name)
        nan = " (NaN)" if name in meta["nan_columns"] and name not in injected else ""
        label = (injected.get(name) or f"no{nan}")[:24]
        e_score = f"{e['score']:.4f}" if e.get("score") is not None else "-"
        o_score = f"{o['score']:.4f}" if o.get("score") is not None else "-"
        print(f"{name:<7} {label:<24} {flag(o_flag):<6} {o_score:>7} {o.get('method', '-'):<15} "
              f"{flag(e_flag):<9} {e_score:>7} {str(e.get('method', '-'))[:32]:<32} {'yes' if ok else 'NO':<5}")
    print(f"\ninjected columns flagged by both: {len(injected) - len(missed)}/{len(injected)}"
          + (f"  MISSED: {', '.join(missed)}" if missed else "  (agreement: yes)"))
    others = len(names) - len(injected)
    print(f"non-injected columns, same verdict: {others - len(disagree_other)}/{others}"
          + (f"  differ: {', '.join(disagree_other)}" if disagree_other else ""))
    flagged_o = [n for n in names if n not in injected and ours["columns"].get(n, {}).get("drift")]
    print(f"false alarms (non-injected flagged): ours {flagged_o or 'none'}", end="")
    if evidently is not None:
        flagged_e = [n for n in names if n not in injected and evidently["columns"].get(n, {}).get("drift")]
        print(f", evidently {flagged_e or 'none'}")
    else:
        print()
    return not missed


def summary(rows: int, ours: dict, evidently: dict | None) -> None:
    print(f"\nSummary at {rows:,} rows (drift s: the timed call; process s: the whole child, with "
          "interpreter start, imports and parquet reads; peak RSS: the child's, from wait4; read peak: "
          "its maxrss once both frames were read; load: 1-min load average when the child started):")
    header = (f"{'engine':<10} {'drift s':>8} {'read s':>7} {'process s':>10} {'peak RSS MB':>12} "
              f"{'read peak MB':>13} {'load':>5}")
    print(header)
    print("-" * len(header))
    for name, r in (("ours", ours), ("evidently", evidently)):
        if r is None:
            continue
        times = "" if len(r["times"]) == 1 else "  runs: " + ", ".join(f"{t:.2f}" for t in sorted(r["times"]))
        print(f"{name:<10} {r['seconds']:>8.2f} {r['read_seconds']:>7.2f} {r['wall']:>10.2f} "
              f"{r['peak_mb']:>12,.0f} {r['loaded_mb']:>13,.0f} {r['load']:>5.2f}{times}")
    if evidently is not None:
        speed = evidently["seconds"] / ours["seconds"]
        memory = evidently["peak_mb"] / ours["peak_mb"]
        print(f"ratio evidently/ours: drift time {speed:.1f}x, process time {evidently['wall'] / ours['wall']:.1f}x, "
              f"peak RSS {memory:.2f}x")
        print(f"targets: >= 10x faster: {'met' if speed >= 10 else 'MISSED'}; "
              f"peak memory below Evidently's: {'met' if ours['peak_mb'] < evidently['peak_mb'] else 'MISSED'}")
        print(f"versions: ours on {ours['version']}; {evidently['version']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in each of reference and current")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=1, help="fresh processes per engine (median time)")
    parser.add_argument("--skip-evidently", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile a second detect_drift call in ours")
    parser.add_argument("--max-load", type=float, default=1.5, help="wait for the 1-min load average below this")
    parser.add_argument("--max-wait", type=float, default=600, help="seconds to wait for the load in all, at most")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (parquet files, logs)")
    parser.add_argument("--engine", choices=("generate", "ours", "evidently"), help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        engine_main(args.engine, args.dir, args.rows, args.seed, args.profile)
        return 0

    evidently_python = None if args.skip_evidently else str(ensure_evidently_venv())
    folder = Path(tempfile.mkdtemp(prefix="drift-bench-"))
    try:
        print(f"generating {args.rows:,} x 2 rows (seed {args.seed}) in {folder} ...", flush=True)
        meta, _, gen_wall = child(sys.executable, "generate", folder, args, project=True)
        if meta is None:
            return 1
        print(f"  generated in {gen_wall:.1f} s (not timed); injected: {', '.join(meta['injected'])}")
        deadline = time.monotonic() + args.max_wait
        print(f"load average now: {os.getloadavg()[0]:.2f} (1 min); each timed run starts below "
              f"{args.max_load} or after {args.max_wait:.0f} s of waiting in all", flush=True)
        print("running ours ...", flush=True)
        ours = run_engine(sys.executable, "ours", folder, args, project=True, deadline=deadline)
        if ours is None:
            return 1
        evidently = None
        if evidently_python:
            print("running evidently ...", flush=True)
            evidently = run_engine(evidently_python, "evidently", folder, args, project=False, deadline=deadline)
            if evidently is None:
                return 1
        agreed = report(meta, ours, evidently)
        summary(args.rows, ours, evidently)
        return 0 if agreed else 1
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
