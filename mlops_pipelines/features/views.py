"""Feature view declarations: what a view's rows mean and how they are joined point-in-time."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from decimal import Decimal
from functools import cached_property

import numpy as np
import pandas as pd

from mlops_pipelines.features.point_in_time import CREATED, MICROS_PER_UNIT, TS, TS_NS

_SHORT_TTL_UNITS = {  # microseconds in each unit of the short forms (lower case only: '3M' could mean months)
    "d": 86_400_000_000, "h": 3_600_000_000, "m": 60_000_000, "s": 1_000_000, "ms": 1_000, "us": 1,
}
_WORD_TTL_UNITS = {  # units in words, in any case, also in the plural
    "week": 7 * 86_400_000_000, "day": 86_400_000_000, "hour": 3_600_000_000, "hr": 3_600_000_000,
    "minute": 60_000_000, "min": 60_000_000, "second": 1_000_000, "sec": 1_000_000,
    "millisecond": 1_000, "microsecond": 1,
}
_UNIT_NAMES = {size: f"{word}s" for word, size in reversed(_WORD_TTL_UNITS.items())}  # (hours, not hrs)
_AMOUNT = r"(\d+(?:\.\d+)?|\.\d+)"
_SECONDS_TEXT = re.compile(rf"\s*{_AMOUNT}\s*", re.ASCII)
_TTL_PART = re.compile(rf"{_AMOUNT}\s*([a-zA-Z]+)", re.ASCII)
_TTL_SEPARATOR = re.compile(r"\s*(?:,\s*)?(?:and\s+)?", re.ASCII | re.IGNORECASE)
# ISO 8601 durations (PT36H, P1DT12H, P2W); years and months are matched only to be refused.
_ISO_NUMBER = r"(\d+(?:[.,]\d+)?)"
_ISO_DURATION = re.compile(
    rf"\s*P(?!\s*$)(?:{_ISO_NUMBER}Y)?(?:{_ISO_NUMBER}M)?(?:{_ISO_NUMBER}W)?(?:{_ISO_NUMBER}D)?"
    rf"(?:T(?=\d)(?:{_ISO_NUMBER}H)?(?:{_ISO_NUMBER}M)?(?:{_ISO_NUMBER}S)?)?\s*", re.ASCII | re.IGNORECASE)
_ISO_UNITS = (None, None, 7 * 86_400_000_000, 86_400_000_000, 3_600_000_000, 60_000_000, 1_000_000)
# How Python (1 day, 2:00:00) and pandas (1 days 02:00:00) print a duration.
_CLOCK_DURATION = re.compile(r"\s*(?:(\d+)\s+days?,?\s*)?(\d+):([0-5]\d):([0-5]\d(?:\.\d+)?)\s*", re.ASCII)


RESERVED = (TS, CREATED, TS_NS)  # the columns a join reads event and created timestamps into

_INTEGERS = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
             "UHUGEINT")
# A feature's declared type, and the DuckDB types a column of that type may have (the SQL
# project's column tests compare them; "any" is not checked). A float may be any number (a count
# declared float, or left to the default, is still a number); an int also a DECIMAL of scale 0.
FEATURE_TYPES: dict[str, tuple[str, ...] | None] = {
    "float": ("FLOAT", "DOUBLE", "DECIMAL", *_INTEGERS),
    "int": _INTEGERS,
    "str": ("VARCHAR", "ENUM", "UUID", "JSON"),
    "bool": ("BOOLEAN",),
    "timestamp": ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS",
                  "TIMESTAMPTZ_NS"),
    "date": ("DATE",),
    "any": None,
}
TIMESTAMP_TYPES = FEATURE_TYPES["timestamp"]  # what an event or created timestamp column may be


def timestamp_type_problem(duckdb_type: str) -> str:
    """Why a column of ``duckdb_type`` cannot be an event or created timestamp."""
    why = (" (a date would be read as its midnight, before the day's rows were known: give the instant "
           "each row became known)") if duckdb_type == "DATE" else " (cast it to the instant in the view's SQL)"
    return f"is {duckdb_type}, not a TIMESTAMP{why}"


def type_matches(declared: str, duckdb_type: str) -> bool:
    """Whether a column of ``duckdb_type`` (as DuckDB names it: ``DECIMAL(18,3)``, ``ENUM(...)``)
    may hold a feature declared ``declared``."""
    allowed = FEATURE_TYPES[declared]
    if declared == "int" and re.fullmatch(r"DECIMAL\(\d+,\s*0\)", duckdb_type):
        return True
    return allowed is None or duckdb_type.split("(")[0].strip() in allowed


def quoted(name: str) -> str:
    """A column or table name as a quoted SQL identifier (DuckDB and SQLite alike)."""
    return '"' + name.replace('"', '""') + '"'


_MICROS = {"W": 7 * 86_400 * 10**6, "D": 86_400 * 10**6, "h": 3_600 * 10**6, "m": 60 * 10**6, **MICROS_PER_UNIT}
_FINER = {"ns": 10**3, "ps": 10**6, "fs": 10**9, "as": 10**12}  # parts of a microsecond


def _ttl_of_micros(micros: Decimal | int, value: object) -> timedelta | None:
    """A TTL of ``micros`` microseconds (0: no TTL). Timestamps are compared in whole
    microseconds, so a TTL must be a whole number of them; beyond ``timedelta`` it is refused."""
    if 0 < micros < 1:
        raise ValueError(f"ttl {value!r} is shorter than a microsecond")
    if micros != int(micros):
        raise ValueError(f"ttl {value!r} is not a whole number of microseconds")
    try:
        return timedelta(microseconds=int(micros)) or None
    except OverflowError:
        raise ValueError(f"ttl {value!r} is too long; leave it out for no TTL") from None


def parse_ttl(value: str | int | float | None) -> timedelta | None:
    """A duration as a TTL, read exactly (in decimal: ``"1.5 seconds"`` is 1,500,000 µs). None,
    0 or "none" for no TTL. Text may be:

    * a number of seconds (``"30"``, as the number 30 is);
    * amounts with units, in words (``"3 hours"``, ``"1 day 12 hours"``, ``"2 days, 6 hours"``)
      or short (``"36h"``, ``"1d12h"``, ``"90m"``, ``"400ms"``, as ``mlops features list`` prints
      them; lower case only, since ``"3M"`` could mean months), each unit at most once;
    * ISO 8601 (``"PT36H"``, ``"P1DT12H"``, ``"P2W"``): years and months are refused, as they vary;
    * a duration as Python or pandas print one (``"1 day, 2:00:00"``, ``"1 days 02:00:00"``).
    """
    if value in (None, "", 0) or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"ttl {value!r} is not a duration" if math.isnan(value) else
                             f"ttl {value!r} is too long; leave it out for no TTL")
        micros = Decimal(str(value)) * 10**6
    else:
        text = str(value)
        micros = _text_micros(text, value)
        if micros is None and text.strip().startswith("-"):
            # ('-1 hour', '-P1D'; pandas prints -1 hour as '-1 days +23:00:00')
            size = _text_micros(text.strip()[1:].replace(" +", " ", 1), value)
            if size:
                raise ValueError(f"ttl {value!r} is negative")
            micros = size  # (-0 is 0: no TTL)
        if micros is None:
            raise ValueError(f"ttl {value!r}: expected a duration such as '3 hours', '1 day 12 hours', '36h', "
                             "'1d12h', ISO 8601's 'PT36H', or a number of seconds")
    return _ttl_of_micros(micros, value)


def _text_micros(text: str, value: object) -> Decimal | None:
    """The microseconds ``text`` says (see :func:`parse_ttl`), or None if it is none of its forms."""
    if match := _SECONDS_TEXT.fullmatch(text):
        return Decimal(match.group(1)) * 10**6
    if match := _ISO_DURATION.fullmatch(text):
        years, months = match.group(1), match.group(2)
        if (years and Decimal(years.replace(",", "."))) or (months and Decimal(months.replace(",", "."))):
            raise ValueError(f"ttl {value!r} is not a fixed duration (months and years vary): give weeks or days")
        return sum((Decimal(amount.replace(",", ".")) * unit
                    for amount, unit in zip(match.groups(), _ISO_UNITS, strict=True) if amount and unit),
                   Decimal(0))
    if match := _CLOCK_DURATION.fullmatch(text):
        days, hours, minutes, seconds = match.groups()
        return (Decimal(days or 0) * 86_400 + Decimal(hours) * 3_600 + Decimal(minutes) * 60 + Decimal(seconds)) * 10**6
    return _amounts_with_units(text, value)


def _amounts_with_units(text: str, value: object) -> Decimal | None:
    """``"1 day 12 hours"``, ``"1d12h"``: the sum of the amounts, or None if ``text`` is not only
    those. A unit given twice (``"1h 1h"``) is refused: most likely a typo."""
    position, end = len(text) - len(text.lstrip()), len(text.rstrip())
    total, seen = Decimal(0), set()
    while position < end:
        if seen:
            position = _TTL_SEPARATOR.match(text, position).end()
        match = _TTL_PART.match(text, position)
        if not match:
            return None
        unit = match.group(2)
        if unit not in _SHORT_TTL_UNITS:
            unit = unit.lower()
            unit = unit if unit in _WORD_TTL_UNITS else unit[:-1] if unit.endswith("s") else None
            if unit not in _WORD_TTL_UNITS:
                return None
        size = _SHORT_TTL_UNITS.get(unit) or _WORD_TTL_UNITS[unit]
        if size in seen:
            raise ValueError(f"ttl {value!r} gives {_UNIT_NAMES[size]} twice (each unit once)")
        seen.add(size)
        total += Decimal(match.group(1)) * size
        position = match.end()
    return total if seen else None


def ttl_text(ttl: timedelta | float | None) -> str:
    """A TTL (a ``timedelta``, exactly, or seconds, as the registry keeps it) in the largest unit
    that holds it whole (3h, 7d, 90m, 400ms, 5us); "none" without one (None, NaN or 0). Both
    read back with :func:`parse_ttl`."""
    if ttl is None or ttl != ttl or not ttl:
        return "none"
    micros = ttl // timedelta(microseconds=1) if isinstance(ttl, timedelta) else round(ttl * 1_000_000)
    for unit, size in sorted(_SHORT_TTL_UNITS.items(), key=lambda item: -item[1]):
        if micros % size == 0:
            return f"{micros // size}{unit}"
    raise AssertionError("unreachable: 1us divides every whole number of microseconds")


def ttl_from_numpy(value: np.timedelta64) -> timedelta | None:
    """A numpy duration as a TTL, exactly (numpy's own cast to microseconds would truncate, or
    wrap around beyond int64). Months and years are not fixed durations and are refused."""
    if np.isnat(value):
        raise ValueError("ttl NaT is not a duration")
    unit, count = np.datetime_data(value.dtype)
    amount = int(value.astype(np.int64)) * count
    if unit in _MICROS:
        return _ttl_of_micros(amount * _MICROS[unit], value)
    if unit in _FINER:
        return _ttl_of_micros(Decimal(amount) / _FINER[unit], value)
    raise ValueError(f"ttl {value!r} is not a fixed duration (months and years vary)")


@dataclass(frozen=True)
class Feature:
    """A feature column: its name, declared type (one of ``FEATURE_TYPES``), what it means and
    who answers for it (empty: the view's owner)."""

    name: str
    type: str = "float"
    description: str = ""
    owner: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"feature name {self.name!r}: a column name (non-empty text)")
        if self.type not in FEATURE_TYPES:
            raise ValueError(f"feature {self.name!r}: type {self.type!r} is not one of {list(FEATURE_TYPES)}")


