"""Point-in-time join benchmark: our FeatureStore against pandas.merge_asof and Feast's DuckDB store.

Seeded data (numpy ``default_rng(seed)``): 3 feature views x 2,000,000 rows x 5 float features over
100,000 entities and a year of event timestamps, each view with a created timestamp, a 30-day TTL
and exact ties on (entity, event timestamp) with different created timestamps; 1,000,000 entity
rows in random order with duplicates, unknown entities, rows before any feature row and rows
exactly on a feature's event timestamp or exactly at its TTL boundary. ``--scale 0.1`` divides
every count by 10.

Each run of an engine is a fresh subprocess (so its peak RSS is its own, read with ``os.wait4``),
and the engines take turns, round after round (``--repeat``), so that all of them sample the same
stretches of a shared machine:

* ours: ``FeatureStore(":memory:", memory_limit="1GB", prepared_dir=...).get_historical_features``
  over ``read_parquet(...)`` sources, with the views' prepared copies (``FeatureStore.prepare``,
  run once before the rounds, timed and printed on its own: it reads and writes every view);
* ours_source: the same without prepared copies, reading the parquet files in every call;
* merge_asof: read, drop tie losers (greatest created timestamp per entity and event timestamp),
  sort, ``pandas.merge_asof(by="entity_id", direction="backward", tolerance=ttl)`` per view,
  restore the caller's order;
* feast: ``feast.FeatureStore.get_historical_features(...).to_df()`` with the ``duckdb`` offline
  store and ``FileSource`` parquet sources, in a separate venv (``benchmarks/.venv-feast``,
  created here if missing) so that Feast never enters the project's environment.

The timed part of every engine is: read the entity parquet file, join, get a pandas frame (reading
the feature parquet files, or ours' prepared copies, happens inside it too). Data generation,
parquet writing, Feast's ``apply``, our ``prepare`` and writing each engine's result for the
comparison are outside it. Results are compared
row by row, joined on ``row_id`` (a column of the entity frame), against merge_asof, and every
engine is checked against a brute-force oracle on a sample of entity rows.

Right before its timed call, each engine's process reads its input files (the entity file, the
views' parquet files, ours' prepared copies, Feast's registry) once into the page cache, so that
every engine starts warm; ``--cold`` drops them from the cache instead, so that every engine
reads from the disk. (This kind of virtual machine pages out file pages unused for ~30 s, and
the engines' runs are minutes apart: left alone, a run found its files cached or not by chance.)

    .venv/bin/python benchmarks/feature_store.py [--scale 0.1] [--repeat 5] [--seed 7]
        [--skip-feast] [--explain] [--floor] [--cold] [--keep] [--numpy-avx512]

Every engine gets the same numpy settings: on an AMD Zen 4, ``NPY_DISABLE_CPU_FEATURES`` as
importing ``mlops_pipelines`` sets it (numpy's AVX-512 sort is ~5x slower there than its AVX2 one;
see ``mlops_pipelines/numpy_sort.py``); ``--numpy-avx512`` keeps numpy's defaults.

``--floor`` also times ours with the join taken out (the same reads of the prepared copies and
output frame): what no join algorithm can make cheaper on the machine at hand.
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
FEAST_VENV = HERE / ".venv-feast"
FEAST_REQUIREMENT = "feast[duckdb]==0.67.*"

N_VIEWS = 3
N_FEATURES = 5
TTL_DAYS = 30
ENGINES = ("ours", "ours_source", "merge_asof", "feast", "floor")


def feature_columns(meta: dict) -> list[str]:
    return [f"{view}__f{j}" for view in meta["views"] for j in range(meta["n_features"])]


# --------------------------------------------------------------------------------------------
# Data generation (project venv)
# --------------------------------------------------------------------------------------------

def generate(folder: Path, scale: float, seed: int) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    n_entities = int(100_000 * scale)
    n_rows = int(2_000_000 * scale)
    n_entity_rows = int(1_000_000 * scale)
    second = 1_000_000  # microseconds
    day = 86_400 * second
    ttl = TTL_DAYS * day
    start = np.datetime64("2024-01-01T00:00:00", "us").astype(np.int64)
    year = 366 * day

    def ts(values: np.ndarray) -> pa.Array:
        return pa.array(values, type=pa.int64()).cast(pa.timestamp("us", tz="UTC"))

    views, sources = [], {}
    for v in range(N_VIEWS):
        entity = rng.integers(0, n_entities, n_rows)
        event = start + rng.integers(0, year // second, n_rows) * second
        # Exact ties: 3% of the rows take the (entity, event timestamp) of another row.
        tied = rng.choice(n_rows, int(0.03 * n_rows), replace=False)
        donors = rng.integers(0, n_rows, tied.size)
        entity[tied], event[tied] = entity[donors], event[donors]
        # Created timestamps: a distinct offset per row (whole milliseconds), so ties never tie twice.
        created = event + rng.permutation(n_rows).astype(np.int64) * 1_000
        values = rng.standard_normal((n_rows, N_FEATURES))
        name = f"v{v}"
        table = pa.table({
            "entity_id": pa.array(entity, type=pa.int64()),
            "event_ts": ts(event),
            "created_ts": ts(created),
            **{f"f{j}": pa.array(values[:, j]) for j in range(N_FEATURES)},
        })
        path = folder / f"{name}.parquet"
        pq.write_table(table, path)
        views.append(name)
        sources[name] = str(path)
        if v == 0:
            first_entity, first_event = entity, event

    # Entity rows: random order, 1% unknown entities, timestamps from 20 days before the first
    # feature row to 20 days after the last.
    entity = rng.integers(0, int(n_entities * 1.01), n_entity_rows)
    when = start - 20 * day + rng.integers(0, (year + 40 * day) // second, n_entity_rows) * second
    # 3% exactly on a feature row's event timestamp, 2% exactly at its TTL boundary (view v0).
    on_event = rng.choice(n_entity_rows, int(0.05 * n_entity_rows), replace=False)
    picked = rng.integers(0, n_rows, on_event.size)
    entity[on_event] = first_entity[picked]
    boundary = np.zeros(on_event.size, dtype=bool)
    boundary[: int(0.02 * n_entity_rows)] = True
    when[on_event] = first_event[picked] + np.where(boundary, ttl, 0)
    # 5% duplicates of other entity rows (same entity, same timestamp).
    copies = rng.choice(n_entity_rows, int(0.05 * n_entity_rows), replace=False)
    originals = rng.integers(0, n_entity_rows, copies.size)
    entity[copies], when[copies] = entity[originals], when[originals]
    entities = pa.table({
        "row_id": pa.array(np.arange(n_entity_rows), type=pa.int64()),
        "entity_id": pa.array(entity, type=pa.int64()),
        "event_timestamp": ts(when),
    })
    pq.write_table(entities, folder / "entities.parquet")

    meta = {
        "scale": scale, "seed": seed, "n_entities": n_entities, "n_rows": n_rows,
        "n_entity_rows": n_entity_rows, "views": views, "sources": sources,
        "n_features": N_FEATURES, "ttl_days": TTL_DAYS,
        "entities": str(folder / "entities.parquet"),
        "duplicate_entity_rows": int(n_entity_rows - len(set(zip(entity.tolist(), when.tolist(), strict=True)))),
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    return meta


# --------------------------------------------------------------------------------------------
# Engines (each in its own subprocess)
# --------------------------------------------------------------------------------------------

def prepared_dir(meta: dict) -> Path:
    return Path(meta["entities"]).parent / "prepared"


def our_store(meta: dict, prepared: bool):
    """Our store over the benchmark's parquet files, with or without their prepared copies."""
    from datetime import timedelta

    from mlops_pipelines.features.store import FeatureStore
    from mlops_pipelines.features.views import Feature, FeatureView

    store = FeatureStore(":memory:", memory_limit="1GB", prepared_dir=prepared_dir(meta) if prepared else None)
    for name in meta["views"]:
        store.register(FeatureView(
            name=name, source=f"read_parquet('{meta['sources'][name]}')", entities=("entity_id",),
            event_timestamp="event_ts", created_timestamp="created_ts",
            features=tuple(Feature(f"f{j}") for j in range(meta["n_features"])),
            ttl=timedelta(days=meta["ttl_days"]),
        ))
    return store


