"""The prediction log: every answer the serving process gives, written off the request path.

Requests put rows on an in-memory queue; a writer thread flushes them in batches (every
``flush_seconds`` or ``batch_rows`` rows) to parquet files under ``data/prediction_log/``, each
written to a temporary name and renamed, so a reader never sees half a file. The serving process
owns these files; the ``prediction_log`` asset loads them into the warehouse (single writer).
A full queue drops rows and counts them rather than slow a request down; so does a batch that
cannot be written.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

SCHEMA = pa.schema([
    ("request_id", pa.string()),
    ("item", pa.int32()),
    ("logged_at", pa.timestamp("us", tz="UTC")),
    ("key", pa.string()),
    ("flight_id", pa.string()),
    ("sched_dep_utc", pa.timestamp("us", tz="UTC")),
    ("deployment_id", pa.string()),
    ("strategy", pa.string()),
    ("arm", pa.string()),
    ("model_alias", pa.string()),
    ("model_version", pa.string()),
    ("probability", pa.float64()),
    ("latency_ms", pa.float64()),
    ("model_ms", pa.float64()),
    ("challenger_version", pa.string()),
    ("challenger_probability", pa.float64()),
    ("challenger_error", pa.string()),
    ("features", pa.string()),
])
"""One row per answered item, appended as a tuple in this order (instants as epoch microseconds;
``features`` as a dict, serialized to JSON by the writer). ``latency_ms``: the whole request;
``model_ms``: the predict call that answered the item.
``challenger_*``: the challenger's own score where it scored the item
(canary/ab arm, or shadow), and its error when it failed and the champion answered instead."""


class PredictionLogWriter:
    """Batches rows to parquet files in ``folder`` from a background thread."""

    def __init__(self, folder: str | Path, flush_seconds: float = 1.0, batch_rows: int = 5000,
                 max_queue: int = 200_000, on_write: Callable[[int], None] | None = None,
                 on_drop: Callable[[int], None] | None = None) -> None:
        self.folder = Path(folder)
        self.flush_seconds = flush_seconds
        self.batch_rows = batch_rows
        self.max_queue = max_queue
        self._queue: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._prefix = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._sequence = 0
        # One flush at a time: a caller's flush() returns only after a batch the thread drained is on disk.
        self._flush_lock = threading.Lock()
        self._on_write = on_write
        self._on_drop = on_drop

    def append(self, row: tuple) -> None:
        if self._queue.qsize() >= self.max_queue:
            if self._on_drop is not None:
                self._on_drop(1)
            return
        self._queue.put(row)

    def _drain(self) -> list[tuple]:
        rows: list[tuple] = []
        while len(rows) < self.batch_rows:
            try:
                rows.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return rows

    def flush(self) -> int:
        """Write what is queued now; returns the rows written."""
        written = 0
        with self._flush_lock:
            while rows := self._drain():
                try:
                    self._write(rows)
                except Exception:  # later rows still get their chance; these are counted as lost
                    log.exception("prediction log: %d rows could not be written to %s", len(rows), self.folder)
                    if self._on_drop is not None:
                        self._on_drop(len(rows))
                    continue
                written += len(rows)
        return written

    def _write(self, rows: list[tuple]) -> None:
        # Column by column from tuples: far less time holding the GIL than a list of dicts,
        # which matters because the request handlers share the interpreter with this thread.
        # The model input comes as a dict and is serialized here, off the request path.
        # orjson: the writer holds the GIL for this, so its speed is request latency; NaN -> null.
        rows = [(*row[:-1], orjson.dumps(row[-1], default=str).decode()) for row in rows]
        by_column = zip(*rows, strict=True)
        columns = [pa.array(values, type=field.type) for values, field in zip(by_column, SCHEMA, strict=True)]
        table = pa.Table.from_arrays(columns, schema=SCHEMA)
        day = datetime.fromtimestamp(rows[0][2] / 1_000_000, UTC).strftime("%Y-%m-%d")
        folder = self.folder / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        self._sequence += 1
        final = folder / f"{self._prefix}-{self._sequence:06d}.parquet"
        temporary = final.with_suffix(".parquet.tmp")
        pq.write_table(table, temporary)
        temporary.rename(final)
        if self._on_write is not None:
            self._on_write(len(rows))

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                started = time.monotonic()
                self.flush()
                self._stop.wait(max(0.0, self.flush_seconds - (time.monotonic() - started)))

        self._thread = threading.Thread(target=loop, name="prediction-log", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread and write everything still queued."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()