@dataclass(frozen=True)
class FeatureView:
    """A table of feature rows keyed by entities and stamped with the instant they became true.

    Attributes:
        name: the view's name (``fv_*``), also the asset name when it comes from dbt_like_sql.
        source: the table or query the rows live in (``features.fv_plane``).
        entities: join key columns, one or several.
        event_timestamp: the column holding the instant a row became known (UTC).
        features: the feature columns.
        ttl: how old a row may be at the entity's timestamp and still be used (inclusive).
        created_timestamp: breaks ties between rows with the same event timestamp (latest wins).
        owner: who answers for the view.
    """

    name: str
    source: str
    entities: tuple[str, ...]
    event_timestamp: str
    features: tuple[Feature, ...]
    ttl: timedelta | None = None
    created_timestamp: str | None = None
    owner: str = ""
    description: str = ""
    sql: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        self._check_argument_types()
        # One key may be given as a bare name; a string is not split into its letters.
        entities = (self.entities,) if isinstance(self.entities, str) else tuple(self.entities)
        object.__setattr__(self, "entities", entities)
        object.__setattr__(self, "features", tuple(self.features))
        if not entities:
            raise ValueError(f"feature view {self.name!r}: no entity join key")
        if not self.features:
            raise ValueError(f"feature view {self.name!r}: no features (a view serves at least one)")
        if ":" in self.name:  # (references are 'view:feature')
            raise ValueError(f"feature view {self.name!r}: a view name cannot contain ':'")
        # Column names are compared ignoring case, as DuckDB and SQLite resolve them: "x" and "X"
        # are one column to both.
        clashing = [c for c in (*entities, *self.feature_names) if c.lower() in RESERVED]
        if clashing:
            raise ValueError(f"feature view {self.name!r}: columns {clashing} have names the store reserves "
                             f"{list(RESERVED)} (select them under another name)")
        keys = [k.lower() for k in entities]
        if len(set(keys)) < len(keys):
            raise ValueError(f"feature view {self.name!r}: join keys {list(entities)} name a column more than once")
        reserved = {*keys, self.event_timestamp.lower(), (self.created_timestamp or "").lower()}
        taken = [f for f in self.feature_names if f.lower() in reserved]
        if taken:
            raise ValueError(f"feature view {self.name!r}: features {taken} are also its join keys or timestamp "
                             "columns (select them under another name to serve them as features)")
        lowered = [f.lower() for f in self.feature_names]
        twice = sorted({f for f in self.feature_names if lowered.count(f.lower()) > 1})
        if twice:
            raise ValueError(f"feature view {self.name!r}: features {twice} are declared more than once "
                             "(names are compared ignoring case)")
        # A TTL may be given as the YAML declares it ("2 hours", seconds) or as a timedelta; any
        # other value is refused here rather than failing deep inside a join.
        ttl = self.ttl
        if isinstance(ttl, np.integer | np.floating) and not isinstance(ttl, np.timedelta64):
            ttl = ttl.item()
        try:
            if isinstance(ttl, np.timedelta64):
                ttl = ttl_from_numpy(ttl)
            elif isinstance(ttl, pd.Timedelta):  # (a timedelta with nanoseconds, which timedelta drops)
                ttl = _ttl_of_micros(Decimal(ttl.value) / 1000, ttl)
            elif isinstance(ttl, str | int | float) and not isinstance(ttl, bool):
                ttl = parse_ttl(ttl)
        except ValueError as exc:
            raise ValueError(f"feature view {self.name!r}: {exc}") from None
        if ttl is not None and not isinstance(ttl, timedelta):
            raise ValueError(f"feature view {self.name!r}: ttl {ttl!r} is not a duration "
                             "(a timedelta, '<number> <seconds|minutes|hours|days|weeks>' or seconds)")
        if ttl is not None and ttl < timedelta(0):
            declared = self.ttl if isinstance(self.ttl, str | int | float) else ttl  # (as the user wrote it)
            raise ValueError(f"feature view {self.name!r}: ttl {declared} is negative")
        object.__setattr__(self, "ttl", ttl or None)  # 0 means no TTL, as in parse_ttl

    def _check_argument_types(self) -> None:
        """Arguments of the wrong kind, refused by name rather than failing later inside the store."""
        def names(value: object) -> bool:
            return isinstance(value, str) and bool(value.strip())

        if not names(self.name):
            raise ValueError(f"feature view name {self.name!r}: non-empty text")
        where = f"feature view {self.name!r}"
        for field_name in ("source", "event_timestamp"):
            if not names(getattr(self, field_name)):
                raise ValueError(f"{where}: {field_name} {getattr(self, field_name)!r} is not a name (non-empty text)")
        if self.created_timestamp is not None and not names(self.created_timestamp):
            raise ValueError(f"{where}: created_timestamp {self.created_timestamp!r} is not a column name "
                             "(None when there is none)")
        if self.source.rstrip().endswith(";"):  # (read inside other queries: DuckDB would blame a word of ours)
            raise ValueError(f"{where}: source {self.source!r} ends with ';': give the table or query without it")
        for field_name in ("owner", "description"):  # (recorded as text: the YAML path refuses others too)
            if not isinstance(getattr(self, field_name), str):
                raise ValueError(f"{where}: {field_name} {getattr(self, field_name)!r} is not text ('' for none)")

        def in_order(value: object) -> bool:  # (any iterable but text, mappings and sets, whose order changes)
            return isinstance(value, Iterable) and not isinstance(value, str | bytes | Mapping | set | frozenset
                                                                          | Feature)

        entities = self.entities
        if not (isinstance(entities, str) or in_order(entities)):
            # (a set's order changes from process to process, and the key's order is the view's version)
            raise ValueError(f"{where}: entities {entities!r}: give a name or a list of names, in order")
        if not isinstance(entities, str):
            object.__setattr__(self, "entities", tuple(entities))  # (a generator is read once)
        odd = [k for k in ([entities] if isinstance(entities, str) else self.entities) if not names(k)]
        if odd:
            raise ValueError(f"{where}: entity join keys {odd} are not column names (non-empty text)")
        if not in_order(self.features):
            raise ValueError(f"{where}: features {self.features!r}: give a list of Feature(...)")
        object.__setattr__(self, "features", tuple(self.features))
        odd = [f for f in self.features if not isinstance(f, Feature)]
        if odd:
            raise ValueError(f"{where}: features {odd!r} are not Feature(...) objects (Feature('x'), or "
                             "Feature('x', 'int', 'what it means'))")

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def ttl_micros(self) -> int | None:
        """The TTL in whole microseconds (as it was declared: see ``_ttl_of_micros``), or None."""
        return self.ttl // timedelta(microseconds=1) if self.ttl else None

    @cached_property
    def version(self) -> str:
        """A hash of the declaration and its SQL (:meth:`to_json`): a new version whenever either
        changes. (Kept once computed: the view is frozen, and each online lookup asks for it.)"""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @cached_property
    def serving_version(self) -> str:
        """A hash of what decides the values served (:meth:`to_json` without the descriptions and
        owners): the online store keeps a view's rows under it, so that editing only a view's
        documentation does not rebuild them."""
        declaration = json.loads(self.to_json())
        for documented in (declaration, *declaration["features"]):
            del documented["description"], documented["owner"]
        return hashlib.sha256(json.dumps(declaration, sort_keys=True).encode()).hexdigest()[:16]

    def to_json(self) -> str:
        """The whole declaration as JSON (the TTL in exact microseconds: seconds as a float would
        merge TTLs 1 µs apart): :meth:`from_json` gives back an equal view of the same version.
        The registry keeps applied views so."""
        declaration = asdict(self)
        declaration["ttl"] = self.ttl_micros
        return json.dumps(declaration, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FeatureView:
        """The view :meth:`to_json` wrote."""
        declaration = json.loads(text)
        for field_name in ("owner", "description"):  # (earlier versions recorded any value: None, 5)
            value = declaration.get(field_name)
            if not isinstance(value, str):
                declaration[field_name] = "" if value is None else str(value)
        features = tuple(Feature(**feature) for feature in declaration.pop("features"))
        micros = declaration.pop("ttl")
        return cls(**declaration, features=features, ttl=None if micros is None else timedelta(microseconds=micros))

    def schema_problems(self, columns: dict[str, str], source: str = "the source") -> list[str]:
        """The view's declared columns against its ``source``'s (``columns``: name lowered ->
        DuckDB type), each problem as ``column: what``: its join keys and timestamps must exist,
        the timestamps be TIMESTAMPs and the features have their declared types."""
        problems = [f"{key}: join key not produced by {source}" for key in self.entities
                    if key.lower() not in columns]
        for role, column in (("event timestamp", self.event_timestamp), ("created timestamp", self.created_timestamp)):
            if column is None:
                continue
            type_ = columns.get(column.lower())
            if type_ is None:
                problems.append(f"{column}: {role} not produced by {source}")
            elif type_ not in TIMESTAMP_TYPES:
                problems.append(f"{column}: {role} {timestamp_type_problem(type_)}")
        for feature in self.features:
            type_ = columns.get(feature.name.lower())
            if type_ is not None and not type_matches(feature.type, type_):
                problems.append(f"{feature.name}: declared {feature.type} but {source} produces {type_}")
        return problems

    @classmethod
    def from_yaml(cls, name: str, source: str, block: dict, description: str = "", sql: str = "") -> FeatureView:
        try:
            return cls(
                name=name,
                source=source,
                entities=block["entities"],  # one name or a list; __post_init__ makes it a tuple
                event_timestamp=block["event_timestamp"],
                features=tuple(
                    Feature(f["name"], f.get("type", "float"), f.get("description") or "", f.get("owner") or "")
                    for f in block["features"]
                ),
                ttl=block.get("ttl"),  # parsed (and refused with the view's name) by __post_init__
                created_timestamp=block.get("created_timestamp"),
                owner=block.get("owner") or "",  # (an empty ``owner:`` reads None)
                description=description,
                sql=sql,
            )
        except KeyError as missing:
            raise ValueError(f"feature view {name}: field {missing} is required") from None
