"""The point-in-time join of one feature view onto entity rows, as sorted integer searches.

Each feature row becomes one unsigned integer, ``key code << time bits | event time``, and so
does each entity row (with its own timestamp). Once both are sorted, the row an entity row needs
is found by one binary search: the last feature integer <= the entity's is the latest event at
or before the entity's timestamp, and it belongs to the entity when its key code is the same.
Both sorts carry each row's position in the bits left over (``np.sort`` is several times faster
than ``np.argsort``); when no bits are left, ``argsort`` does it.

Why not DuckDB's ASOF join: on 2,000,000 feature rows against 1,000,000 entity rows its
partitioned sort takes ~0.4 s per view on two cores, and deciding ties needs a window or a hash
aggregate on top; here sorts and searches over plain integers take ~0.1 s (benchmarks/RESULTS.md).

What costs most on small machines is new memory, not arithmetic: arrays are overwritten in place
once no longer needed, a :class:`Workspace` keeps scratch arrays from one view to the next, and
columns are read chunk by chunk rather than joined into one array first.

Semantics are those of :mod:`mlops_pipelines.features.store`: latest event <= entity time,
within the TTL (inclusive), ties on (keys, event time) to the latest created timestamp (NULL
last), then to the smallest feature values in the view's declared order (NULL last).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import uuid
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from datetime import date, datetime, time
from decimal import Decimal
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlops_pipelines.features import timestamps
from mlops_pipelines.features.errors import EntityRowError

MICROS_PER_UNIT = {"s": 10**6, "ms": 10**3, "us": 1}  # numpy's and Arrow's coarser time units


NEGATIVE_INFINITY = -(2**63 - 1)  # a TIMESTAMP '-infinity' in DuckDB's microseconds


def micros_of(count: int, unit: str) -> int:
    """``count`` of a time ``unit`` ("s", "ms", "us" or "ns") in microseconds, floored."""
    return count // 1000 if unit == "ns" else count * MICROS_PER_UNIT[unit]


TS = "__ts"
CREATED = "__created"
# A nanosecond event time (TIMESTAMP_NS sources), read beside ``__ts`` as int64 nanoseconds
# (+/-(2**63 - 1) for +/-infinity): the join compares it with the entity times exactly.
TS_NS = "__ts_ns"
WORD = 64


@dataclass(frozen=True)
class EntityRows:
    """The entity side of a join: key columns (Arrow) and timestamps in UTC microseconds."""

    keys: dict[str, pa.Array | pd.Series]  # a Series: objects Arrow types only against the view's key type
    micros: np.ndarray  # int64, floored to the microsecond; meaningless where ``valid`` is False
    valid: np.ndarray  # bool: the timestamp is not null
    # int64: the nanoseconds past ``micros`` (0 to 999), so that a TTL is measured from the true
    # instant and nanosecond events are compared exactly; None when no timestamp has any
    nanos_past: np.ndarray | None = None
    # row -> its true time (µs) where ``micros`` holds the end of DuckDB's range instead (rows
    # beyond it), so that a TTL is measured from the true instant; None when no row is
    beyond: dict[int, int] | None = None
    # how the caller names the rows (a frame's index; a CLI's file lines), for errors; else positions
    labels: pd.Index | None = None

    def __len__(self) -> int:
        return len(self.micros)

    def in_nanoseconds(self) -> EntityRows:
        """The same rows with their instants in nanoseconds (in ``micros``), for a view whose
        event times are nanoseconds. Instants beyond int64's nanoseconds (before 1677, after 2262)
        lie beyond every finite nanosecond event: they are put next to int64's ends, inside the
        infinities (an entity row far in the future still sees no event at +infinity), and their
        true instants are kept in ``beyond`` for the TTL."""
        edge = (2**63 - 1) // 1000  # microseconds whose nanoseconds fit in int64
        past = 0 if self.nanos_past is None else self.nanos_past
        # Inside when the instant lies strictly between the infinities (+/-(2**63 - 1) ns): in the
        # last microsecond, up to 806 ns past it.
        inside = (self.micros >= -edge) & (self.micros <= edge)
        inside &= ~((self.micros == edge) & (past > 2**63 - 2 - edge * 1000))
        nanos = np.clip(self.micros, -edge, edge) * 1000
        nanos += np.where(inside, past, 0)
        beyond = {row: micros * 1000 for row, micros in (self.beyond or {}).items()}
        far = np.flatnonzero(~inside & self.valid)
        for row in far.tolist():
            beyond.setdefault(row, int(self.micros[row]) * 1000 + int(np.broadcast_to(past, len(self))[row]))
        nanos[far] = np.where(self.micros[far] > 0, 2**63 - 2, -(2**63 - 2))
        return replace(self, micros=nanos, nanos_past=None, beyond=beyond or None)


class _HugePages:
    """numpy's process-wide request for transparent huge pages, off while at least one join runs
    (joins may overlap, in threads): the first to start turns it off, the last to end restores it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._before = True

    @contextmanager
    def off(self) -> Iterator[None]:
        try:
            from numpy._core.multiarray import _set_madvise_hugepage as switch
        except ImportError:  # (a numpy without the switch)
            switch = None
        if switch is None or "NUMPY_MADVISE_HUGEPAGE" in os.environ:
            yield
            return
        with self._lock:
            if self._running == 0:
                self._before = switch(False)
            self._running += 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                if self._running == 0:
                    switch(self._before)


_HUGE_PAGES = _HugePages()


def small_pages() -> AbstractContextManager[None]:
    """numpy's large arrays without its request for transparent huge pages, while joining.

    numpy asks the kernel for huge pages (``madvise``) for every array of 4 MB or more. Where the
    kernel compacts memory to find them (THP ``madvise`` mode, as here) and first touches of memory
    are costly (virtual machines), a new array can cost more in the kernel than the work done in
    it: 15 output columns of 1,000,000 floats took 250-290 ms to allocate and fill with huge pages
    and 47-53 ms without. On the benchmark (8 alternating runs, benchmarks/RESULTS.md): median
    0.98 s against 1.04 s, system CPU 0.64-0.78 s against 0.67-1.14 s. The setting is numpy's,
    for the whole process, and only about speed: it is restored when the last join running ends,
    and left alone when the user chose it (``NUMPY_MADVISE_HUGEPAGE``).
    """
    return _HUGE_PAGES.off()


class Workspace:
    """Scratch arrays used again from one view's join to the next in the same thread.

    Fresh memory costs more than the work done in it here: a view of 2,000,000 rows matched
    against 1,000,000 entity rows touched ~19,500 new pages (78 MB) on every call, ~50 ms of its
    ~165 ms. Arrays from :meth:`array` are valid until the next request of the same name.
    """

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def array(self, name: str, size: int, dtype: type) -> np.ndarray:
        """An array of ``size`` values of ``dtype`` (contents undefined): the same memory as the
        last array of this name when that was as large."""
        kept = self._arrays.get(name)
        if kept is None or kept.dtype != np.dtype(dtype) or len(kept) < size:
            kept = self._arrays[name] = np.empty(size, dtype=dtype)
        return kept[:size]

    def give_up(self, count: int, size: int, keep: Collection[str]) -> list[np.ndarray]:
        """Up to ``count`` float64 arrays of ``size`` values made of this workspace's 8-byte
        arrays other than ``keep``, which it then forgets (a later request of their names gets
        new memory). An array is only used when every whole ``size`` in it is: a slice handed
        out keeps its whole array alive."""
        given: list[np.ndarray] = []
        for name in [n for n in self._arrays if n not in keep]:
            whole = self._arrays[name]
            pieces = len(whole) // size if size else 0
            if whole.dtype.itemsize != 8 or pieces == 0 or pieces > count - len(given):
                continue
            del self._arrays[name]
            values = whole.view(np.float64)
            given.extend(values[start * size:(start + 1) * size] for start in range(pieces))
        return given


def _bits(count: int) -> int:
    """Bits to hold 0 .. count - 1."""
    return max(1, int(count - 1).bit_length())


def _or_positions(values: np.ndarray, shift: int) -> None:
    """``values <<= shift`` and each value's position OR-ed into the low bits, in place: block by
    block, so that no array of all positions is made (its fresh pages cost more than the work)."""
    values <<= np.uint64(shift)
    block = 1 << 16
    positions = np.arange(block, dtype=np.uint64)
    step = np.uint64(block)
    for start in range(0, len(values), block):
        part = values[start:start + block]
        part |= positions[:len(part)]
        positions += step


def _identity(count: int, scratch: np.ndarray | None = None) -> np.ndarray:
    """0 .. count - 1 (int64), written block by block into ``scratch`` when given."""
    positions = np.empty(count, dtype=np.int64) if scratch is None else scratch[:count]
    block = 1 << 16
    for start in range(0, count, block):
        part = positions[start:start + block]
        part[:] = np.arange(start, start + len(part))
    return positions