def run_prepare(meta: dict) -> dict:
    """Our prepared copies of the three views (not timed with the engines: once, before them)."""
    store = our_store(meta, prepared=True)
    started = time.perf_counter()
    done = store.prepare()
    seconds = time.perf_counter() - started
    size = sum(f.stat().st_size for f in prepared_dir(meta).glob("*.arrow"))
    return {"seconds": seconds, "done": done, "megabytes": size / 1e6}


def run_ours(meta: dict, explain: bool = False, prepared: bool = True):
    import warnings

    import pandas as pd

    from mlops_pipelines.features.errors import PreparedCopyStaleWarning

    if prepared:  # (a stale copy would quietly time the source's read: fail instead)
        warnings.simplefilter("error", PreparedCopyStaleWarning)
    store = our_store(meta, prepared)
    refs = [f"{v}:f{j}" for v in meta["views"] for j in range(meta["n_features"])]

    def timed():
        entity_df = pd.read_parquet(meta["entities"])
        return store.get_historical_features(entity_df, refs, full_feature_names=True,
                                             timestamp_column="event_timestamp")

    def profile():
        """The steps of get_historical_features one after another, each timed (wall and CPU)."""
        import resource

        import duckdb

        from mlops_pipelines.features import point_in_time
        from mlops_pipelines.features.prepared import ConnectionFacts
        from mlops_pipelines.features.store import entity_rows, read_view_rows, to_utc

        lines = []

        def step(label, work):
            usage = resource.getrusage(resource.RUSAGE_SELF)
            started, cpu = time.perf_counter(), usage.ru_utime + usage.ru_stime
            result = work()
            usage = resource.getrusage(resource.RUSAGE_SELF)
            lines.append(f"{label:<34} {time.perf_counter() - started:6.3f} s wall "
                         f"{usage.ru_utime + usage.ru_stime - cpu:6.3f} s CPU")
            return result

        entity_df = step("read entities (pandas)", lambda: pd.read_parquet(meta["entities"]))
        with point_in_time.small_pages():  # as get_historical_features does
            stamps = step("entity timestamps to UTC", lambda: to_utc(entity_df["event_timestamp"]))
            entities = step("entity rows", lambda: entity_rows({"entity_id": entity_df["entity_id"]}, stamps))
            con = duckdb.connect()
            con.execute("SET TimeZone = 'UTC'")
            con.execute(f"SET memory_limit = '{store.memory_limit}'")
            workspace = point_in_time.Workspace()  # one thread: one workspace, used by every view
            facts = ConnectionFacts(con, empty=True)  # (as get_historical_features reads them: once a call)
            for name, names in store.resolve_features(refs).items():
                view = store.views[name]
                table = step(f"{name}: read ({'prepared copy' if prepared else 'DuckDB to Arrow'})",
                             lambda view=view: read_view_rows(con, view, view.feature_names) if not prepared
                             else store._prepared_rows(facts, view, (), ()))
                if table is None:
                    raise SystemExit(f"{name}: no prepared copy of its files as they are (run the benchmark again)")
                chosen = step(f"{name}: match rows", lambda table=table, view=view: point_in_time.match_rows(
                    table, entities, view.entities, view.feature_names, view.ttl_micros, True, workspace))
                step(f"{name}: take features", lambda table=table, names=names, chosen=chosen:
                     point_in_time.take_pandas(table, names, chosen, workspace))
        lines.append("(one thread, one step after another; get_historical_features joins two views at a time)")
        return "\n".join(lines)

    return timed, (profile if explain else None)


