"""The ``mlops`` command line."""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mlops_pipelines.paths import DATA_DIR_ENV, ProjectPaths


def _demo(args: argparse.Namespace) -> int:
    import os
    import time

    paths = ProjectPaths.from_env()
    os.environ[DATA_DIR_ENV] = str(paths.data_dir)
    from mlops_pipelines.ingest.sources import FLIGHT_MONTHS
    from mlops_pipelines.lifecycle import run_lifecycle, training_window
    from mlops_pipelines.summary import collect_summary, format_summary

    run_config = None
    months = list(FLIGHT_MONTHS)
    if args.months is not None:
        unknown = sorted(set(args.months) - set(FLIGHT_MONTHS))
        if unknown:
            print(f"mlops demo: --months {' '.join(unknown)}: not a month of the data "
                  f"(YYYY-MM, {FLIGHT_MONTHS[0]} to {FLIGHT_MONTHS[-1]})", file=sys.stderr)
            return 2
        months = [m for m in FLIGHT_MONTHS if m in args.months]
        if len(months) < 2:
            print("mlops demo: --months needs two months or more: the model trains on the earlier ones "
                  "and is evaluated on the last", file=sys.stderr)
            return 2
        run_config = {"training": training_window(months)}
    started = time.perf_counter()
    print(f"mlops demo: data folder {paths.data_dir}, DAGSTER_HOME {paths.dagster_home}")
    result = run_lifecycle(paths, months, run_config=run_config)
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

    from mlops_pipelines.features.store import REGISTRY_HEADER, registry_listing

    paths = ProjectPaths.from_env()
    if not paths.warehouse_path.exists():
        print(f"no warehouse at {paths.warehouse_path}: run `mlops demo` first", file=sys.stderr)
        return 1
    online = _online_as_of(paths)
    with duckdb.connect(str(paths.warehouse_path), read_only=True) as connection:
        listed = registry_listing(connection, online)
    if listed is None:
        print("no feature view materialized yet", file=sys.stderr)
        return 1
    lines = [REGISTRY_HEADER, *listed]
    widths = [max(len(line[i]) for line in lines) for i in range(len(REGISTRY_HEADER))]
    for line in lines:
        cells = zip(line, widths, strict=True)
        print("  ".join(cell.rjust(w) if i == 7 else cell.ljust(w) for i, (cell, w) in enumerate(cells)).rstrip())
    return 0


def _online_as_of(paths: ProjectPaths) -> dict[str, str] | None:
    """The instant the online store serves each view as of (the listing's last column), for the
    views of dbt_like_sql/ and those applied from Python; None (each shown as "?", with a note)
    when the online store or the SQL project cannot be read: the registry is listed whatever."""
    import sqlite3

    import duckdb

    from mlops_pipelines.features.sql_project import SqlProject
    from mlops_pipelines.features.store import FeatureStore

    if not paths.online_store_path.exists():
        return {}
    try:
        views = SqlProject().feature_views().values()
        return FeatureStore(paths.warehouse_path, views, online_path=paths.online_store_path).online_as_of()
    except (ValueError, OSError, sqlite3.Error, duckdb.Error) as exc:
        if not _held_by_another_process(str(exc)):  # (else the listing's own read says so, in one line)
            print(f"note: when each view is served online as of is not known ('?'): {exc}", file=sys.stderr)
        return None


def _held_by_another_process(message: str) -> bool:
    """Whether DuckDB's error says another process holds the warehouse's lock."""
    return "Could not set lock" in message or "Conflicting lock" in message