def _sorted_with_positions(values: np.ndarray, value_bits: int, scratch: np.ndarray | None = None,
                           in_order_as_none: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """``values`` (uint64 < 2**value_bits; overwritten) sorted, and each sorted value's position
    (written into ``scratch``, an int64 array as long as ``values``, when given). With
    ``in_order_as_none``, None for the positions of values already in order (0 .. n - 1)."""
    if not (values[1:] < values[:-1]).any():
        # Already in order (a prepared copy's rows are: FeatureStore.prepare): one pass instead
        # of a sort, which took ~30 ms for a view of 2,000,000 rows.
        return values, None if in_order_as_none else _identity(len(values), scratch)
    if not values.flags.writeable:  # (a prepared copy's codes, memory-mapped: never out of order, but checked)
        values = values.copy()
    position_bits = _bits(len(values))
    if value_bits + position_bits <= WORD:
        _or_positions(values, position_bits)
        values.sort()
        positions = np.empty(len(values), dtype=np.int64) if scratch is None else scratch
        np.bitwise_and(values, np.uint64((1 << position_bits) - 1), out=positions.view(np.uint64))
        values >>= np.uint64(position_bits)
        return values, positions
    order = np.argsort(values, kind="stable")
    return values[order], order


def _as_integers(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """An integer column as it is, a TIMESTAMP(us) one as its int64 microseconds (no copy;
    DuckDB stores +/-infinity as the int64 ends)."""
    return column if pa.types.is_integer(column.type) else column.cast(pa.int64())


def _offsets(column: pa.ChunkedArray, origin: int, out: np.ndarray | None = None) -> np.ndarray:
    """``column - origin`` (an integer or TIMESTAMP(us) column without NULLs) as int64, written
    chunk by chunk into ``out`` (or a new array): no joined copy of the column first."""
    column = _as_integers(column)
    if out is None:
        out = np.empty(len(column), dtype=np.int64)
    start = 0
    for chunk in column.chunks:
        values = chunk.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        np.subtract(values, origin, out=out[start:start + len(values)])
        start += len(values)
    return out


def _bounds(column: pa.ChunkedArray) -> tuple[int, int]:
    """The smallest and largest value of an integer or TIMESTAMP(us) column (as integers)."""
    bounds = pc.min_max(_as_integers(column))
    return bounds["min"].as_py(), bounds["max"].as_py()


def _take_rows(column: pa.ChunkedArray, rows: np.ndarray) -> pa.ChunkedArray:
    """``column[rows]``, without joining the column's chunks into one array first (Arrow's take
    on a chunked array does: a copy of the whole column to take a few rows). A chunked array, as
    Arrow's take gives: tables of plain arrays are sorted by another path of Arrow's, which
    refuses dictionaries (ENUM features)."""
    if column.num_chunks == 1:
        return pa.chunked_array([column.chunk(0).take(pa.array(rows, pa.int64()))])
    if column.num_chunks == 0 or len(rows) == 0:
        return column.slice(0, 0)
    pieces = []
    back = np.empty(len(rows), dtype=np.int64)  # where each row lands among the pieces
    done = 0
    for chunk, (inside, within) in zip(column.chunks, _rows_by_chunk([len(c) for c in column.chunks], rows),
                                       strict=True):
        if len(inside):
            pieces.append(chunk.take(pa.array(within)))
            back[inside] = np.arange(done, done + len(inside))
            done += len(inside)
    return pa.chunked_array([pa.concat_arrays(pieces).take(pa.array(back))])


def _rows_by_chunk(lengths: Sequence[int], rows: np.ndarray, skip: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each chunk (of ``lengths`` rows) after the first ``skip``: the positions in ``rows``
    of the row numbers that fall in it, and those rows' numbers within the chunk (row numbers
    below 0 fall in none)."""
    parts = []
    start = sum(lengths[:skip])
    for length in lengths[skip:]:
        inside = rows >= start
        inside &= rows < start + length
        positions = np.flatnonzero(inside)
        parts.append((positions, rows[positions] - start))
        start += length
    return parts


def entity_key_array(values: pd.Series | pa.ChunkedArray | pa.Array) -> pa.Array | pd.Series:
    """Entity key values as Arrow, or as they are when Arrow cannot type them alone (integers
    beyond int64, UUIDs mixed with text): :func:`entity_keys_as` types those against the view's
    key type. Done once per column, whatever the number of views joined."""
    if isinstance(values, pa.ChunkedArray):
        return _nan_as_null(values.combine_chunks())
    if isinstance(values, pa.Array):
        return _nan_as_null(values)
    if values.dtype == object:
        # Objects of one kind (Timestamps, say) as pandas would type them: Arrow alone would take
        # Timestamps in microseconds. Mixed objects stay objects.
        inferred = values.infer_objects()
        if inferred.dtype.kind == "f":
            # Integers with a None among them become floats there, rounded beyond 2**53 (onto
            # another entity's key): Arrow types them as integers with nulls.
            try:
                exact = pa.array(values, from_pandas=True)
                if pa.types.is_integer(exact.type):
                    return exact
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
                pass
            if holds_integers(values, beyond=2**53):
                return values  # (integers and floats: kept as objects, typed against the key's type)
        values = inferred
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        # As UTC instants (pandas deprecates handing Arrow its zone-less values).
        utc = pa.array(values.dt.tz_convert(None).to_numpy(), from_pandas=True)
        return utc.cast(pa.timestamp(utc.type.unit, tz="UTC"))
    types = set(map(type, values)) if values.dtype == object else set()
    # (Decimals of several exponents are kinds of their own: read at once, 7 would take 1.5's
    # scale and be the text '7.0', which a text key '7' is not)
    several_kinds = (len(types) > 1 or Decimal in types) and len({_kind_of_key(v) for v in values} - {None}) > 1
    if several_kinds or (pd.Timestamp in types and any(isinstance(v, pd.Timestamp) and v.nanosecond for v in values)):
        # Objects of several kinds, typed against the key's type kind by kind: Arrow would read
        # them all as the first one's type (an integer beside Timestamps as an instant 1 µs after
        # 1970; datetimes beside dates as dates, without their time of day). Timestamps of
        # several zones (or none) with nanoseconds: Arrow would type them in microseconds,
        # dropping the nanoseconds (a key 1 ns after a row's would find it).
        return values
    try:
        return _nan_as_null(pa.array(values, from_pandas=True))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError, TypeError):
        return values


def holds_integers(values: Iterable, beyond: int = -1) -> bool:
    """Whether ``values`` hold Python or numpy integers (booleans aside) of magnitude above
    ``beyond``: floats would round those beyond 2**53 onto a neighbour."""
    return any(isinstance(v, int | np.integer) and not isinstance(v, bool) and abs(int(v)) > beyond for v in values)


def _nan_as_null(values: pa.Array) -> pa.Array:
    """A NaN entity key matches nothing, as online and as in a numpy column (which pandas reads
    as missing); Arrow arrays and Arrow-backed columns hand NaN over as a value."""
    if pa.types.is_dictionary(values.type) and pa.types.is_floating(values.type.value_type):
        values = values.dictionary_decode()
    if pa.types.is_floating(values.type) and pc.any(pc.is_nan(values)).as_py():
        return pc.if_else(pc.is_nan(values), pa.scalar(None, values.type), values)
    return values


def entity_keys_as(values: pa.Array | pd.Series, wanted: pa.DataType, column: str,
                   uuids: bool = False, labels: pd.Index | None = None, unsigned: bool = False) -> pa.Array:
    """Entity key values as the view's key type ``wanted``, or a ValueError naming the column.

    Text is parsed (a value that does not parse is an error). Any other type is cast and kept
    only where the value survives the way back, so that a value the key type cannot hold (1.106
    as DECIMAL(10, 2), 10:00 as a DATE, 2**40 as INTEGER, 2 as BOOLEAN) matches nothing rather
    than a neighbour. DuckDB hands UUIDs over as text: UUID objects become their canonical text,
    and so does text for a key column that is a UUID in DuckDB (``uuids``, see :func:`is_uuid`).
    ``values``: from :func:`entity_key_array`; ``labels``: the rows' names in errors (else positions);
    ``unsigned``: the key is a UHUGEINT, and decimal integers (DuckDB's Arrow of a UHUGEINT,
    2**128 - 1 as -1) are mended as the view's are (:func:`wide_integers`).
    """
    if isinstance(values, pd.Series):
        # Objects Arrow could not type on its own, e.g. integers beyond int64 or UUIDs mixed with text.
        objects = [str(v) if isinstance(v, uuid.UUID) else pd.Timestamp(v) if isinstance(v, np.datetime64) else v
                   for v in values]
        return _mixed_keys_as(objects, wanted, column, labels, uuids, unsigned)
    if unsigned and pa.types.is_decimal(values.type) and values.type.scale == 0 and values.type.precision <= 39:
        # DuckDB's Arrow of a UHUGEINT (in pandas, Decimals): above 2**127 - 1 negative. Integers
        # stay as given: -1 is no UHUGEINT.
        values = wide_integers(values.cast(WIDE_INTEGER), unsigned=True)
    if pa.types.is_dictionary(values.type):  # (first: a category of uuid.UUID objects holds UUIDs)
        values = values.dictionary_decode()
    if pa.types.is_float16(values.type):  # (exactly, as float32: Arrow compares no half floats)
        values = values.cast(pa.float32())
    if isinstance(values.type, pa.UuidType):
        values = uuid_texts_of(values)
    text = pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
    if uuids and text:
        values = _uuid_texts(values, column, labels)
    if values.type == wanted:
        return values
    if pa.types.is_null(values.type) or values.null_count == len(values):
        # No value at all (every key missing: NaN in a float column too): whatever the type, it matches nothing.
        return pa.nulls(len(values), wanted)
    if uuids:  # (numbers or bytes: their text is no UUID, and would quietly match nothing)
        raise ValueError(f"join key {column!r}: entity values of type {values.type} cannot be compared with the "
                         "view's UUIDs (give uuid.UUID objects or their text)")
    if text and (pa.types.is_timestamp(wanted) or pa.types.is_time(wanted)):
        return entity_keys_as(_parsed_times(values, wanted, column, labels), wanted, column)
    if pa.types.is_temporal(values.type) != pa.types.is_temporal(wanted) and not (text or pa.types.is_string(wanted)):
        # An instant or a duration is no number: Arrow's cast would compare its raw count of
        # (its own) units with the key. DuckDB refuses the comparison too.
        raise ValueError(f"join key {column!r}: entity values of type {values.type} cannot be compared with "
                         f"the view's {wanted}")
    given, parsed, parsed_as = values, values, wanted  # (for errors: the text, what was parsed, as what)
    try:
        if text:
            try:
                return values.cast(wanted)
            except pa.ArrowInvalid:
                if not pa.types.is_integer(wanted):
                    raise
                # Integer text beyond the key's range ('300' for a UTINYINT) or with a fraction
                # ('1.5') matches nothing, as the same number given as a number does: read as a
                # number, exactly (38 digits either side of the point), compared below ('7.0'
                # finds 7, as 7.0 does). An integer of more digits is beyond every integer key:
                # it matches nothing too.
                beyond = pc.match_substring_regex(values, r"^[+-]?0*[1-9]\d{38,}$")
                parsed = pc.if_else(beyond, pa.scalar(None, values.type), values)
                parsed_as = pa.decimal256(76, 38)
                values = parsed.cast(parsed_as)
        source = values
        if pa.types.is_decimal(wanted) and pa.types.is_integer(values.type):
            # (Arrow refuses an int64, which may need 19 digits, to a narrower DECIMAL even unsafely)
            source = values.cast(pa.decimal128(38, 0))
        cast = source.cast(wanted, safe=False)
        kept = pc.fill_null(pc.equal(*_comparable(cast, values)), False)
        if pa.types.is_integer(values.type) and pa.types.is_integer(wanted):
            # Signed and unsigned integers of one width survive the way back wrapped around
            # (-1 and 2**64 - 1): the sign must survive too.
            signs = [pc.less(a, pa.scalar(0, a.type)) for a in (cast, values)]
            kept = pc.and_(kept, pc.fill_null(pc.equal(*signs), False))
        if pa.types.is_decimal(wanted):
            # A cast between decimals of one scale keeps digits beyond the precision (as they
            # come back too): 2**200 is no DECIMAL(39, 0).
            largest = pa.scalar(Decimal(f"{10**wanted.precision - 1}E-{wanted.scale}"), wanted)  # (exact)
            within = pc.and_(pc.less_equal(cast, largest), pc.greater_equal(cast, pc.negate(largest)))
            kept = pc.and_(kept, pc.fill_null(within, False))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        reason = str(exc).splitlines()[0]
        before = (f"join key {column!r}: entity values of type {given.type} cannot be compared with the "
                  f"view's {wanted} (")
        if text and isinstance(exc, pa.ArrowInvalid):
            # The first value that does not parse as what failed (not the first that is no
            # integer: '7.0' parses as a number), and its own error as the key type (the whole
            # column's names whichever value Arrow's kernel met first).
            row = _first_uncastable(parsed, parsed_as)
            try:
                given.slice(row, 1).cast(wanted)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as own:
                reason = str(own).splitlines()[0]
            raise EntityRowError(before, _row_name(row, labels), f": {reason})") from exc
        raise ValueError(f"{before}{reason})") from exc
    return cast if pc.all(kept).as_py() is not False else pc.if_else(kept, cast, pa.scalar(None, wanted))


def _comparable(cast: pa.Array, values: pa.Array) -> tuple[pa.Array, pa.Array]:
    """``cast`` (``values`` cast to a key type) brought back to ``values``' type, beside
    ``values``, to tell which survived the cast. Decimals are compared at the widest precision:
    DECIMAL(10, 2) cannot hold every BIGINT brought back."""
    if pa.types.is_decimal(values.type) and not pa.types.is_decimal(cast.type):
        wide = pa.decimal128(38, values.type.scale)
        try:
            return cast.cast(wide, safe=False), values.cast(wide)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    return cast.cast(values.type, safe=False), values


def _row_name(position: int, labels: pd.Index | None) -> object:
    """How the caller names the row at ``position``."""
    return position if labels is None else labels[position]


def _first_uncastable(values: pa.Array, wanted: pa.DataType) -> int:
    """The position of the first value that does not cast to ``wanted`` (some does): by halving,
    a few casts of slices rather than one per value."""
    low, high = 0, len(values)  # (the first such value lies in values[low:high])
    while high - low > 1:
        middle = (low + high) // 2
        try:
            values.slice(low, middle - low).cast(wanted)
            low = middle
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            high = middle
    return low


def _parsed_times(values: pa.Array, wanted: pa.DataType, column: str, labels: pd.Index | None) -> pa.Array:
    """ISO 8601 text as instants (for a TIMESTAMP key: by the rules of entity timestamps, see
    :func:`~mlops_pipelines.features.timestamps.to_utc`; naive read as UTC) or times of day (for
    a TIME key), which Arrow's casts refuse; then compared as any other value (see
    :func:`entity_keys_as`). Text that is no such value is an error naming its row."""
    if pa.types.is_time(wanted):
        times = []
        for position, text in enumerate(values.to_pylist()):
            try:
                times.append(None if text is None else time.fromisoformat(text.strip()))
            except ValueError as exc:
                raise EntityRowError(f"join key {column!r} ", _row_name(position, labels), f" ({text!r}): not an "
                                     f"ISO 8601 time of day ({str(exc).splitlines()[0]})") from None
        return pa.array(times, pa.time64("ns" if wanted.unit == "ns" else "us"))
    texts = values.to_pandas().set_axis(labels if labels is not None else pd.RangeIndex(len(values))).rename(column)
    instants = timestamps.to_utc(texts, what="join key")
    # (A naive key holds UTC instants: compared as such.)
    return entity_key_array(instants.dt.tz_convert(None) if wanted.tz is None else instants)


UUID_FIELD = {b"duckdb_type": b"UUID"}  # (Arrow field metadata: DuckDB hands UUIDs over as text)
_CANONICAL_UUID = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


def _marked(field: pa.Field, marker: dict[bytes, bytes]) -> bool:
    """Whether ``field`` carries ``marker`` (the DuckDB type a column read from it had)."""
    return field.metadata is not None and field.metadata.get(b"duckdb_type") == marker[b"duckdb_type"]


def is_uuid(field: pa.Field) -> bool:
    """Whether a text column read from DuckDB holds a UUID column's values (marked with
    :data:`UUID_FIELD` when read)."""
    return _marked(field, UUID_FIELD)


UHUGEINT_FIELD = {b"duckdb_type": b"UHUGEINT"}  # (Arrow field metadata of a view's UHUGEINT key)


def is_uhugeint(field: pa.Field) -> bool:
    """Whether a key column read from DuckDB was a UHUGEINT (marked with :data:`UHUGEINT_FIELD`)."""
    return _marked(field, UHUGEINT_FIELD)


_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_UUID_DIGIT_PLACES = np.array([i for i in range(36) if i not in (8, 13, 18, 23)])  # (hyphens between)


def uuid_texts_of(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """UUIDs (Arrow's UUID type, 16 bytes each) as the text DuckDB gives them (lower case,
    hyphenated), in numpy: ``str(uuid.UUID)`` per value took 4 s for 1,000,000 keys."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    storage = values.storage  # fixed_size_binary(16), nulls included as 16 bytes of something
    raw = np.frombuffer(storage.buffers()[1], dtype=np.uint8)[storage.offset * 16:(storage.offset + len(storage)) * 16]
    raw = raw.reshape(len(storage), 16)
    digits = np.empty((len(storage), 32), dtype=np.uint8)
    digits[:, 0::2] = _HEX_DIGITS[raw >> 4]
    digits[:, 1::2] = _HEX_DIGITS[raw & 15]
    text = np.full((len(storage), 36), ord("-"), dtype=np.uint8)
    text[:, _UUID_DIGIT_PLACES] = digits
    texts = pa.FixedSizeBinaryArray.from_buffers(pa.binary(36), len(storage), [None, pa.py_buffer(text)])
    texts = texts.cast(pa.string())
    return pc.if_else(values.is_valid(), texts, pa.scalar(None, pa.string())) if values.null_count else texts


