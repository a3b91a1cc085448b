"""The raw lake: content-addressed, write-once parquet files.

Each table (or month of flights) lives in its own folder; a file is named by the SHA-256 of its
bytes, written once and made read-only. A small ``_CURRENT`` pointer names the file in force, so
a corrected re-delivery adds a new file and never edits an old one, and re-ingesting the same
content writes nothing at all.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from dagster import ConfigurableResource
from pydantic import Field

from mlops_pipelines.paths import ProjectPaths

POINTER_NAME = "_CURRENT"


@dataclass(frozen=True)
class LakeFile:
    """One immutable raw file: where it is, its content hash, its rows, and whether this call wrote it."""

    path: Path
    sha256: str
    num_rows: int
    written: bool


def _parquet_bytes(table: pa.Table) -> bytes:
    # Fixed writer settings so that the same table always gives the same bytes (and hash).
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", write_statistics=True, store_schema=True)
    return sink.getvalue().to_pybytes()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_content_addressed(folder: Path, data: pa.Table) -> LakeFile:
    """Write ``data`` as ``<folder>/<sha256[:16]>.parquet`` once, read-only, and point ``_CURRENT`` at it."""
    content = _parquet_bytes(data)
    digest = hashlib.sha256(content).hexdigest()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{digest[:16]}.parquet"
    written = False
    if path.exists():
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise RuntimeError(f"{path}: immutable file was modified after it was written")
    else:
        _atomic_write(path, content)
        path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        written = True
    pointer = folder / POINTER_NAME
    if not pointer.exists() or pointer.read_text().strip() != path.name:
        _atomic_write(pointer, f"{path.name}\n".encode())
    return LakeFile(path=path, sha256=digest, num_rows=data.num_rows, written=written)


class RawLake(ConfigurableResource):
    """The raw lake under ``<data_dir>/lake/raw`` and the landing folder users drop files into."""

    data_dir: str = Field(description="The project's data folder (holds lake/raw and landing).")

    @property
    def paths(self) -> ProjectPaths:
        return ProjectPaths(Path(self.data_dir))

    @property
    def landing_dir(self) -> Path:
        return self.paths.landing_dir

    def folder(self, table: str, partition: str | None = None) -> Path:
        base = self.paths.raw_dir / table
        return base / f"month={partition}" if partition else base

    def write(self, table: str, data: pa.Table, partition: str | None = None) -> LakeFile:
        """Store ``data`` once; a second call with the same content changes nothing on disk."""
        return write_content_addressed(self.folder(table, partition), data)

    def snapshot(self, name: str, data: pa.Table) -> LakeFile:
        """An immutable, content-addressed snapshot of a derived table (e.g. a training set)."""
        return write_content_addressed(self.paths.data_dir / "lake" / "snapshots" / name, data)

    def current(self, table: str, partition: str | None = None) -> Path:
        """The raw file in force for a table or partition; raises if it was never ingested."""
        folder = self.folder(table, partition)
        pointer = folder / POINTER_NAME
        if not pointer.exists():
            where = f"{table} partition {partition}" if partition else table
            raise FileNotFoundError(f"raw {where} has not been ingested yet (no {pointer})")
        return folder / pointer.read_text().strip()

    def read(self, table: str, partition: str | None = None) -> tuple[pa.Table, Path]:
        path = self.current(table, partition)
        return pq.read_table(path), path