def _read_frame(path: str, keep_index: bool = False):
    """A .parquet file (or a folder of them) or a .csv file (or .csv.gz, .csv.bz2, .csv.xz) as a
    frame, or a ValueError naming the file (and the line). ``keep_index``: a named index pandas
    stored with a parquet file comes back as a column (an entity file's own column, which the
    output would otherwise lose)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    kind = Path(path).suffix.lower()  # ("folder/" and "x.PARQUET" too)
    if kind == ".parquet" or Path(path).is_dir():
        if not Path(path).exists():
            raise ValueError(f"{path}: no such file")
        try:
            dataset = pq.ParquetDataset(path)
            names = _columns_of(dataset.schema)
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"{path}: columns {twice} appear more than once")
            _refuse_files_of_other_columns(path, dataset.files)
            frame = pd.read_parquet(path)
        except (OSError, pa.ArrowException) as exc:
            raise ValueError(f"{path}: not a readable parquet file ({str(exc).splitlines()[0]})") from exc
        named = keep_index and any(name is not None for name in frame.index.names)
        taken = [name for name in frame.index.names if name is not None and name in frame.columns]
        if named and taken:
            raise ValueError(f"{path}: its index {taken[0]!r} (stored by pandas) has the name of a column; "
                             "rename one of them")
        return frame.reset_index() if named else frame.reset_index(drop=True)
    if _is_csv(path):
        return _read_csv(path)
    raise ValueError(f"{path}: expected a .parquet or .csv file (or .csv.gz, .csv.bz2, .csv.xz)")


def _columns_of(schema) -> list[str]:
    """The columns of a parquet schema, without the index pandas may have stored."""
    return [n for n in schema.names if not n.startswith("__index_level_")]


def _refuse_files_of_other_columns(folder: str, files: list[str]) -> None:
    """A folder of parquet files is one frame only when every file has the same columns: Arrow
    reads a folder with the first file's columns, so another file's own columns would be dropped
    (a misspelt key column read as missing, without a word). Files are compared with each other,
    not with the folder's schema: the columns of hive partitions (``month=1/``) are in no file."""
    import pyarrow.parquet as pq

    def named(file: str) -> str:  # (partitions' files may share a name)
        return os.path.relpath(file, folder) if Path(folder).is_dir() else file

    names = _columns_of(pq.read_schema(files[0])) if files else []
    for file in files[1:]:
        own = _columns_of(pq.read_schema(file))
        missing, extra = [n for n in names if n not in own], [n for n in own if n not in names]
        if missing or extra:  # (in another order is the same table: columns are read by name)
            difference = "; ".join(filter(None, (f"lacks {missing}" if missing else "",
                                                 f"has {extra}, which {named(files[0])} has not" if extra else "")))
            raise ValueError(f"{folder}: {named(file)} has other columns than {named(files[0])} "
                             f"({difference}); the files of a folder are read as one table")


# Compressed CSV, by suffix: the module that opens it.
_COMPRESSED_CSV = {".csv.gz": "gzip", ".csv.bz2": "bz2", ".csv.xz": "lzma"}


def _compression(path: str) -> str | None:
    """The module that opens ``path``, a compressed CSV file by its suffix (any case), or None."""
    return _COMPRESSED_CSV.get("".join(Path(path).suffixes[-2:]).lower())


def _is_csv(path: str) -> bool:
    """Whether ``path`` names a CSV file, compressed or not (by its suffix, in any case)."""
    return Path(path).suffix.lower() == ".csv" or _compression(path) is not None