def run_floor(meta: dict, explain: bool = False):
    """Ours with the join itself taken out: the same entity read, the same reads of the views'
    prepared copies (two views in flight, as in ours) and the same output frame, whose float columns are
    only allocated and written once. What no join algorithm can make cheaper on this machine.
    (Not a result: its values are not compared.)"""
    import numpy as np

    from mlops_pipelines.features import point_in_time

    def no_join(features, entities, keys, view_features, names, ttl_micros, has_created, as_pandas=False,
                workspace=None, last=False):
        return {name: np.full(len(entities), np.nan) for name in names}

    point_in_time.join_view = no_join
    return run_ours(meta)[0], None


def run_merge_asof(meta: dict, explain: bool = False):
    import pandas as pd

    tolerance = pd.Timedelta(days=meta["ttl_days"])
    features = [f"f{j}" for j in range(meta["n_features"])]

    def timed():
        entity_df = pd.read_parquet(meta["entities"])
        left = entity_df.assign(__pos=range(len(entity_df))).sort_values("event_timestamp", kind="stable")
        for name in meta["views"]:
            right = pd.read_parquet(meta["sources"][name])
            right = (right.sort_values(["entity_id", "event_ts", "created_ts"])
                     .drop_duplicates(["entity_id", "event_ts"], keep="last")
                     .sort_values("event_ts", kind="stable"))
            right = right[["entity_id", "event_ts", *features]].rename(
                columns={f: f"{name}__{f}" for f in features})
            left = pd.merge_asof(left, right, left_on="event_timestamp", right_on="event_ts",
                                 by="entity_id", direction="backward", tolerance=tolerance,
                                 allow_exact_matches=True).drop(columns="event_ts")
        out = left.sort_values("__pos").drop(columns="__pos")
        out.index = entity_df.index
        return out

    return timed, None


