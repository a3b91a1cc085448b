"""The ``mlops`` command line."""

from __future__ import annotations

import argparse
import sys

from mlops_pipelines.paths import DATA_DIR_ENV, ProjectPaths


def _demo(args: argparse.Namespace) -> int:
    import os
    import time

    paths = ProjectPaths.from_env()
    os.environ[DATA_DIR_ENV] = str(paths.data_dir)
    from mlops_pipelines.ingest.sources import FLIGHT_MONTHS
    from mlops_pipelines.lifecycle import run_lifecycle
    from mlops_pipelines.summary import collect_summary, format_summary

    months = [m for m in FLIGHT_MONTHS if args.months is None or m in args.months]
    started = time.perf_counter()
    print(f"mlops demo: data folder {paths.data_dir}, DAGSTER_HOME {paths.dagster_home}")
    result = run_lifecycle(paths, months)
    print(format_summary(collect_summary(paths)))
    print(f"\nwall time {time.perf_counter() - started:.1f} s")
    if not result.success:
        failed = result.failed
        print(f"\nmlops demo: stopped at '{failed.name}' (run {failed.run_id}); nothing after it ran.")
        return 1
    return 0


def _summary(_args: argparse.Namespace) -> int:
    from mlops_pipelines.summary import collect_summary, format_summary

    print(format_summary(collect_summary(ProjectPaths.from_env())))
    return 0


def _features_list(_args: argparse.Namespace) -> int:
    import duckdb

    paths = ProjectPaths.from_env()
    from mlops_pipelines.warehouse import table_exists

    if not paths.warehouse_path.exists():
        print(f"no warehouse at {paths.warehouse_path}: run `mlops demo` first", file=sys.stderr)
        return 1
    with duckdb.connect(str(paths.warehouse_path), read_only=True) as connection:
        if not table_exists(connection, "features", "registry"):
            print("no feature view materialized yet", file=sys.stderr)
            return 1
        rows = connection.execute(
            "select name, version, entities, event_timestamp, ttl_seconds, row_count, materialized_at "
            "from features.registry order by name"
        ).fetchall()
    print(f"{'view':<28} {'version':<17} {'entities':<22} {'event ts':<12} {'ttl s':>8} {'rows':>9}  materialized")
    for name, version, entities, ts, ttl, count, at in rows:
        print(f"{name:<28} {version:<17} {entities:<22} {ts:<12} {ttl or 0:>8.0f} {count:>9,}  {at:%Y-%m-%d %H:%M}")
    return 0


def _read_frame(path: str):
    import pandas as pd

    if path.endswith(".parquet"):
        return pd.read_parquet(path)
    if path.endswith(".csv"):
        return pd.read_csv(path)
    raise ValueError(f"{path}: expected a .parquet or .csv file")


def _features_historical(args: argparse.Namespace) -> int:
    from mlops_pipelines.resources import build_resources

    paths = ProjectPaths.from_env()
    if not paths.warehouse_path.exists():
        raise ValueError(f"no warehouse at {paths.warehouse_path}: run `mlops demo` first")
    entities = _read_frame(args.entities)
    store = build_resources(paths)["feature_store"].store()  # type: ignore[attr-defined]
    features = [f.strip() for f in args.features.split(",") if f.strip()]
    out = store.get_historical_features(entities, features, args.full_feature_names, args.timestamp_column)
    if args.out.endswith(".parquet"):
        out.to_parquet(args.out, index=False)
    elif args.out.endswith(".csv"):
        out.to_csv(args.out, index=False)
    else:
        raise ValueError(f"{args.out}: expected a .parquet or .csv file")
    print(f"{len(out)} rows, {len(features)} features -> {args.out}")
    return 0


def _drift(args: argparse.Namespace) -> int:
    import json

    from mlops_pipelines.monitoring.drift import detect_drift

    reference, current = _read_frame(args.reference), _read_frame(args.current)
    categorical = [c.strip() for c in args.categorical.split(",")] if args.categorical else None
    report = detect_drift(reference, current, categorical=categorical)
    if args.json:
        print(json.dumps(report.to_dict(), default=float, indent=2))
        return 0
    frame = report.to_frame()[["column", "test", "statistic", "p_value", "psi", "wasserstein_normalised",
                               "jensen_shannon", "decided_by", "drift", "severity"]]
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"\n{len(report.drifted_columns)} of {len(report.columns)} columns drifted "
          f"({report.share_drifted:.0%}); dataset drift: {report.dataset_drift}")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    import shutil
    import time
    from pathlib import Path

    from mlops_pipelines.monitoring.replay import run_replay, write_timeline

    folder = Path(args.data_dir).resolve() if args.data_dir else ProjectPaths.from_env().data_dir / "replay"
    if folder.exists():
        shutil.rmtree(folder)  # the replay owns this folder and always starts from empty
    started = time.perf_counter()
    timeline = run_replay(ProjectPaths(folder), args.start, args.end, args.initial_months)
    written = write_timeline(timeline, folder / "reports")
    print(timeline.drop(columns=["top_drifted"]).to_string(index=False))
    print(f"\ntimeline: {', '.join(str(p) for p in written.values())}")
    print(f"wall time {time.perf_counter() - started:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlops", description="The mlops-pipelines lifecycle.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the whole lifecycle on the bundled data through Dagster")
    demo.add_argument("--months", nargs="*", metavar="YYYY-MM", help="only these flight months")
    demo.set_defaults(func=_demo)
    commands.add_parser("summary", help="rows per layer, quarantine, champion").set_defaults(func=_summary)
    features = commands.add_parser("features", help="the feature store")
    feature_commands = features.add_subparsers(dest="features_command", required=True)
    feature_commands.add_parser("list", help="registered feature views").set_defaults(func=_features_list)
    historical = feature_commands.add_parser(
        "historical", help="point-in-time features for the rows of an entity file")
    historical.add_argument("--entities", required=True, help="parquet or CSV: join keys and a timestamp")
    historical.add_argument("--features", required=True, help="view:feature,view:feature,...")
    historical.add_argument("--out", required=True, help="parquet or CSV to write")
    historical.add_argument("--timestamp-column", default="event_timestamp",
                            help="the entities' timestamp column (naive = UTC); default event_timestamp")
    historical.add_argument("--full-feature-names", action="store_true", help="name columns view__feature")
    historical.set_defaults(func=_features_historical)
    drift = commands.add_parser("drift", help="drift of each column of CURRENT against REFERENCE")
    drift.add_argument("--reference", required=True, help="parquet or CSV")
    drift.add_argument("--current", required=True, help="parquet or CSV")
    drift.add_argument("--categorical", help="comma-separated categorical columns (default: non-numeric ones)")
    drift.add_argument("--json", action="store_true", help="print the report as JSON")
    drift.set_defaults(func=_drift)
    simulate = commands.add_parser("simulate", help="replay months one by one: drift, sensor, retraining")
    simulate.add_argument("--start", default="2013-01", metavar="YYYY-MM")
    simulate.add_argument("--end", default="2013-12", metavar="YYYY-MM")
    simulate.add_argument("--initial-months", type=int, default=3,
                          help="months ingested before the first champion (trained on all but the last)")
    simulate.add_argument("--data-dir", help="the replay's own folder, emptied first (default: data/replay)")
    simulate.set_defaults(func=_simulate)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError, LookupError, FileNotFoundError, OSError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"mlops {args.command}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