def _read_csv(path: str):
    """Every cell as text, only empty cells missing: a key like "NA" or "00123" stays itself, and
    the store parses keys and timestamps by the views' own types. Rows are named by their line in
    the file (the header is line 1), so that an error names the line to look at; a row with more or
    fewer fields than the header, or a header naming a column twice (or leaving two unnamed), is an
    error. Compressed files (see ``_COMPRESSED_CSV``) are read as the CSV they hold."""
    import csv
    import importlib
    import lzma

    import pandas as pd

    compressed = _compression(path)
    opener = importlib.import_module(compressed).open if compressed else open
    try:
        # (-sig: Excel's byte-order mark)
        with opener(path, "rt", newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if not header:
                raise ValueError(f"{path}: no header line (the column names) at line 1")
            unnamed = [str(i + 1) for i, name in enumerate(header) if not name]
            if len(unnamed) > 1:  # (one is a column as any other: pandas' index, written by to_csv)
                raise ValueError(f"{path}: columns {', '.join(unnamed)} of the header have no name (trailing "
                                 "commas, as spreadsheets may write?): name or remove them")
            twice = sorted({c for c in header if header.count(c) > 1})
            if twice:
                raise ValueError(f"{path}: columns {twice} appear more than once in the header")
            rows, lines = [], []
            for row in reader:
                if not row:
                    continue  # a blank line
                if len(row) != len(header):
                    raise ValueError(f"{path}: line {reader.line_num} has {len(row)} fields, the header "
                                     f"{len(header)}")
                rows.append(row)
                lines.append(reader.line_num)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except (UnicodeDecodeError, csv.Error, EOFError, OSError, lzma.LZMAError) as exc:  # (OSError: not gzip, say)
        raise ValueError(f"{path}: not a readable CSV file ({exc})") from exc
    columns = {name: pd.array([r[i] if r[i] != "" else None for r in rows], dtype="str")
               for i, name in enumerate(header)}
    return pd.DataFrame(columns, index=pd.Index(lines, dtype="int64"))


def _features_prepare(args: argparse.Namespace) -> int:
    from mlops_pipelines.features.errors import store_warnings_told
    from mlops_pipelines.resources import build_resources

    paths = ProjectPaths.from_env()
    if not paths.warehouse_path.exists():
        raise ValueError(f"no warehouse at {paths.warehouse_path}: run `mlops demo` first")
    store = build_resources(paths)["feature_store"].store()  # type: ignore[attr-defined]
    with store_warnings_told(lambda warning: print(f"note: {warning.message}", file=sys.stderr)):
        done = store.prepare(args.views or None)
    width = max((len(name) for name in done), default=0)
    for name, outcome in done.items():
        print(f"{name:<{width}}  {outcome}")
    if not done:
        print("no feature view to prepare", file=sys.stderr)
        return 0
    print(f"prepared copies in {store.prepared_dir}")
    # Views named and not prepared: the request was not done (every view by default: some are tables).
    missed = [name for name in (args.views or ()) if not done[name].startswith("prepared")]
    if missed:
        print(f"not prepared: {', '.join(missed)}", file=sys.stderr)
        return 1
    return 0


def _features_historical(args: argparse.Namespace) -> int:
    from mlops_pipelines.features.errors import FeatureNameCollision
    from mlops_pipelines.features.store import output_names
    from mlops_pipelines.resources import build_resources

    paths = ProjectPaths.from_env()
    if not paths.warehouse_path.exists():
        raise ValueError(f"no warehouse at {paths.warehouse_path}: run `mlops demo` first")
    store = build_resources(paths)["feature_store"].store()  # type: ignore[attr-defined]
    features = [f.strip() for f in args.features.split(",") if f.strip()]
    if not features:
        raise ValueError(f"--features {args.features!r}: no 'view:feature' reference")
    out_kind = Path(args.out).suffix.lower()
    if out_kind not in (".parquet", ".csv"):
        raise ValueError(f"{args.out}: expected a .parquet or .csv file")
    _refuse_output_over_input(args.out, args.entities)
    try:  # (before the entities: an error here is not the file's)
        wanted = store.resolve_features(features)
        output_names(((v, n) for v, names in wanted.items() for n in names), args.full_feature_names)
    except FeatureNameCollision as exc:
        raise ValueError(f"--features: {exc.advising('--full-feature-names')}") from exc
    except (KeyError, ValueError) as exc:
        raise ValueError(f"--features: {exc.args[0] if isinstance(exc, KeyError) else exc}") from exc
    entities = _read_frame(args.entities, keep_index=True)
    _partial_file(args.out).unlink()  # (a folder where nothing can be written: an error before the join)
    out = _historical(store, entities, features, args)
    with _written_whole(args.out) as partial:
        try:
            if out_kind == ".parquet":
                out.to_parquet(partial, index=False)
            else:
                out.to_csv(partial, index=False)
        except OSError as exc:  # (a full disk, say)
            raise ValueError(f"--out {args.out}: not written ({exc.strerror or exc}); a file there before is as "
                             "it was") from exc
    print(f"{len(out)} rows, {len(out.columns) - len(entities.columns)} feature columns -> {args.out}")
    _say_which_rows_cannot_match(store, wanted, entities, args.timestamp_column, "line" if _is_csv(args.entities)
                                 else "row")
    _say_which_views_found_nothing(store, wanted, args.full_feature_names, out)
    return 0


def _refuse_output_over_input(out: str, entities: str) -> None:
    """Refuse an output that would be written over the entity file, or into the entity folder
    (whose files are all read as entity rows: a next run would read the output too). Before the
    join: its time is not spent on an output that cannot be written, or the input lost."""
    target, source = Path(out), Path(entities)
    if target.is_dir():
        raise ValueError(f"--out {out}: a folder; give a file to write")
    if not target.parent.is_dir():
        raise ValueError(f"--out {out}: no folder {target.parent} to write it in")
    if target.exists() and source.exists() and target.samefile(source):
        raise ValueError(f"--out {out}: the entity file itself; give another file for the output")
    if source.is_dir() and source.resolve() in target.resolve().parents:
        raise ValueError(f"--out {out}: inside the entity folder {entities}, every file of which is read as entity "
                         "rows; give a file elsewhere for the output")


def _partial_file(out: str) -> Path:
    """A new, empty hidden file beside the file ``out`` names (beside a symbolic link's target:
    the link stays), with the permissions ``out`` has (or, new, those the umask gives), or a
    ValueError naming ``--out``."""
    target = Path(out).resolve()
    try:
        handle, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    except OSError as exc:
        raise ValueError(f"--out {out}: cannot write in {target.parent} ({exc.strerror})") from exc
    os.close(handle)
    if target.exists():
        mode = stat.S_IMODE(target.stat().st_mode)
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask  # (as a file written in place would be, not mkstemp's 0600)
    os.chmod(partial, mode)
    return Path(partial)


@contextlib.contextmanager
def _written_whole(out: str) -> Iterator[Path]:
    """A hidden file beside ``out`` to write the output into, which becomes ``out`` (replacing
    it at once) when the block ends without error, and is removed otherwise: a failed or
    interrupted write never leaves half a file, nor loses the previous output. Made after the
    join, so that a run killed while joining leaves nothing behind."""
    partial = _partial_file(out)
    try:
        yield partial
        try:
            os.replace(partial, Path(out).resolve())
        except OSError as exc:
            raise ValueError(f"--out {out}: not written ({exc.strerror or exc})") from exc
    finally:
        partial.unlink(missing_ok=True)


def _historical(store, entities, features: list[str], args: argparse.Namespace):
    """``store.get_historical_features`` for the CLI: its errors in the CLI's words, naming the
    entity file (or the view, for a view's fault); its warnings as one-line notes."""
    from mlops_pipelines.features.errors import (
        EntityRowError,
        FeatureNameCollision,
        MissingTimestampColumn,
        store_warnings_told,
    )
    from mlops_pipelines.features.store import ViewReadError

    try:
        with store_warnings_told(lambda warning: print(f"note: {warning.message}", file=sys.stderr)):
            return store.get_historical_features(entities, features, args.full_feature_names, args.timestamp_column)
    except ViewReadError:
        raise  # (the view's source, not the entity file)
    except (KeyError, ValueError) as exc:
        # (the library's advice in the CLI's words; a CSV's rows are named by their line in the file)
        if isinstance(exc, FeatureNameCollision):  # (an entity column named as an output column)
            reason = exc.advising("--full-feature-names")
        elif isinstance(exc, EntityRowError) and _is_csv(args.entities):
            reason = exc.naming_rows("line")
        else:
            reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        if isinstance(exc, MissingTimestampColumn):
            separated = [c for c in entities.columns if ";" in str(c) or "\t" in str(c)]
            reason += (f"; the header {separated[0]!r} looks separated by another character than the comma CSV "
                       "files are read with") if separated else "; name another with --timestamp-column"
        raise ValueError(f"{args.entities}: {reason}") from exc


def _say_which_rows_cannot_match(store, wanted: dict[str, list[str]], entities, timestamp_column: str,
                                 word: str) -> None:
    """A note on standard error for entity rows without a timestamp or a join key (an empty
    cell): no feature can be found for them, which their nulls alone would not tell."""
    def note(rows, missing: str, of: str = "") -> None:
        many = len(rows) > 1
        named = f"{word}{'s' if many else ''} {', '.join(str(label) for label in rows[:5])}{', ...' * (len(rows) > 5)}"
        print(f"note: {len(rows):,} entity row{'s have' if many else ' has'} no {missing} ({named}): no feature{of} "
              f"is found for {'them' if many else 'it'}", file=sys.stderr)

    if timestamp_column in entities.columns:
        rows = entities.index[entities[timestamp_column].isna()]
        if len(rows):
            note(rows, timestamp_column)
    for key in store.entity_keys(wanted):
        rows = entities.index[entities[key].isna()] if key in entities.columns else []
        if len(rows):
            note(rows, key, " of " + ", ".join(v for v in wanted if key in store.views[v].entities))


def _say_which_views_found_nothing(store, wanted: dict[str, list[str]], full_feature_names: bool, out) -> None:
    """A note on standard error for each view of ``wanted`` (from ``resolve_features``) whose
    features asked for are missing in every row: keys are matched as written (' JFK' and 'jfk'
    are not 'JFK'), which is easy to miss in a CSV. (The values may also be missing in the rows
    found: the note says where to look, not why.)"""
    from mlops_pipelines.features.store import output_names

    columns = output_names(((v, n) for v, names in wanted.items() for n in names), full_feature_names)
    for view_name, names in wanted.items():
        if len(out) and out[[columns[view_name, n] for n in names]].isna().all(axis=None):
            keys = ", ".join(store.views[view_name].entities)
            print(f"note: every value of {view_name} asked for is missing; if that is unexpected, check the keys "
                  f"({keys}: matched as written, ' JFK' and 'jfk' are not 'JFK') and the timestamps (a row "
                  "counts at or after its event time, within the view's TTL)", file=sys.stderr)


def _numbers_of_csv(path: str, frame, categorical: list[str] | None):
    """A CSV's columns of numbers as numbers (its cells are read as text, as entity keys need):
    text would be tested as categories, one per distinct number. Columns named ``categorical``
    stay text."""
    import pandas as pd

    if not _is_csv(path):
        return frame
    for name in frame.columns:
        if name not in (categorical or ()):
            try:
                frame[name] = pd.to_numeric(frame[name])
            except (ValueError, TypeError):
                pass  # (some cell is no number: a category column)
    return frame


def _drift(args: argparse.Namespace) -> int:
    import json

    from mlops_pipelines.monitoring.drift import detect_drift

    reference, current = _read_frame(args.reference), _read_frame(args.current)
    categorical = [c.strip() for c in args.categorical.split(",")] if args.categorical else None
    reference, current = _numbers_of_csv(args.reference, reference, categorical), \
        _numbers_of_csv(args.current, current, categorical)
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
    import time

    from mlops_pipelines.monitoring.replay import empty_replay_folder, replay_months, run_replay, write_timeline

    replay_months(args.start, args.end, args.initial_months)  # (refused before anything is emptied)
    default = ProjectPaths.from_env().data_dir / "replay"
    folder = Path(args.data_dir).resolve() if args.data_dir else default.resolve()
    empty_replay_folder(folder, default)  # the replay always starts from empty
    started = time.perf_counter()
    timeline = run_replay(ProjectPaths(folder), args.start, args.end, args.initial_months)
    written = write_timeline(timeline, folder / "reports")
    print(timeline.drop(columns=["top_drifted"]).to_string(index=False))
    print(f"\ntimeline: {', '.join(str(p) for p in written.values())}")
    print(f"wall time {time.perf_counter() - started:.1f} s")
    return 0


def _serve(args: argparse.Namespace) -> int:

    import uvicorn

    from mlops_pipelines.serving.app import ServingSettings, create_app

    settings = ServingSettings.from_paths(ProjectPaths.from_env(), poll_seconds=args.poll_seconds)
    print(f"mlops serve: http://{args.host}:{args.port} (model {settings.model_name}, registry "
          f"{settings.tracking_uri}, online store {settings.online_store_path})")
    # No proxy-header rewriting: the server binds a local address; one ASGI layer less per request.
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level,
                access_log=False, proxy_headers=False)
    return 0