def run_feast(meta: dict, folder: Path, explain: bool = False):
    from datetime import timedelta

    import pandas as pd
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64

    repo = folder / "feast_repo"
    repo.mkdir(exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        "project: bench\n"
        f"registry: {repo / 'registry.db'}\n"
        "provider: local\n"
        "offline_store:\n  type: duckdb\n"
        f"online_store:\n  type: sqlite\n  path: {repo / 'online.db'}\n"
        "entity_key_serialization_version: 3\n"
    )
    store = FeatureStore(repo_path=str(repo))
    entity = Entity(name="entity", join_keys=["entity_id"], value_type=ValueType.INT64)
    objects = [entity]
    for name in meta["views"]:
        source = FileSource(name=f"{name}_source", path=meta["sources"][name], timestamp_field="event_ts",
                            created_timestamp_column="created_ts")
        objects.append(FeatureView(
            name=name, entities=[entity], ttl=timedelta(days=meta["ttl_days"]), source=source,
            schema=[Field(name=f"f{j}", dtype=Float64) for j in range(meta["n_features"])],
            online=False,
        ))
    store.apply(objects)
    refs = [f"{v}:f{j}" for v in meta["views"] for j in range(meta["n_features"])]

    def timed():
        entity_df = pd.read_parquet(meta["entities"])
        return store.get_historical_features(entity_df=entity_df, features=refs,
                                             full_feature_names=True).to_df()

    return timed, None


def input_files(meta: dict, engine: str, folder: Path) -> list[Path]:
    """The files an engine's timed call may read: the entity file, the views' parquet files
    (ours only looks at their size and times when its copies are used), ours' prepared copies,
    Feast's repository (registry)."""
    files = [Path(meta["entities"]), *(Path(meta["sources"][v]) for v in meta["views"])]
    if engine in ("ours", "floor"):
        files += sorted(prepared_dir(meta).glob("*.arrow"))
    if engine == "feast":
        files += sorted(p for p in (folder / "feast_repo").glob("*") if p.is_file())
    return files


def set_page_cache(files: list[Path], cold: bool) -> None:
    """Each of ``files`` read once, whole, into the page cache (every engine then starts warm),
    or, ``cold``, dropped from it (every engine then reads from the disk).

    Without this, what an engine finds in the cache depends on how long ago it last ran: this
    kind of virtual machine pages out file pages unused for ~30 s (DAMON), and the engines'
    runs are minutes apart, so a run could read ~370 MB from the disk (~0.65 s here) or nothing.
    The files are read by ``cat``, in a process of its own: reading them here would leave this
    process's memory allocator otherwise than it starts (glibc raises its mmap threshold after
    a large buffer is freed), which changes the page faults of what is timed.
    """
    if not cold:
        subprocess.run(["cat", *map(str, files)], stdout=subprocess.DEVNULL, check=True)
        return
    for path in files:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)  # (dirty pages are not dropped)
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


def engine_main(engine: str, folder: Path, explain: bool, cold: bool = False) -> None:
    """Runs in the engine's own process: setup, the timed part, then the result to parquet."""
    import resource

    # Every engine's timed part starts with pandas.read_parquet of the entity file; its reader
    # is imported here, so that no engine pays that import in its time (Feast's own imports
    # already load it, ours and merge_asof's do not).
    import pyarrow.parquet  # noqa: F401

    meta = json.loads((folder / "meta.json").read_text())
    if engine in ("ours", "ours_source"):
        timed, profile = run_ours(meta, explain, prepared=engine == "ours")
        if profile is not None:  # a separate, untimed run: the steps one by one
            print("RESULT " + json.dumps({"engine": engine, "explain": profile()}), flush=True)
            return
    elif engine == "merge_asof":
        timed, profile = run_merge_asof(meta, explain)
    elif engine == "floor":
        timed, profile = run_floor(meta, explain)
    else:
        timed, profile = run_feast(meta, folder, explain)
    set_page_cache(input_files(meta, engine, folder), cold)
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    before = usage_before.ru_maxrss
    started = time.perf_counter()
    frame = timed()
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_self = usage.ru_maxrss
    version = None
    if engine == "feast":
        import feast

        version = feast.__version__
    frame = frame.reset_index(drop=True)
    frame.to_parquet(folder / f"result_{engine}.parquet", index=False)
    report = {"engine": engine, "seconds": seconds, "rss_before_kb": before,
              "rss_peak_self_kb": peak_self, "rows": len(frame), "version": version,
              # CPU of all the process's threads during the timed call: user (the work) and system
              # (mostly first touches of new memory, i.e. page faults, on this kind of machine).
              "user": usage.ru_utime - usage_before.ru_utime, "sys": usage.ru_stime - usage_before.ru_stime,
              "faults": usage.ru_minflt - usage_before.ru_minflt,
              # bytes read from the disk (blocks of 512 bytes; read() and memory maps alike): ~0 with
              # the cache warmed, as it is unless --cold
              "disk_mb": (usage.ru_inblock - usage_before.ru_inblock) * 512 / 1e6}
    print("RESULT " + json.dumps(report), flush=True)