def _uuid_texts(values: pa.Array, column: str, labels: pd.Index | None = None) -> pa.Array:
    """Text keys of a UUID column as DuckDB writes UUIDs (lower case, hyphenated): DuckDB reads
    upper case, braces and missing hyphens as the same UUID, so they match it here too. Text
    that is no UUID is an error, as DuckDB's cast would make it."""
    lower = pc.utf8_lower(values.cast(pa.string()))
    odd = np.flatnonzero(pc.fill_null(pc.invert(pc.match_substring_regex(lower, _CANONICAL_UUID)), False)
                         .to_numpy(zero_copy_only=False))
    if not len(odd):
        return lower
    texts = lower.to_pylist()
    for row in odd:
        digits = texts[row][1:-1] if texts[row][:1] == "{" and texts[row][-1:] == "}" else texts[row]
        digits = digits.replace("-", "")
        if len(digits) != 32 or digits.strip("0123456789abcdef"):
            raise EntityRowError(f"join key {column!r}: entity value {values[row].as_py()!r} (", _row_name(row, labels),
                                 " of the entity rows) is not a UUID")
        texts[row] = str(uuid.UUID(hex=digits))
    return pa.array(texts, pa.string())


def _kind_of_key(value: object) -> str | None:
    """The Arrow type a key object is read as among others of its kind (``None``: no value, or
    none a key can hold; "one by one": a kind read value by value)."""
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, bool | np.bool_):
        return "bool"
    if isinstance(value, int | np.integer):
        value = int(value)
        return "int64" if -(2**63) <= value < 2**63 else "uint64" if 0 <= value < 2**64 else "wide"
    if isinstance(value, float | np.floating):
        return "double"
    if isinstance(value, datetime):  # (pandas' Timestamps too)
        return "instant"
    if isinstance(value, date):
        return "day"
    if type(value) is Decimal:  # (by exponent: Arrow reads Decimals at one scale, which their text shows)
        return f"decimal {value.as_tuple().exponent}"
    return {str: "string", bytes: "binary"}.get(type(value), "one by one")