def _control():
    from mlops_pipelines.resources import build_resources
    from mlops_pipelines.serving.control import DeploymentControl

    paths = ProjectPaths.from_env()
    registry = build_resources(paths)["mlflow_registry"]
    return paths, DeploymentControl(registry.tracking_uri, registry.model_name, paths.deployment_outbox)


def _record(paths: ProjectPaths, control, event) -> None:
    """Print the event and copy the outbox into the ledger when the warehouse is free."""
    import duckdb

    print(f"{event.decision}: {event.reason} (champion {event.champion_before} -> {event.champion_after}, "
          f"strategy {event.strategy}, share {event.share:g}; event {event.event_id})")
    if not paths.warehouse_path.exists():
        return
    from mlops_pipelines.serving.control import import_outbox

    try:
        with duckdb.connect(str(paths.warehouse_path)) as connection:
            import_outbox(connection, control.outbox)
    except duckdb.IOException:
        print("the warehouse is busy: the event stays in the outbox and reaches the ledger on the next "
              "deployment_controller run", file=sys.stderr)


def _deploy(args: argparse.Namespace) -> int:
    paths, control = _control()
    try:
        ramp = tuple(float(s) for s in args.ramp.split(",")) if args.ramp else None
    except ValueError:
        raise ValueError(f"--ramp {args.ramp!r}: expected fractions separated by commas, e.g. 0.05,0.25,0.5,1") \
            from None
    event = control.deploy(args.strategy, args.challenger_alias, args.share, args.sample_size, ramp)
    _record(paths, control, event)
    return 0


