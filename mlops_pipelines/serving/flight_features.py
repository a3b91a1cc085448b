"""From a flight as a user knows it to the model's input row: schedule features computed from
the request, the rest read from the online store.

The schedule features are derived exactly as the warehouse derives them: the local hour and ISO
day of week are those of the scheduled departure in the origin's own offset (the request carries
it), the distance is the request's. Feature-view values come from the online store as of its
materialization instant, with the same TTL rule as the offline store, so a vector served here is
the vector the batch path computes at that instant.

Reads use one read-only SQLite connection per thread (WAL: a materialization may write meanwhile);
each request reads every view's watermark and rows in one transaction, so it never mixes two
materializations.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from mlops_pipelines.features.online import OnlineStore
from mlops_pipelines.features.views import FeatureView
from mlops_pipelines.serving.schema import Flight

SCHEDULE_COLUMNS = ("carrier", "origin", "dest", "sched_dep_hour_local", "day_of_week", "distance_miles")
# Entity columns of the feature views, as the request names them.
ENTITY_FIELDS = {"carrier": "carrier", "origin": "origin", "dest": "dest", "tailnum": "tailnum"}


def schedule_features(flight: Flight) -> dict[str, Any]:
    """The features of the schedule itself (``SCHEDULE_FEATURES`` of the training set)."""
    local = flight.local_departure
    return {
        "carrier": flight.carrier,
        "origin": flight.origin,
        "dest": flight.dest,
        "sched_dep_hour_local": float(local.hour),
        "day_of_week": float(local.isoweekday()),
        "distance_miles": float(flight.distance),
    }


def view_columns(views: Sequence[FeatureView], columns: Sequence[str]) -> dict[str, list[str]]:
    """The model input columns each view provides (``view name -> feature names``).

    A column no view provides is left out (the model then reports it missing, if it requires it);
    one that several views provide is an error.
    """
    wanted: dict[str, list[str]] = {}
    for column in columns:
        if column in SCHEDULE_COLUMNS:
            continue
        owners = [v.name for v in views if column in v.feature_names]
        if len(owners) > 1:
            raise KeyError(f"model input {column!r} is provided by several feature views {owners}")
        if owners:
            wanted.setdefault(owners[0], []).append(column)
    return wanted


class OnlineFeatureReader:
    """Looks up feature-view values for flights in the online store's SQLite file."""

    def __init__(self, path: str | Path, views: Sequence[FeatureView]) -> None:
        self.path = Path(path)
        self.views = {v.name: v for v in views}
        self._store = OnlineStore(self.path)  # (its lookup only; the reader keeps its own read-only connections)
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            if not self.path.exists():
                raise FileNotFoundError(f"online store {self.path} does not exist: materialize it first")
            connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False,
                                         isolation_level=None)
            self._local.connection = connection
        return connection

    def rows(self, flights: Sequence[Flight], columns: Sequence[str]) -> list[dict[str, Any]]:
        """Model input rows (one per flight, in order) holding ``columns``; nulls where a view has
        no row for the entity within its TTL at the materialization instant."""
        out = [schedule_features(f) for f in flights]
        wanted = view_columns(list(self.views.values()), columns)
        if not wanted:
            return out
        connection = self._connection()
        connection.execute("begin")  # (every view as of one state of the store)
        try:
            for view_name, names in wanted.items():
                view = self.views[view_name]
                # The library's own lookup (key casts, TTL, served types), as get_online_features reads.
                # (the request's codes are text, which Arrow types alone: no pandas on this path)
                keys = [pa.array([getattr(f, ENTITY_FIELDS[k]) for f in flights]) for k in view.entities]
                for name, values in self._store.lookup(connection, view, names, keys).items():
                    # (a list from a store written before types were recorded)
                    for row, value in zip(out, values if isinstance(values, list) else values.to_pylist(),
                                          strict=True):
                        row[name] = value
        finally:
            connection.execute("commit")
        return out
