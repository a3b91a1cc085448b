"""The request and response bodies of ``POST /predict``, validated by pydantic.

A request carries either ``flights`` (what a user knows before departure; the app looks up the
rest of the features in the online store) or ``features`` (ready model input vectors, for callers
with their own features). Sizes are bounded so that one request cannot hold the server.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

LOCAL_TIMEZONE = ZoneInfo("America/New_York")  # the warehouse's local time (training.model.LOCAL_TIMEZONE)

MAX_ITEMS = 1000
"""Most flights or feature vectors in one request."""

Code = Annotated[str, StringConstraints(strip_whitespace=True, to_upper=True, min_length=2, max_length=8)]
Airport = Annotated[str, StringConstraints(strip_whitespace=True, to_upper=True, pattern=r"^[A-Za-z0-9]{3,4}$")]


class Flight(BaseModel):
    """A scheduled flight as known before departure."""

    model_config = ConfigDict(extra="forbid")

    carrier: Code = Field(description="Two-letter carrier code, e.g. B6.")
    flight: int = Field(ge=1, le=99999, description="Flight number.")
    tailnum: Annotated[str, StringConstraints(strip_whitespace=True, to_upper=True)] | None = Field(
        default=None, max_length=10, description="Aircraft tail number, if assigned (read in capitals).")
    origin: Airport = Field(description="Origin airport (FAA code), e.g. JFK.")
    dest: Airport = Field(description="Destination airport (FAA code).")
    sched_dep: AwareDatetime = Field(
        description="Scheduled departure, ISO 8601 with a UTC offset, e.g. 2013-02-03T07:00:00-05:00 (the same "
                    "instant in any offset, 2013-02-03T12:00:00Z, is the same flight)."
    )
    distance: float = Field(gt=0, le=20000, allow_inf_nan=False, description="Great-circle distance, miles.")

    @field_validator("sched_dep")
    @classmethod
    def _an_instant_of_new_york(cls, value: datetime) -> datetime:
        try:
            value.astimezone(LOCAL_TIMEZONE)
        except (OverflowError, ValueError):
            raise ValueError("an instant of years 1 to 9999 in UTC and New York time") from None
        return value

    @property
    def local_departure(self) -> datetime:
        """The scheduled departure in New York time, as the warehouse computes local hours and
        flight ids (every origin of the data is a New York airport), whatever offset it came with."""
        return self.sched_dep.astimezone(LOCAL_TIMEZONE)

    @property
    def flight_id(self) -> str:
        """The warehouse's flight key (local scheduled date and time, carrier, number, origin)."""
        return f"{self.local_departure:%Y-%m-%dT%H%M}_{self.carrier}{self.flight}_{self.origin}"


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str | None = Field(default=None, max_length=128, description="Caller's id, echoed back.")
    flights: list[Flight] | None = Field(default=None, min_length=1, max_length=MAX_ITEMS)
    features: list[dict[str, Any]] | None = Field(
        default=None, min_length=1, max_length=MAX_ITEMS,
        description="Ready model inputs: one object per row, keyed by the model signature's columns.",
    )
    return_features: bool = Field(default=False, description="Echo each item's model input in the answer.")
    keys: list[str] | None = Field(
        default=None, max_length=MAX_ITEMS,
        description="Routing keys for `features` rows (sticky arm per key); default: the request id.",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> PredictRequest:
        if (self.flights is None) == (self.features is None):
            raise ValueError("give exactly one of 'flights' or 'features'")
        if self.keys is not None and (self.features is None or len(self.keys) != len(self.features)):
            raise ValueError("'keys' needs 'features' and one key per feature row")
        return self