def _rollback(args: argparse.Namespace) -> int:
    paths, control = _control()
    _record(paths, control, control.rollback(args.reason))
    return 0


def _promote(args: argparse.Namespace) -> int:
    paths, control = _control()
    _record(paths, control, control.promote(args.alias, args.reason))
    return 0


def _deployment(_args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    _paths, control = _control()
    print(json.dumps({"aliases": control.aliases(), "deployment": asdict(control.deployment())}, indent=2))
    return 0


def _lineage(args: argparse.Namespace) -> int:
    import json
    import tempfile
    from pathlib import Path

    _paths, control = _control()
    client, name = control.client, control.model_name
    from mlflow.exceptions import MlflowException

    version = control.aliases().get(args.version, args.version)
    try:
        found = client.get_model_version(name, version)
    except MlflowException:
        raise LookupError(f"{name!r} has no version or alias {args.version!r}") from None
    run = client.get_run(found.run_id)
    with tempfile.TemporaryDirectory() as folder:
        features = json.loads(Path(client.download_artifacts(found.run_id, "features.json", folder)).read_text())
    out = {
        "model": name, "version": str(found.version),
        "aliases": [a for a, v in control.aliases().items() if v == str(found.version)],
        "created": found.creation_timestamp, "mlflow_run_id": found.run_id,
        "dagster_run_id": found.tags.get("dagster_run_id"),
        "code": {"code_version": found.tags.get("code_version"), "git_commit": found.tags.get("git_commit")},
        "data": {"training_set_sha256": found.tags.get("data_sha256"), "train_window": found.tags.get("train_window"),
                 "holdout_window": found.tags.get("holdout_window")},
        "features": features,
        "params": run.data.params,
        "metrics": {k: v for k, v in sorted(run.data.metrics.items())},
        "gates": {k.removeprefix("gate."): v for k, v in run.data.tags.items() if k.startswith("gate.")},
    }
    print(json.dumps(out, indent=2, default=str))
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
    prepare = feature_commands.add_parser(
        "prepare", help="copy views over local files in the form retrievals read (memory-mapped, much faster)")
    prepare.add_argument("views", nargs="*", metavar="VIEW", help="views to prepare (default: every view)")
    prepare.set_defaults(func=_features_prepare)
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
    drift.add_argument("--categorical", help="comma-separated numeric columns to compare as categories (text "
                       "columns always are)")
    drift.add_argument("--json", action="store_true", help="print the report as JSON")
    drift.set_defaults(func=_drift)
    simulate = commands.add_parser("simulate", help="replay months one by one: drift, sensor, retraining")
    simulate.add_argument("--start", default="2013-01", metavar="YYYY-MM")
    simulate.add_argument("--end", default="2013-12", metavar="YYYY-MM")
    simulate.add_argument("--initial-months", type=int, default=3,
                          help="months ingested before the first champion (trained on all but the last)")
    simulate.add_argument("--data-dir", help="the replay's own folder, emptied first: new, empty or a replay's "
                          "(default: data/replay)")
    simulate.set_defaults(func=_simulate)
    serve = commands.add_parser("serve", help="the prediction service (FastAPI): /predict, /health, /ready, /metrics")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--poll-seconds", type=float, default=2.0, help="registry poll interval (alias changes)")
    serve.add_argument("--log-level", default="warning")
    serve.set_defaults(func=_serve)
    deploy = commands.add_parser("deploy", help="serve a challenger beside the champion: shadow, canary, ab")
    deploy.add_argument("--strategy", required=True, choices=["single", "shadow", "canary", "ab"])
    deploy.add_argument("--challenger-alias", default="challenger")
    deploy.add_argument("--share", type=float, help="challenger's share: canary start (default: first ramp "
                        "step), ab split (0.5), shadow sample (1.0)")
    deploy.add_argument("--sample-size", type=int, default=0, help="ab: labelled predictions per arm")
    deploy.add_argument("--ramp", help="canary steps, e.g. 0.05,0.25,0.5,1 (the last promotes)")
    deploy.set_defaults(func=_deploy)
    rollback = commands.add_parser("rollback", help="end a running experiment, or put the previous champion back")
    rollback.add_argument("--reason", default="rolled back by hand")
    rollback.set_defaults(func=_rollback)
    promote = commands.add_parser("promote", help="make the version of an alias the champion")
    promote.add_argument("--alias", default="challenger")
    promote.add_argument("--reason", default="promoted by hand")
    promote.set_defaults(func=_promote)
    commands.add_parser("deployment", help="aliases and the deployment record").set_defaults(func=_deployment)
    lineage = commands.add_parser("lineage", help="what a model version was built from: data, code, features")
    lineage.add_argument("version", help="version number or alias")
    lineage.set_defaults(func=_lineage)
    args = parser.parse_args(argv)
    # Every model download (serving's alias changes, lineage, the replay's and controller's runs)
    # would draw MLflow's progress bar into the output or the server's log.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        return args.func(args)
    except (ValueError, KeyError, LookupError, FileNotFoundError, OSError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"mlops {args.command}: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mlops {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if type(error).__name__ == "InterruptException":  # (Ctrl-C inside a DuckDB query)
            print(f"mlops {args.command}: interrupted", file=sys.stderr)
            return 130
        # DuckDB's errors about the file itself (held by another process, damaged) in one line;
        # its other errors keep their traceback (they are the project's faults).
        message = str(error).splitlines()[0]
        about_the_file = type(error).__name__ == "IOException" or message.startswith("Corrupt database file")
        if not about_the_file or type(error).__module__.split(".")[0] not in ("duckdb", "_duckdb"):
            raise
        if _held_by_another_process(message):
            message = (f"the warehouse is in use by another process (a Dagster run, `mlops demo`?): try again "
                       f"when it ends ({message})")
        print(f"mlops {args.command}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