def _instants(values: list) -> pa.Array:
    """Datetimes and Timestamps (any zones; naive ones are UTC) as UTC nanoseconds, exactly; an
    OverflowError beyond pandas' nanosecond range (years 1677 to 2262)."""
    try:
        return pa.array([pd.Timestamp(v).value for v in values], pa.timestamp("ns", tz="UTC"))
    except pd.errors.OutOfBoundsDatetime as exc:
        raise OverflowError(str(exc)) from exc


_KIND_TYPES = {"bool": pa.bool_(), "int64": pa.int64(), "uint64": pa.uint64(), "double": pa.float64(),
               "string": pa.string(), "binary": pa.binary(), "day": pa.date32(),
               "decimal": None}  # (None: as Arrow infers)


def _mixed_keys_as(objects: list, wanted: pa.DataType, column: str, labels: pd.Index | None,
                   uuids: bool, unsigned: bool) -> pa.Array:
    """Key objects of several kinds (integers beyond int64 beside floats, Decimals beside
    floats, text beside numbers) as ``wanted``: each kind read as its own Arrow type and cast by
    :func:`entity_keys_as`'s rules, so that a value matches what it matches alone (Arrow reading
    them all as ``wanted`` at once truncates 1.5 to 1 and drops nanoseconds). Datetimes of any
    zones are read as UTC nanoseconds (value by value beyond pandas' range); kinds Arrow has no
    one type for (times of day, say) value by value."""
    kinds: dict[str | None, list[int]] = {}
    for position, value in enumerate(objects):
        kinds.setdefault(_kind_of_key(value), []).append(position)
    keys: list[object] = [None] * len(objects)
    for kind, positions in kinds.items():
        if kind is None:
            continue
        alike = [objects[p] for p in positions]
        named = pd.Index([_row_name(p, labels) for p in positions])
        try:
            if kind == "one by one":
                raise pa.ArrowInvalid("read value by value")
            if kind == "wide":
                digits = [Decimal(int(v)) for v in alike]
                if any(len(d.as_tuple().digits) > 76 for d in digits):
                    raise pa.ArrowInvalid("beyond every key")  # (value by value: those match nothing)
                typed = pa.array(digits, pa.decimal256(76, 0))
            elif kind == "instant":
                typed = _instants(alike)
            else:
                typed = pa.array([v.item() if isinstance(v, np.generic) else v for v in alike],
                                 type=_KIND_TYPES[kind.split()[0]])
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
            cast = [_object_key_as(v, wanted, column, label, uuids) for v, label in zip(alike, named, strict=True)]
        else:
            cast = entity_keys_as(typed, wanted, column, uuids=uuids, labels=named, unsigned=unsigned).to_pylist()
        for position, key in zip(positions, cast, strict=True):
            keys[position] = key
    return pa.array(keys, type=wanted)