# --------------------------------------------------------------------------------------------
# Driver (project venv)
# --------------------------------------------------------------------------------------------

def ensure_feast_venv() -> Path:
    python = FEAST_VENV / "bin" / "python"
    check = [str(python), "-c", "import feast, duckdb, ibis"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"creating {FEAST_VENV} with {FEAST_REQUIREMENT} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(FEAST_VENV)], check=True)
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", FEAST_REQUIREMENT],
                             capture_output=True, text=True)
    if install.returncode != 0:
        sys.exit(f"pip install {FEAST_REQUIREMENT} failed:\n{install.stdout}{install.stderr}")
    subprocess.run(check, check=True)
    return python


def child(python: str, args: list[str], folder: Path, log_name: str,
          project: bool = True) -> tuple[dict | None, int, str]:
    """This script in a child process; (its RESULT json, its peak RSS in KB, its log tail).

    The peak RSS comes from wait4's rusage for that child alone. Linux carries the parent's RSS
    at fork into the child's maxrss, so the driver itself stays small: it imports no numpy or
    pandas, and generation and comparison run in children too.
    """
    command = [python, str(Path(__file__).resolve()), *args, "--dir", str(folder)]
    env = dict(os.environ)
    if project:
        env["PYTHONPATH"] = str(HERE.parent)
    else:
        env.pop("PYTHONPATH", None)
    log = folder / f"{log_name}.log"
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder)
        _, status, usage = os.wait4(process.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    text = log.read_text()
    lines = [line for line in text.splitlines() if line.startswith("RESULT ")]
    tail = "\n".join(text.splitlines()[-25:])
    if code != 0 or not lines:
        print(f"[{log_name}] failed (exit {code}):\n{tail}", flush=True)
        return None, usage.ru_maxrss, tail
    return json.loads(lines[-1][len("RESULT "):]), usage.ru_maxrss, tail


def run_engines(pythons: dict[str, str], folder: Path, repeat: int, cold: bool = False) -> dict[str, dict]:
    """``repeat`` rounds, each running every engine once in a fresh process, so that every engine
    samples the same stretches of a shared machine; per engine the median and best wall time and
    the largest peak RSS."""
    runs: dict[str, list[dict]] = {engine: [] for engine in pythons}
    peaks: dict[str, list[int]] = {engine: [] for engine in pythons}
    failed: set[str] = set()
    for _ in range(repeat):
        for engine, python in pythons.items():
            if engine in failed:
                continue
            report, peak, _ = child(python, ["--engine", engine] + (["--cold"] if cold else []), folder, engine,
                                    project=engine != "feast")
            peaks[engine].append(peak)
            if report is None:
                failed.add(engine)
            else:
                runs[engine].append(report)
    reports = {}
    for engine in pythons:
        if engine in failed:
            reports[engine] = {"engine": engine, "failed": True, "peak_kb": max(peaks[engine])}
            continue
        times = sorted(r["seconds"] for r in runs[engine])

        def median(key: str, engine: str = engine) -> float:
            values = sorted(r[key] for r in runs[engine])
            return values[len(values) // 2]

        reports[engine] = {**runs[engine][-1], "seconds": times[len(times) // 2], "best": times[0],
                           "times": times, "peak_kb": max(peaks[engine]),
                           "user": median("user"), "sys": median("sys"), "faults": median("faults"),
                           "disk_mb": median("disk_mb")}
    return reports


def micros(values) -> np.ndarray:  # noqa: F821
    """Timestamps (aware) as int64 microseconds since the epoch, UTC."""
    import numpy as np

    return values.dt.tz_convert(None).to_numpy().astype("datetime64[us]").astype(np.int64)


def oracle(meta: dict, sample: np.ndarray, cases: dict) -> np.ndarray:  # noqa: F821
    """Brute force for the sampled entity rows: a (sample, features) array with NaN for no match.

    ``cases`` counts, over sampled rows x views, the edge cases the sample exercises."""
    import numpy as np
    import pandas as pd

    entities = pd.read_parquet(meta["entities"])
    ids = entities["entity_id"].to_numpy()[sample]
    when = micros(entities["event_timestamp"])[sample]
    ttl = meta["ttl_days"] * 86_400 * 1_000_000
    out = np.full((sample.size, len(meta["views"]) * meta["n_features"]), np.nan)
    for v, name in enumerate(meta["views"]):
        view = pd.read_parquet(meta["sources"][name])
        view = view[view["entity_id"].isin(set(ids.tolist()))]
        groups = {key: frame for key, frame in view.groupby("entity_id")}
        for i, (entity, at) in enumerate(zip(ids, when, strict=True)):
            rows = groups.get(entity)
            if rows is None:
                cases["unknown entity"] += 1
                continue
            event, created = micros(rows["event_ts"]), micros(rows["created_ts"])
            ok = (event <= at) & (at - event <= ttl)
            if not ok.any():
                cases["before any feature row" if not (event <= at).any() else "older than TTL"] += 1
                continue
            best = max(np.flatnonzero(ok), key=lambda k: (event[k], created[k]))
            cases["matched"] += 1
            cases["tie on event ts decided by created ts"] += int((event == event[best]).sum() > 1)
            cases["exactly at TTL"] += int(at - event[best] == ttl)
            cases["exactly on event ts"] += int(at == event[best])
            start = v * meta["n_features"]
            names = [f"f{j}" for j in range(meta["n_features"])]
            out[i, start:start + meta["n_features"]] = rows[names].to_numpy()[best]
    return out


def compare(meta: dict, folder: Path, engines: list[str], seed: int) -> dict:
    import numpy as np
    import pandas as pd

    n = meta["n_entity_rows"]
    columns = feature_columns(meta)
    entities = pd.read_parquet(meta["entities"])
    results = {e: pd.read_parquet(folder / f"result_{e}.parquet") for e in engines
               if (folder / f"result_{e}.parquet").exists()}
    reference_name = "merge_asof" if "merge_asof" in results else next(iter(results), None)
    sample = np.random.default_rng(seed + 1).choice(n, min(2_000, n), replace=False)
    cases = dict.fromkeys(["matched", "tie on event ts decided by created ts", "exactly at TTL",
                           "exactly on event ts", "before any feature row", "older than TTL",
                           "unknown entity"], 0)
    truth = oracle(meta, sample, cases)

    def same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return ((a == b) | (np.isnan(a) & np.isnan(b))).all(axis=1)

    reference = None
    if reference_name is not None:
        ref = results[reference_name]
        positions = np.empty(n, dtype=np.int64)
        positions[ref["row_id"].to_numpy()] = np.arange(len(ref))
        reference = ref[columns].to_numpy(dtype=float)[positions]
    out = {}
    for engine, frame in results.items():
        ids = frame["row_id"].to_numpy()
        counts = np.bincount(ids, minlength=n)
        values = frame[columns].to_numpy(dtype=float)
        row = {
            "rows": len(frame),
            "dropped": int((counts == 0).sum()),
            "duplicated": int((counts[counts > 1] - 1).sum()),
            "order_kept": bool(len(frame) == n and (ids == entities["row_id"].to_numpy()).all()),
            "entity_ok": bool((frame["entity_id"].to_numpy() == entities["entity_id"].to_numpy()[ids]).all()),
            "null_rows": int(np.isnan(values).all(axis=1).sum()),
        }
        if reference is not None:
            bad = ~same(values, reference[ids])
            row["differ"] = int(np.unique(ids[bad]).size)
        # Oracle: first occurrence of each sampled id.
        first = np.full(n, -1, dtype=np.int64)
        first[ids[::-1]] = np.arange(len(ids))[::-1]
        located = first[sample]
        present = located >= 0
        row["oracle_bad"] = int((~same(values[located[present]], truth[present])).sum() + (~present).sum())
        out[engine] = row
    out["_reference"] = reference_name
    out["_sample"] = int(sample.size)
    out["_cases"] = cases
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every row count (0.1: 10x smaller)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=5,
                        help="rounds; each runs every engine once, in turn (medians reported)")
    parser.add_argument("--skip-feast", action="store_true", help="run ours and merge_asof only")
    parser.add_argument("--explain", action="store_true",
                        help="also time the steps of ours one by one (a separate, untimed run)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (data, results, logs)")
    parser.add_argument("--floor", action="store_true",
                        help="also time ours without the join (reads and output only), in the same rounds")
    parser.add_argument("--numpy-avx512", action="store_true",
                        help="keep numpy's AVX-512 kernels in every engine, also on an AMD Zen 4 (see below)")
    parser.add_argument("--cold", action="store_true",
                        help="drop each engine's input files from the page cache before its timed call (default: "
                             "read them into it, so that every engine starts warm)")
    parser.add_argument("--engine", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compare", help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        engine_main(args.engine, args.dir, args.explain, args.cold)
        return
    if args.generate:
        started = time.perf_counter()
        meta = generate(args.dir, args.scale, args.seed)
        print("RESULT " + json.dumps({"seconds": time.perf_counter() - started, **meta}), flush=True)
        return
    if args.prepare:
        meta = json.loads((args.dir / "meta.json").read_text())
        print("RESULT " + json.dumps(run_prepare(meta)), flush=True)
        return
    if args.compare:
        meta = json.loads((args.dir / "meta.json").read_text())
        print("RESULT " + json.dumps(compare(meta, args.dir, args.compare.split(","), args.seed)), flush=True)
        return

    # Every engine runs with the same numpy settings: on an AMD Zen 4, importing mlops_pipelines
    # turns numpy's AVX-512 kernels off (its AVX-512 sort is ~5x slower there, see
    # mlops_pipelines/numpy_sort.py). The engines import numpy before mlops_pipelines, so the
    # driver sets it in their environment, for Feast's and merge_asof's processes too.
    sys.path.insert(0, str(HERE.parent))
    from mlops_pipelines import numpy_sort  # (no numpy here: the package sets the variable as for a user)

    if args.numpy_avx512:
        os.environ[numpy_sort.VARIABLE] = ""  # (numpy's defaults)
    numpy_setting = os.environ.get(numpy_sort.VARIABLE)

    engines = ["ours", "ours_source", "merge_asof"] + ([] if args.skip_feast else ["feast"])
    feast_python = None if args.skip_feast else str(ensure_feast_venv())
    folder = Path(tempfile.mkdtemp(prefix="fs_bench_"))
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start "
          "(timings are only comparable on an otherwise idle machine)", flush=True)
    print(f"numpy in every engine: {numpy_sort.VARIABLE}={numpy_setting!r} "
          + ("(AVX-512 kernels off: mlops_pipelines sets this on an AMD Zen 4, where numpy's AVX-512 sort is ~5x "
             "slower; --numpy-avx512 keeps them)" if numpy_setting else "(numpy's defaults)"), flush=True)
    try:
        meta, _, _ = child(sys.executable, ["--generate", "--scale", str(args.scale), "--seed", str(args.seed)],
                           folder, "generate")
        if meta is None:
            sys.exit(1)
        print(f"scale {args.scale:g}, seed {args.seed}: {N_VIEWS} views x {meta['n_rows']:,} rows x "
              f"{N_FEATURES} features, {meta['n_entities']:,} entities, {meta['n_entity_rows']:,} entity rows "
              f"({meta['duplicate_entity_rows']:,} duplicates), TTL {TTL_DAYS} d; "
              f"generated in {meta['seconds']:.1f} s (not timed below)", flush=True)
        prepared, _, _ = child(sys.executable, ["--prepare"], folder, "prepare")
        if prepared is None:
            sys.exit(1)
        print(f"ours' prepared copies (FeatureStore.prepare, once, not timed below): {prepared['seconds']:.2f} s, "
              f"{prepared['megabytes']:,.0f} MB: " + "; ".join(f"{k} {v}" for k, v in prepared["done"].items()),
              flush=True)
        timed_engines = engines + (["floor"] if args.floor else [])
        pythons = {engine: feast_python if engine == "feast" else sys.executable for engine in timed_engines}
        print("page cache: " + ("each engine's input files dropped from it before its timed call (--cold)" if args.cold
                                else "each engine's input files read into it before its timed call"), flush=True)
        reports = run_engines(pythons, folder, args.repeat, args.cold)
        for engine, r in reports.items():
            if not r.get("failed"):
                print(f"  {engine}: {', '.join(f'{t:.2f}' for t in r['times'])} s (sorted), "
                      f"peak RSS {r['peak_kb'] / 1024:,.0f} MB", flush=True)
        print(f"  load average {os.getloadavg()[0]:.2f} at the end", flush=True)
        checks, _, _ = child(sys.executable, ["--compare", ",".join(engines), "--seed", str(args.seed)],
                             folder, "compare")
        print_table(engines, reports, checks or {"_reference": "(comparison failed)", "_sample": 0})
        floor = reports.get("floor")
        if floor and not floor.get("failed"):
            line = (f"\nfloor (ours without the join: entity read, reads of the prepared copies, output frame): "
                    f"median {floor['seconds']:.2f} s, user {floor['user']:.2f} s, sys {floor['sys']:.2f} s, "
                    f"{floor['faults'] / 1000:,.0f}k faults")
            feast = reports.get("feast")
            if feast and not feast.get("failed"):
                line += f"; feast / floor x{feast['seconds'] / floor['seconds']:.2f}"
            print(line)
        if args.explain:
            plan, peak, _ = child(sys.executable, ["--engine", "ours", "--explain"], folder, "explain")
            print("\nThe steps of ours (a separate, untimed run, "
                  f"peak RSS {peak / 1024:,.0f} MB):")
            print(plan["explain"] if plan else "(failed)")
        if args.keep:
            print(f"\nkept {folder}")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


def print_table(engines: list[str], reports: dict, checks: dict) -> None:
    print("\nwall s: median of the runs; user s, sys s, faults k, disk MB: medians of the timed call's CPU, minor "
          "page faults (thousands) and megabytes read from the disk; "
          f"row-by-row comparison on row_id against {checks['_reference']}; "
          f"oracle bad = wrong rows among {checks['_sample']:,} sampled entity rows checked by brute force")
    if checks.get("_cases"):
        print("sampled rows x views: " + ", ".join(f"{k} {v:,}" for k, v in checks["_cases"].items()))
    header = (f"{'engine':<14}{'wall s':>9}{'best s':>8}{'user s':>8}{'sys s':>7}{'faults k':>10}{'disk MB':>9}"
              f"{'peak RSS MB':>13}"
              f"{'RSS at start MB':>17}{'rows':>11}"
              f"{'dropped':>9}{'dup':>7}{'differ':>8}{'order':>7}{'oracle bad':>12}")
    print(header)
    print("-" * len(header))
    for engine in engines:
        r, c = reports[engine], checks.get(engine)
        label = engine if engine != "feast" or r.get("failed") else f"feast {r['version']}"
        if r.get("failed") or c is None:
            print(f"{label:<14}{'failed':>9}{r['peak_kb'] / 1024:>13,.0f}")
            continue
        print(f"{label:<14}{r['seconds']:>9.2f}{r['best']:>8.2f}{r['user']:>8.2f}{r['sys']:>7.2f}"
              f"{r['faults'] / 1000:>10,.0f}{r['disk_mb']:>9,.0f}{r['peak_kb'] / 1024:>13,.0f}"
              f"{r['rss_before_kb'] / 1024:>17,.0f}"
              f"{c['rows']:>11,}{c['dropped']:>9,}{c['duplicated']:>7,}{c.get('differ', 0):>8,}"
              f"{'yes' if c['order_kept'] else 'no':>7}{c['oracle_bad']:>12,}")
    for name in ("ours", "ours_source"):
        ours = reports.get(name, {})
        if ours.get("failed") or not ours:
            continue
        print()
        for engine, target in (("feast", 8.0), ("merge_asof", 2.0)):
            r = reports.get(engine)
            if r and not r.get("failed"):
                ratio = r["seconds"] / ours["seconds"]
                memory = r["peak_kb"] / ours["peak_kb"]
                verdict = "meets" if ratio >= target else "MISSES"
                cpu = (r["user"] + r["sys"]) / (ours["user"] + ours["sys"])
                print(f"{engine} / {name}: time x{ratio:.2f} ({verdict} target x{target:g}), peak RSS x{memory:.2f}; "
                      f"CPU (user + sys) x{cpu:.2f}, user CPU x{r['user'] / ours['user']:.2f}")
        peak_mb = ours["peak_kb"] / 1024
        print(f"{name} peak RSS {peak_mb:,.0f} MB ({'meets' if peak_mb < 1536 else 'MISSES'} target < 1,536 MB)")


if __name__ == "__main__":
    main()