def _object_key_as(value: object, wanted: pa.DataType, column: str, label: object = 0, uuids: bool = False) -> object:
    """One entity key object as a Python value of the key type, by the rules of
    :func:`entity_keys_as` (text that does not parse is an error; a value the type cannot hold
    matches nothing). For columns of mixed objects only: one Arrow array per value. ``label``:
    the value's row, as errors name it."""
    try:
        # Through pandas for a Timestamp: Arrow alone would type it in microseconds, dropping nanoseconds.
        if isinstance(value, pd.Timestamp):
            alone = entity_key_array(pd.Series([value]))
        elif isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
            alone = pa.array([value], pa.decimal256(76, 0))  # (beyond every Arrow integer: a HUGEINT's)
        else:
            alone = pa.array([value], from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        return None  # e.g. an integer of more than 76 digits
    return entity_keys_as(alone, wanted, column, uuids=uuids, labels=pd.Index([label]))[0].as_py()


WIDE_INTEGER = pa.decimal256(39, 0)  # every HUGEINT and UHUGEINT, as Arrow can hold, parse and compare them
_TWO_TO_128 = 2**128


def wide_integers(column: pa.ChunkedArray, unsigned: bool) -> pa.ChunkedArray:
    """A HUGEINT (or, ``unsigned``, UHUGEINT) column as DuckDB hands it over, the 128 bits of a
    DECIMAL(38, 0), as :data:`WIDE_INTEGER`. In the DECIMAL, 39-digit values (HUGEINT holds up to
    2**127 - 1) break its precision, so Arrow cannot cast entity keys to it, and UHUGEINT values
    above 2**127 - 1 read as negative (2**128 - 1 as -1): a key -1 would find it, and the feature
    would be served as -1.0."""
    wide = pc.cast(column, WIDE_INTEGER)
    if not unsigned:
        return wide
    negative = pc.less(wide, pa.scalar(0, WIDE_INTEGER))
    if not pc.any(negative).as_py():
        return wide
    mended = pc.cast(pc.add(wide, pa.scalar(_TWO_TO_128, pa.decimal256(40, 0))), WIDE_INTEGER)
    return pc.if_else(negative, mended, wide)


def key_type(field_type: pa.DataType) -> pa.DataType:
    """A view's key type as joins compare it: dictionary-encoded keys (DuckDB ENUMs) by value."""
    return field_type.value_type if pa.types.is_dictionary(field_type) else field_type


def served_type(field_type: pa.DataType) -> pa.DataType:
    """A feature's type as both stores serve it to pandas: DECIMAL (and HUGEINT and UHUGEINT, read
    as :data:`WIDE_INTEGER`) as DOUBLE, numbers rather than Python Decimal objects; dictionary-encoded
    values (DuckDB ENUMs) as their values, whether or not some rows matched nothing."""
    if pa.types.is_decimal(field_type):
        return pa.float64()
    if pa.types.is_dictionary(field_type):
        return served_type(field_type.value_type)
    return _without_dictionaries(field_type)


def served(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """``column`` cast to its :func:`served_type`. A DECIMAL becomes the double nearest its value
    (correctly rounded): Arrow's own cast rounds twice (0.942 as DECIMAL(12, 3) gave
    0.9420000000000001, about one 3-place decimal in eight), its parse of the decimal's text once."""
    if pa.types.is_decimal(column.type):
        if isinstance(column, pa.ChunkedArray):
            return pa.chunked_array([_decimal_doubles(c) for c in column.chunks], pa.float64())
        return _decimal_doubles(column)
    return column.cast(served_type(column.type))


_EXACT_IN_DOUBLE = 2**53  # integers of magnitude below it are doubles exactly


def _decimal_doubles(values: pa.Array) -> pa.Array:
    """DECIMAL ``values`` as the doubles nearest them. Up to 18 digits with at most 22 places,
    whose unscaled integers fall below 2**53, this is one IEEE division of two exact doubles
    (correctly rounded: 2,000,000 values in ~0.07 s, against 0.3-0.9 s through their text);
    other values go through their text."""
    type_ = values.type
    if (type_.bit_width == 128 and type_.precision <= 18 and 0 <= type_.scale <= 22 and len(values)
            and sys.byteorder == "little"):
        # A DECIMAL(<= 18) holds its unscaled integer in the low (first) 64 bits of each 128.
        words = np.frombuffer(values.buffers()[1], dtype=np.int64)
        unscaled = words[2 * values.offset:2 * (values.offset + len(values)):2]
        valid = None if not values.null_count else values.is_valid().to_numpy(zero_copy_only=False)
        # (a null's slot may hold any bits)
        magnitudes = np.abs(unscaled if valid is None else unscaled[valid])
        if not len(magnitudes) or magnitudes.max() < _EXACT_IN_DOUBLE:
            doubles = unscaled.astype(np.float64) / float(10**type_.scale)
            return pa.array(doubles, mask=None if valid is None else ~valid)
    return pc.cast(pc.cast(values, pa.string()), pa.float64())


def _without_dictionaries(type_: pa.DataType) -> pa.DataType:
    """``type_`` with dictionary-encoded values (ENUMs) inside lists, structs and maps as their
    values: the online store writes values as Arrow record batches, which cannot carry the
    dictionaries of nested columns."""
    if pa.types.is_dictionary(type_):
        return _without_dictionaries(type_.value_type)
    if pa.types.is_map(type_):
        return pa.map_(_without_dictionaries(type_.key_type), _without_dictionaries(type_.item_type))
    if pa.types.is_fixed_size_list(type_):
        return pa.list_(type_.value_field.with_type(_without_dictionaries(type_.value_type)), type_.list_size)
    if pa.types.is_large_list(type_):
        return pa.large_list(type_.value_field.with_type(_without_dictionaries(type_.value_type)))
    if pa.types.is_list(type_):
        return pa.list_(type_.value_field.with_type(_without_dictionaries(type_.value_type)))
    if pa.types.is_struct(type_):
        return pa.struct([f.with_type(_without_dictionaries(f.type)) for f in type_])
    return type_


# pandas' nullable dtypes, used whether or not a value is null: numpy's int64 and bool cannot
# hold a null, and pandas' default then turns the column into float64 (2**53 + 1 read as 2**53)
# or object, so a column's dtype, and its values, would depend on which rows matched.
_NULLABLE_DTYPES = {
    pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype(),
    pa.uint8(): pd.UInt8Dtype(), pa.uint16(): pd.UInt16Dtype(), pa.uint32(): pd.UInt32Dtype(),
    pa.uint64(): pd.UInt64Dtype(), pa.bool_(): pd.BooleanDtype(),
}
# Text as pandas holds it by default (``str`` in pandas 3): with a types mapper, Arrow turns a
# column of nulls only into object, another dtype than the same column with a value.
_TEXT_DTYPE = pa.array(["text"]).to_pandas().dtype
if _TEXT_DTYPE != np.dtype(object):
    _NULLABLE_DTYPES.update({pa.string(): _TEXT_DTYPE, pa.large_string(): _TEXT_DTYPE})


class UnservableValues(ValueError):
    """Feature values pandas cannot hold (a DATE 'infinity' is beyond Python's dates)."""


def served_pandas(values: pa.Array | pa.ChunkedArray, feature: str) -> pd.Series:
    """Feature values (of their :func:`served_type`) as pandas, exactly: integers and booleans in
    pandas' nullable dtypes (``Int64``, ``boolean``) whatever matched, integers inside lists and
    structs as Python ints when a null sits beside them (not floats). Values pandas cannot hold
    are an :class:`UnservableValues` naming ``feature``."""
    try:
        return values.to_pandas(types_mapper=_NULLABLE_DTYPES.get, integer_object_nulls=True)
    except (ValueError, OverflowError, pa.ArrowException) as exc:
        raise UnservableValues(f"feature {feature!r}: values of type {values.type} that pandas cannot hold "
                               f"({str(exc).splitlines()[0]}); cast them in the view (e.g. to text)") from exc


def entity_pandas(table: pa.Table) -> pd.DataFrame:
    """An Arrow table of entity rows as pandas, its integer columns with nulls in pandas' nullable
    dtypes (pandas' default reads them as float64: 2**53 + 1 would become 2**53, another key)."""
    try:
        frame = table.to_pandas()  # (with the index pandas stored in the table's metadata, if any)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, OverflowError):
        # Columns pandas cannot hold as its own types (a TIME with nanoseconds, a date before
        # year 1) stay Arrow's, in pandas' ArrowDtype: exactly as given, where pandas refuses them.
        unheld = set()
        for column in table.columns:
            if column.type not in unheld:
                try:
                    column.to_pandas()
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, OverflowError):
                    unheld.add(column.type)
        frame = table.to_pandas(types_mapper=lambda type_: pd.ArrowDtype(type_) if type_ in unheld else None)
    for name, column in zip(table.column_names, table.columns, strict=True):
        if column.null_count and pa.types.is_integer(column.type):
            positions = np.flatnonzero(frame.columns == name)
            if len(positions) == 1:  # (else an index column, or a name given twice: refused later)
                # The values, not a Series: a Series would be aligned on the frame's own index.
                frame.isetitem(int(positions[0]), column.to_pandas(types_mapper=_NULLABLE_DTYPES.get).array)
    return frame


def _column_codes(features: pa.Table, entity: pa.Array | pd.Series, column: str, workspace: Workspace,
                  labels: pd.Index | None = None,
                  bounds: tuple[int, int] | None = None) -> tuple[np.ndarray | None, np.ndarray, int]:
    """Codes 0 .. n - 1 of one key column's values, for feature rows (never null) and entity rows
    (-1 for a null key or a value no feature row has), and n. Integer keys' codes are written
    into ``workspace`` arrays. ``bounds``: the smallest and largest key of an integer column
    whose feature codes are known (a prepared copy's, :func:`with_codes`): then None for them."""
    feature = features.column(column)
    if pa.types.is_dictionary(feature.type):
        feature = feature.cast(key_type(feature.type))
    entity = entity_keys_as(entity, feature.type, column, uuids=is_uuid(features.schema.field(column)),
                            labels=labels, unsigned=is_uhugeint(features.schema.field(column)))
    if pa.types.is_floating(feature.type):
        # -0.0 and 0.0 are one key, as in SQL (DuckDB's joins) and in the online store; Arrow's
        # hashing tells them apart. Adding 0.0 turns -0.0 into 0.0 and leaves the rest alone.
        zero = pa.scalar(0.0, feature.type)
        feature, entity = pc.add(feature, zero), pc.add(entity, zero)
    present = entity.is_valid().to_numpy(zero_copy_only=False)
    if pa.types.is_integer(feature.type) and len(feature):
        # Integers code as offsets from the smallest key: no hashing.
        low, high = _bounds(feature) if bounds is None else bounds
        if _offsets_fit(low, high):
            values = None if bounds is not None else _offsets(feature, low, workspace.array(
                "feature keys", len(feature), np.int64))
            given = pc.fill_null(entity, low).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
            known = present & (given >= low) & (given <= high)
            asked = np.subtract(given, low, out=workspace.array("entity keys", len(given), np.int64))
            asked[~known] = -1
            return values, asked, high - low + 1
    distinct = pc.unique(feature)
    codes = pc.index_in(feature, value_set=distinct).to_numpy().astype(np.int64, copy=False)
    asked = pc.fill_null(pc.index_in(entity, value_set=distinct), -1).to_numpy(zero_copy_only=False)
    return codes, np.where(present, asked.astype(np.int64, copy=False), -1), len(distinct)


def _offsets_fit(low: int, high: int) -> bool:
    """Whether integer keys from ``low`` to ``high`` code as their offsets from ``low`` (32 bits;
    UBIGINT keys beyond int64 are hashed)."""
    return high - low < 2**32 and high < 2**63


def key_codes(features: pa.Table, entities: EntityRows, keys: Sequence[str], workspace: Workspace,
              bounds: tuple[int, int] | None = None) -> tuple[np.ndarray | None, np.ndarray, int]:
    """One code per row for a key of one or several columns: feature codes, entity codes (-1:
    no feature row has this key), and the number of codes (arrays of ``workspace`` for a key of
    one integer column). ``bounds``: see :func:`_column_codes` (a key of one column)."""
    first = keys[0]
    feature_codes, entity_codes, count = _column_codes(features, entities.keys[first], first, workspace,
                                                       entities.labels, bounds)
    for column in keys[1:]:
        more_features, more_entities, more = _column_codes(features, entities.keys[column], column,
                                                           Workspace(), entities.labels)
        unknown = (entity_codes < 0) | (more_entities < 0)
        # Keys take at most 32 bits, so that key and time (at most 32 bits too) share one word.
        if count * more <= 2**32:
            feature_codes = feature_codes * more + more_features
            entity_codes = np.where(unknown, -1, entity_codes * more + more_entities)
            count *= more
        elif count * more < 2**63:
            # Too many combinations to number: number the ones that occur (at most one per row),
            # hashing one int64 a pair (a MultiIndex took 4.3 s for 2,000,000 rows, this 0.2 s).
            pairs = feature_codes * more + more_features
            combined, uniques = pd.factorize(pairs)
            # (-1, for an unknown part, is no feature row's pair: every pair is >= 0)
            asked = pd.Index(uniques).get_indexer(np.where(unknown, -1, entity_codes * more + more_entities))
            feature_codes, entity_codes, count = combined.astype(np.int64), asked.astype(np.int64), len(uniques)
        else:
            combined, uniques = pd.factorize(pd.MultiIndex.from_arrays([feature_codes, more_features]))
            asked = uniques.get_indexer(pd.MultiIndex.from_arrays([entity_codes, more_entities]))
            feature_codes, entity_codes, count = combined.astype(np.int64), np.where(unknown, -1, asked), len(uniques)
    return feature_codes, entity_codes, count


@dataclass(frozen=True)
class TimeCodes:
    """Event times and entity times as small non-negative integers of the same order: for every
    pair, feature code <= entity code exactly when event time <= entity time."""

    feature: np.ndarray | None  # int64, one per feature row (None: known already, a prepared copy's)
    entity: np.ndarray  # int64, one per entity row; -1 before every event or for no time
    count: int  # codes are 0 .. count - 1
    first: int  # on a grid: the event time of code 0
    step: int | None  # on a grid: microseconds a code; None: codes are ranks in ``distinct``
    distinct: np.ndarray | None

    def micros(self, codes: np.ndarray) -> np.ndarray:
        """The event times (UTC microseconds) of event ``codes``."""
        return self.first + codes * self.step if self.step is not None else self.distinct[codes]


def _on_grid(first: int, last: int) -> bool:
    """Whether event times from ``first`` to ``last`` may be coded as steps of a grid: far from
    the int64 ends (where +/-infinity events sit), where differences cannot overflow."""
    return -(2**61) < first and last < 2**61


def _event_grid(event: pa.ChunkedArray, out: np.ndarray | None = None) -> tuple[np.ndarray, int, int, int] | None:
    """A view's event times as offsets from the first (written into ``out`` when given), the
    first and last time and the step of their grid (the gcd of the offsets, e.g. a second); None
    when they lie too near the int64 ends to be offsets (see :func:`_on_grid`)."""
    first, last = _bounds(event)
    if not _on_grid(first, last):
        return None
    offsets = _offsets(event, first, out)
    return offsets, first, last, max(int(np.gcd.reduce(offsets)), 1)


def _entity_steps(entities: EntityRows, first: int, last: int, step: int, workspace: Workspace) -> np.ndarray:
    """The entity times as steps of the grid of event times ``first`` .. ``last`` (-1: before the
    first event, or no time), in a ``workspace`` array."""
    # Entity times before the first event or after the last one are moved next to them first:
    # they may lie anywhere in int64, where the difference would overflow.
    asked = np.clip(entities.micros, first - 1, last, out=workspace.array("entity times", len(entities), np.int64))
    asked -= first
    unmatched = asked < 0
    unmatched |= ~entities.valid
    asked[unmatched] = 0
    # floor(asked / step), capped: a row after the last event still finds the last event.
    asked //= step
    np.minimum(asked, (last - first) // step, out=asked)
    asked[unmatched] = -1
    return asked


def _time_codes(event: pa.ChunkedArray, entities: EntityRows, room: int, workspace: Workspace,
                grid: tuple[int, int, int] | None = None) -> TimeCodes:
    """The :class:`TimeCodes` of a view's event times (``__ts``) and the entity rows.

    Steps of the data's own grid (the gcd of the times, e.g. whole seconds) when they fit in
    ``room`` bits (codes in ``workspace`` arrays); else the rank among the distinct event times.
    ``grid``: the first and last event time and the step, when the feature rows' steps are known
    (a prepared copy's, :func:`with_codes`, that fit): then only the entity rows' are made.
    """
    if grid is not None:
        first, last, step = grid
        return TimeCodes(None, _entity_steps(entities, first, last, step, workspace), (last - first) // step + 1,
                         first, step, None)
    grid_found = _event_grid(event, workspace.array("feature times", len(event), np.int64))
    if grid_found is not None:
        offsets, first, last, step = grid_found
        span = (last - first) // step
        if _bits(span + 1) <= room:
            if step > 1:
                offsets //= step
            return TimeCodes(offsets, _entity_steps(entities, first, last, step, workspace), span + 1, first, step,
                             None)
    # Ranks from one argsort: np.unique took 1.5 s for 2,000,000 times here (numpy 2.4.6), and
    # binary searches of unsorted times 0.5 s; the whole call now takes ~0.5 s on such a view.
    feature_micros = _offsets(event, 0)
    order = np.argsort(feature_micros)
    ordered = feature_micros[order]
    new = np.ones(len(ordered), dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    distinct = ordered[new]
    ranks = np.empty(len(ordered), dtype=np.int64)
    ranks[order] = np.cumsum(new) - 1
    by_time = np.argsort(entities.micros)  # (sorted queries: each search starts near the last)
    asked = np.empty(len(entities.micros), dtype=np.int64)
    asked[by_time] = np.searchsorted(distinct, entities.micros[by_time], side="right") - 1
    return TimeCodes(ranks, np.where(entities.valid, asked, -1), len(distinct), 0, None, distinct)


def _group_starts(groups: np.ndarray) -> np.ndarray:
    """True where a run of equal ``groups`` (sorted by group) begins."""
    starts = np.ones(len(groups), dtype=bool)
    starts[1:] = groups[1:] != groups[:-1]
    return starts


def _tie_winners(features: pa.Table, rows: np.ndarray, group_of_row: np.ndarray, names: Sequence[str],
                 has_created: bool) -> tuple[np.ndarray, np.ndarray]:
    """Among feature rows sharing keys and event time (``rows``, grouped by ``group_of_row``):
    each group and its winning row (latest created, then smallest feature values, NULLs last,
    then -0.0 before 0.0, which compare equal, feature by feature).

    The created timestamp decides most groups alone; only groups whose latest created
    timestamp is shared (or that have none) are ranked on their feature values too.
    """
    decided_groups, decided_rows = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    if has_created:
        created = _take_rows(features.column(CREATED), rows)
        ranked = pc.sort_indices(pa.table({"group": pa.array(group_of_row), CREATED: created}),
                                 sort_keys=[("group", "ascending", "at_end"), (CREATED, "descending", "at_end")])
        ranked = ranked.to_numpy()
        groups = group_of_row[ranked]
        first = _group_starts(groups)
        stamps = pc.cast(created, pa.int64()).take(pa.array(ranked))
        present = stamps.is_valid().to_numpy(zero_copy_only=False)
        values = pc.fill_null(stamps, 0).to_numpy(zero_copy_only=False)
        # The runner-up (second row of a group) ties the winner: both NULL, or equal stamps.
        runner_up = np.flatnonzero(~first[1:] & first[:-1]) + 1
        shared = (present[runner_up] == present[runner_up - 1]) & (values[runner_up] == values[runner_up - 1])
        open_groups = groups[runner_up[shared]]
        undecided = np.isin(group_of_row, open_groups)
        decided = first & ~np.isin(groups, open_groups)
        decided_groups, decided_rows = groups[decided], rows[ranked[decided]]
        if not undecided.any():
            return decided_groups, decided_rows
        rows, group_of_row = rows[undecided], group_of_row[undecided]
    columns = {"group": pa.array(group_of_row)}
    order = [("group", "ascending", "at_end")]
    if has_created:
        columns[CREATED] = _take_rows(features.column(CREATED), rows)
        order.append((CREATED, "descending", "at_end"))
    signs = []
    for index, name in enumerate(names):
        values = _sortable(_take_rows(features.column(name), rows))
        columns[f"f{index}"] = values
        order.append((f"f{index}", "ascending", "at_end"))
        if pa.types.is_floating(values.type):
            signs.append((f"s{index}", np.signbit(pc.fill_null(values, 0.0).to_numpy(zero_copy_only=False))))
    # Rows whose features are all equal may still differ in the sign of a zero (-0.0 == 0.0):
    # then -0.0 first, so that the winner never depends on the order the rows were read in (a
    # prepared copy's, a narrowed read's, a thread's).
    for column, negative in signs:
        columns[column] = pa.array(negative)
        order.append((column, "descending", "at_end"))
    ranked = pc.sort_indices(pa.table(columns), sort_keys=order).to_numpy()
    groups = group_of_row[ranked]
    first = _group_starts(groups)
    return np.concatenate([decided_groups, groups[first]]), np.concatenate([decided_rows, rows[ranked[first]]])


def _sortable(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """Values Arrow can sort: as they are, or (lists, structs, maps, intervals, which Arrow
    does not sort) their text, a total order that is the same on every read. Only tied rows
    come here, a few."""
    type_ = values.type
    if not (pa.types.is_nested(type_) or pa.types.is_interval(type_)):
        try:
            pc.sort_indices(values.slice(0, 0))
            return values
        except (pa.ArrowNotImplementedError, pa.ArrowTypeError, pa.ArrowInvalid):
            pass
    return pa.chunked_array([pa.array([None if v is None else repr(v) for v in values.to_pylist()], pa.string())])


def match_rows(features: pa.Table, entities: EntityRows, keys: Sequence[str], names: Sequence[str],
               ttl_micros: int | None, has_created: bool, workspace: Workspace | None = None) -> np.ndarray:
    """For each entity row, the feature row the point-in-time join picks, or -1.

    Args:
        features: the view's rows, none with a NULL key or event time (as
            ``store.feature_table_sql`` reads them): ``keys``, ``__ts`` (event time,
            TIMESTAMP(us) in UTC), ``__created`` (when ``has_created``) and ``names``; and
            ``__ts_ns`` (int64) for nanosecond events, then compared with the entity times in
            nanoseconds.
        entities: the entity rows.
        keys: the view's join key columns (in both).
        names: all the view's features in their declared order: ties are decided on them, not
            only on those asked for, so that every request (and the online store) picks the
            same row.
        ttl_micros: the TTL in microseconds, or None.
        has_created: whether ``features`` has a ``__created`` column to break ties on.
        workspace: where scratch arrays (and the answer) are kept between calls; else new arrays.

    Returns:
        Row numbers into ``features`` (int64, -1 for no match), one per entity row in their order:
        an array of ``workspace`` when given, valid until its next use.
    """
    count = len(entities)
    if features.num_rows == 0 or count == 0:
        return np.full(count, -1, dtype=np.int64)
    workspace = workspace or Workspace()
    stored = _stored_codes(features, keys, count)
    feature_keys, entity_keys, key_count = key_codes(features, entities, keys, workspace,
                                                     None if stored is None else (stored.low, stored.high))
    key_bits = _bits(key_count)
    room = WORD - key_bits - max(_bits(features.num_rows), _bits(count))
    events = features.column(TS)
    if TS_NS in features.column_names:
        # Nanosecond events, compared with the entity times in nanoseconds, exactly (``__ts``,
        # rounded up to the microsecond, serves the windows read in SQL).
        events, entities = features.column(TS_NS), entities.in_nanoseconds()
        ttl_micros = None if ttl_micros is None else ttl_micros * 1000  # (in the same unit: nanoseconds)
    times = _time_codes(events, entities, room, workspace,
                        None if stored is None else (stored.first, stored.last, stored.step))
    time_bits = _bits(times.count)
    shift = np.uint64(time_bits)

    if stored is not None:
        feature_values = stored.values  # (a prepared copy's: read only)
    else:
        # Codes are >= 0 here, so their int64 bits read as uint64 unchanged. Arrays are overwritten
        # where they are no longer needed: on this kind of machine, fresh pages cost more than the work.
        feature_values = (feature_keys.view(np.uint64) if feature_keys.flags.writeable
                          else feature_keys.astype(np.uint64))
        feature_values <<= shift
        feature_values |= times.feature.view(np.uint64)
    # (None: the rows are in order already, a prepared copy's are; then a row's position is its number)
    sorted_features, feature_rows = _sorted_with_positions(feature_values, key_bits + time_bits, times.feature,
                                                           in_order_as_none=True)

    # Equal neighbours share keys and event time: the search lands on the last of such a run,
    # so that position gets the run's winner.
    tied = np.flatnonzero(sorted_features[1:] == sorted_features[:-1])
    if len(tied):
        if feature_rows is None:
            feature_rows = _identity(len(sorted_features), times.feature)
        in_run = np.zeros(len(sorted_features), dtype=bool)
        in_run[tied] = in_run[tied + 1] = True
        positions = np.flatnonzero(in_run)  # every position in a run of two or more, in order
        # A run ends where the next position does not continue it; each position's group is
        # its run's last position.
        is_end = np.ones(len(positions), dtype=bool)
        is_end[:-1] = sorted_features[positions[:-1]] != sorted_features[positions[1:]]
        ends = positions[is_end]
        group = ends[np.cumsum(is_end) - is_end]
        ends, winners = _tie_winners(features, feature_rows[positions], group, names, has_created)
        feature_rows[ends] = winners

    unmatchable = entity_keys < 0
    unmatchable |= times.entity < 0
    entity_keys[unmatchable] = 0
    times.entity[unmatchable] = 0
    entity_values = entity_keys.view(np.uint64)
    entity_values <<= shift
    entity_values |= times.entity.view(np.uint64)
    sorted_entities, entity_rows = _sorted_with_positions(entity_values, key_bits + time_bits, times.entity)
    found = _searched(sorted_features, sorted_entities, workspace.array("found", count, np.int64))
    found -= 1
    hit = found >= 0
    np.maximum(found, 0, out=found)
    # The latest event at or before the entity's time; of the entity's key when the key bits
    # agree, i.e. (being <= the entity's value) when the two differ in the time bits only.
    landed = np.take(sorted_features, found, out=workspace.array("landed", count, np.uint64))
    work = np.bitwise_xor(landed, sorted_entities, out=workspace.array("work", count, np.uint64))
    hit &= work < np.uint64(1 << time_bits)
    if ttl_micros is not None:
        _drop_expired(hit, landed, sorted_entities, entity_rows, times, entities, ttl_micros, time_bits, work)
    if feature_rows is None:
        rows = work.view(np.int64)
        np.copyto(rows, found)
    else:
        rows = np.take(feature_rows, found, out=work.view(np.int64))
    rows[~hit] = -1
    chosen = found  # (no longer needed: its pages take the answer)
    chosen[entity_rows] = rows
    chosen[unmatchable] = -1
    return chosen


def _searched(haystack: np.ndarray, needles: np.ndarray, found: np.ndarray) -> np.ndarray:
    """``np.searchsorted(haystack, needles, side="right")`` written into ``found``, for sorted
    ``needles``: block by block (searchsorted has no out=; small blocks' results malloc reuses),
    each block searched only in the part of ``haystack`` between its first and last needle's
    places (~14 steps a needle against ~21 in 2,000,000 rows, and in memory the last block
    touched: 29 -> 23 ms for 1,000,000 needles here)."""
    block = 1 << 13
    for start in range(0, len(needles), block):
        part = needles[start:start + block]
        low, high = np.searchsorted(haystack, part[[0, -1]], side="right")
        out = found[start:start + len(part)]
        out[:] = np.searchsorted(haystack[low:high], part, side="right")
        out += low
    return found


def _drop_expired(hit: np.ndarray, landed: np.ndarray, sorted_entities: np.ndarray, entity_rows: np.ndarray,
                  times: TimeCodes, entities: EntityRows, ttl_micros: int, time_bits: int, work: np.ndarray) -> None:
    """``hit`` (of the sorted entity rows) False where the event found is older than the TTL.

    On a time grid most rows are decided on the codes alone: an event fewer than ``ttl // step``
    steps older than the entity's step is within the TTL, one more than that is not, whatever
    the entity time's remainder below a step. The rest (exactly that many steps, or an entity
    time capped at the last step) and every row of ranked times are decided on the instants.
    ``landed``, ``sorted_entities`` and ``work`` are overwritten.
    """
    mask = np.uint64((1 << time_bits) - 1)
    landed &= mask
    sorted_entities &= mask
    event_codes, entity_codes = landed.view(np.int64), sorted_entities.view(np.int64)
    if times.step is not None:
        steps = ttl_micros // times.step
        age = np.subtract(entity_codes, event_codes, out=work.view(np.int64))  # >= 0 where hit
        check = age == steps
        check |= entity_codes == times.count - 1
        check &= hit
        hit &= age < steps
    else:
        check = hit.copy()
    exact = np.flatnonzero(check)
    if len(exact):
        rows = entity_rows[exact]
        # The entity's time is at or after the event's: their difference, whatever it is in
        # int64, is exact in uint64 (modulo 2**64).
        events = times.micros(event_codes[exact])
        age = entities.micros[rows].view(np.uint64) - events.view(np.uint64)
        bound = np.uint64(min(ttl_micros, 2**64 - 1))
        within = age <= bound
        # -infinity (DuckDB's -(2**63 - 1)) is older than any TTL, even one of more than 2**63 µs.
        within &= events != NEGATIVE_INFINITY
        if entities.nanos_past is not None:  # (event times are whole microseconds: nanoseconds past the bound are out)
            within &= (age < bound) | (entities.nanos_past[rows] == 0)
        if entities.beyond is not None:  # (a few rows at most: Python integers)
            for position in np.flatnonzero(np.isin(rows, list(entities.beyond))):
                within[position] = (entities.beyond[int(rows[position])] - int(events[position]) <= ttl_micros
                                    and events[position] != NEGATIVE_INFINITY)
        hit[exact] = within


def take_arrow(features: pa.Table, names: Sequence[str], chosen: np.ndarray) -> dict[str, pa.ChunkedArray]:
    """``names`` of the ``chosen`` rows (-1: null), as Arrow columns."""
    matched = chosen >= 0
    if features.num_rows == 0:
        return {n: pa.chunked_array([pa.nulls(len(chosen), features.schema.field(n).type)]) for n in names}
    # Taking with null indices is several times slower in Arrow than taking row 0 and masking.
    taken = features.select(list(names)).take(pa.array(np.where(matched, chosen, 0)))
    if matched.all():
        columns = {n: taken.column(n) for n in names}
    else:
        keep = pa.array(matched)
        columns = {}
        for name in names:
            try:
                columns[name] = pc.if_else(keep, taken.column(name), pa.scalar(None, taken.schema.field(name).type))
            except (pa.ArrowNotImplementedError, pa.ArrowTypeError):
                # Types Arrow's if_else does not take (ENUMs inside lists, extension types): the
                # slower take with null indices.
                columns[name] = features.column(name).take(pa.array(chosen, mask=~matched))
    # 128-bit integers as the doubles they are served as everywhere: DuckDB cannot read Arrow's
    # DECIMAL(39, 0) back (the training set is built in DuckDB).
    return {n: served(c) if c.type == WIDE_INTEGER else c for n, c in columns.items()}


def laid_out_for_joins(table: pa.Table, keys: Sequence[str], features: Sequence[str]) -> pa.Table:
    """A view's rows (every feature, no row that loses a tie) as a prepared copy keeps them: in
    one piece, sorted by keys and event time (the join then finds its codes in order and skips
    their sort; it checks, whatever the order), with their codes (:func:`with_codes`) and their
    DOUBLE features also row by row (:func:`with_float_rows`)."""
    try:
        table = table.unify_dictionaries().combine_chunks()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowCapacityError):
        pass  # (columns past 2 GiB of text stay in chunks: record batches of their own)
    order = [*keys, TS, *([TS_NS] if TS_NS in table.column_names else [])]
    try:
        table = table.sort_by([(column, "ascending") for column in order])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, pa.ArrowCapacityError):
        pass  # (keys Arrow does not sort: the join sorts their codes)
    return with_float_rows(with_codes(table, keys), features)


# A prepared copy's rows as the join codes them (see with_codes); its field metadata holds the
# grid: smallest and largest key, first and last event time, step.
CODES = "__codes"
CODES_KEY = b"mlops_pipelines.codes"


def with_codes(table: pa.Table, keys: Sequence[str]) -> pa.Table:
    """``table`` (a view's rows as a prepared copy keeps them, sorted by key and time) with the
    code :func:`match_rows` makes of each row: the key's offset from the smallest key, shifted
    past the event time's steps from the first event (for a key of one integer column and event
    times on a grid; else ``table`` as it is).

    A join then reads them (checking only that they are in order) where it would make them:
    ~16 ms and two arrays of 16 MB a view of 2,000,000 rows here."""
    if len(keys) != 1 or TS_NS in table.column_names or CODES in table.column_names or table.num_rows == 0:
        return table
    key = table.column(keys[0])
    if not pa.types.is_integer(key.type):
        return table
    low, high = _bounds(key)
    grid = _event_grid(table.column(TS))
    if not _offsets_fit(low, high) or grid is None:
        return table
    steps, first, last, step = grid
    time_bits = _bits((last - first) // step + 1)
    if _bits(high - low + 1) + time_bits > WORD:
        return table
    steps //= step
    codes = _offsets(key, low).view(np.uint64)
    codes <<= np.uint64(time_bits)
    codes |= steps.view(np.uint64)
    kept = json.dumps({"low": low, "high": high, "first": first, "last": last, "step": step})
    field = pa.field(CODES, pa.uint64(), nullable=False, metadata={CODES_KEY: kept.encode()})
    return table.append_column(field, pa.chunked_array([pa.array(codes)]))


class StoredCodes(NamedTuple):
    """A prepared copy's codes (:func:`with_codes`) and what they were made of."""

    values: np.ndarray  # uint64, one a row (memory-mapped: read only)
    low: int  # the smallest key
    high: int  # the largest key
    first: int  # the first event time
    last: int  # the last event time
    step: int  # the event times' grid


def _stored_codes(features: pa.Table, keys: Sequence[str], count: int) -> StoredCodes | None:
    """A prepared copy's codes (:func:`with_codes`, no copy), when they fit in a word beside the
    positions of ``features``' rows and ``count`` entity rows; else None."""
    if CODES not in features.column_names or len(keys) != 1 or TS_NS in features.column_names:
        return None
    field, column = features.schema.field(CODES), features.column(CODES)
    if not (field.metadata and CODES_KEY in field.metadata) or column.num_chunks != 1 or column.type != pa.uint64():
        return None
    grid = json.loads(field.metadata[CODES_KEY])
    low, high, first, last, step = (int(grid[k]) for k in ("low", "high", "first", "last", "step"))
    room = WORD - _bits(high - low + 1) - max(_bits(features.num_rows), _bits(count))
    if _bits((last - first) // step + 1) > room:
        return None
    return StoredCodes(column.chunk(0).to_numpy(), low, high, first, last, step)


# A prepared copy's DOUBLE features again, row by row (see with_float_rows); its field metadata
# names them, in order.
FLOAT_ROWS = "__float_rows"
FLOAT_ROWS_KEY = b"mlops_pipelines.float_rows"


def with_float_rows(table: pa.Table, features: Sequence[str]) -> pa.Table:
    """``table`` with its DOUBLE ``features`` (two or more) again as one column of rows, each
    a fixed-size list of their values (NULL as NaN, as pandas gets it).

    A join then takes an entity row's features from one place in memory (a 40-byte row for
    five features) rather than from one column each: 1,000,000 rows of five features out of
    2,000,000 took 29 ms against 56 ms here. A column named so already (a feature's) is kept,
    and no rows are added then."""
    names = [n for n in features if pa.types.is_float64(table.schema.field(n).type)]
    if len(names) < 2 or FLOAT_ROWS in table.column_names:
        return table
    values = np.empty((table.num_rows, len(names)))
    for index, name in enumerate(names):
        start = 0
        for chunk in table.column(name).chunks:
            values[start:start + len(chunk), index] = chunk.to_numpy(zero_copy_only=False)  # (NULL: NaN)
            start += len(chunk)
    rows = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), len(names))
    field = pa.field(FLOAT_ROWS, rows.type, nullable=False, metadata={FLOAT_ROWS_KEY: json.dumps(names).encode()})
    return table.append_column(field, pa.chunked_array([rows], rows.type))


def _float_rows(features: pa.Table) -> tuple[list[str], np.ndarray] | None:
    """The features in ``features``' row column (:func:`with_float_rows`) and its values as a
    (rows, features) array (no copy), or None."""
    if FLOAT_ROWS not in features.column_names:
        return None
    field = features.schema.field(FLOAT_ROWS)
    column = features.column(FLOAT_ROWS)
    if not (field.metadata and FLOAT_ROWS_KEY in field.metadata) or column.num_chunks != 1 or column.null_count:
        return None
    names = json.loads(field.metadata[FLOAT_ROWS_KEY])
    values = column.chunk(0).flatten().to_numpy()
    return names, values.reshape(-1, len(names))


def take_pandas(features: pa.Table, names: Sequence[str], chosen: np.ndarray,
                workspace: Workspace | None = None, last: bool = False) -> dict[str, np.ndarray | pd.Series]:
    """``names`` of the ``chosen`` rows as pandas would hold them (NaN or None for no row), of
    their :func:`served_type` (as the online store serves them).

    Float columns are gathered chunk by chunk straight into their final numpy array: no copy of
    the column in one piece first, and one new array per column where Arrow would take, mask
    and convert to pandas (three). ``last``: the ``workspace``'s last use, so its scratch arrays
    (other than ``chosen``) become output columns rather than new memory: on the benchmark,
    ~15,000 fewer page faults, the output of two views of three.
    """
    def as_float(type_: pa.DataType) -> bool:
        return pa.types.is_floating(served_type(type_))

    floats = [n for n in names if as_float(features.schema.field(n).type) and features.num_rows]
    columns: dict[str, np.ndarray | pd.Series] = {}
    missing = np.flatnonzero(chosen < 0)  # (indices: assigning through them is ~10x a boolean mask's speed)
    workspace = workspace or Workspace()
    # (match_rows' answer, ``chosen``, is the workspace's "found"; arrays asked for below are new)
    rows_of = _float_rows(features) if len(floats) > 1 else None
    if rows_of is not None and 2 * sum(n in floats for n in rows_of[0]) >= len(rows_of[0]):
        # Half or more of the row column's features asked: all of them taken at once, row by row.
        in_rows, values = rows_of
        taken = values.take(np.maximum(chosen, 0, out=workspace.array("rows", len(chosen), np.int64)), axis=0)
        taken[missing] = np.nan
        for index, name in enumerate(in_rows):
            if name in floats:
                columns[name] = taken[:, index]
        floats = [n for n in floats if n not in columns]
    wide = sum(served_type(features.schema.field(n).type) == pa.float64() for n in floats)
    outputs = workspace.give_up(wide, len(chosen), keep=("found",)) if last else []
    layouts: dict[tuple[int, ...], tuple[np.ndarray, list]] = {}  # columns may be chunked differently
    for name in floats:
        column = features.column(name)
        column = served(column)  # (a cast may join the chunks)
        chunks = [c.to_numpy(zero_copy_only=False) for c in column.chunks if len(c)]  # NULLs are NaN
        lengths = tuple(len(c) for c in chunks)
        if lengths not in layouts:
            # Every row is taken from the first chunk (rows of the others at its end), then the
            # rows of the others are put right.
            first = np.clip(chosen, 0, lengths[0] - 1,
                            out=workspace.array(f"rows of a first chunk of {lengths[0]}", len(chosen), np.int64))
            layouts[lengths] = first, _rows_by_chunk(lengths, chosen, skip=1)
        first, parts = layouts[lengths]
        if outputs and chunks[0].dtype == np.float64:  # (a FLOAT feature is served as float32)
            out = chunks[0].take(first, out=outputs.pop())
        else:
            out = chunks[0].take(first)
        for chunk, (rows, within) in zip(chunks[1:], parts, strict=True):
            out[rows] = chunk.take(within)
        out[missing] = np.nan
        columns[name] = out
    others = [n for n in names if n not in columns]
    if others:
        for name, column in take_arrow(features, others, chosen).items():
            columns[name] = served_pandas(served(column), name)
    return {n: columns[n] for n in names}


def join_view(features: pa.Table, entities: EntityRows, keys: Sequence[str], view_features: Sequence[str],
              names: Sequence[str], ttl_micros: int | None, has_created: bool, as_pandas: bool = False,
              workspace: Workspace | None = None, last: bool = False) -> dict:
    """The point-in-time join of one view: ``names`` (some of ``view_features``) for each entity
    row, in the entity rows' order, as Arrow columns (nulls for no row) or, with ``as_pandas``,
    pandas-ready arrays (never the ``workspace``'s memory, unless ``last``: its last use, see
    :func:`take_pandas`). See :func:`match_rows` for the other arguments."""
    chosen = match_rows(features, entities, keys, view_features, ttl_micros, has_created, workspace)
    if as_pandas:
        return take_pandas(features, names, chosen, workspace, last)
    return take_arrow(features, names, chosen)
