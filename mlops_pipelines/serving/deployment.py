"""The deployment record: which models serve, and how traffic is split between them.

Kept as one JSON tag ``deployment`` of the registered model, so that it lives beside the aliases it
names, is shown by the MLflow UI, and reaches the serving process in the same registry call that
reads the aliases. The CLI (``mlops deploy``, ``mlops rollback``) and the progressive-delivery
controller edit it; serving only reads it.

Strategies:
- ``single``: the champion answers every request.
- ``shadow``: the champion answers; the challenger also scores a share of requests (``share``,
  1.0 = all), logged, never returned.
- ``canary``: a share of keys is answered by the challenger; the controller ramps the share.
- ``ab``: a fixed split, until ``sample_size`` labelled predictions per arm are logged.

Routing is sticky: a key (the flight id, or the caller's key) hashes to a point in [0, 1), and the
challenger answers when that point is below ``share``. Ramping the share up keeps every key that
already had the challenger; a new deployment id reshuffles.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime

STRATEGIES = ("single", "shadow", "canary", "ab")
TAG = "deployment"
DEFAULT_RAMP = (0.05, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class Deployment:
    """A deployment of the ``champion_alias`` model, optionally beside a challenger."""

    strategy: str = "single"
    champion_alias: str = "champion"
    challenger_alias: str | None = None
    challenger_version: str | None = None
    """The version under test, pinned when the deployment starts: retraining may move the alias,
    never the experiment."""
    champion_version: str | None = None
    """The champion's version when the deployment started: an experiment compares the challenger
    with it, and ends when another becomes champion (a retraining's promotion)."""
    share: float = 0.0
    """Challenger's share of keys (canary, ab) or of requests scored in shadow; 0.1 = 10%."""
    sample_size: int = 0
    """ab only: labelled predictions per arm before the test is read."""
    ramp: tuple[float, ...] = DEFAULT_RAMP
    """canary only: the shares the controller steps through; the last step promotes."""
    deployment_id: str = "initial"
    updated_at: str = ""
    updated_by: str = ""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"deployment strategy {self.strategy!r}: expected one of {', '.join(STRATEGIES)}")
        # (the ramp first: a canary's share defaults to its first step, which would be blamed instead)
        fractions = all(isinstance(s, int | float) and not isinstance(s, bool) for s in self.ramp)
        if not self.ramp or not fractions or any(not 0.0 < s <= 1.0 for s in self.ramp) \
                or any(a >= b for a, b in zip(self.ramp, self.ramp[1:], strict=False)):
            raise ValueError(f"canary ramp {self.ramp}: expected strictly increasing fractions in (0, 1]")
        if isinstance(self.share, bool) or not isinstance(self.share, int | float) or not 0.0 <= self.share <= 1.0:
            raise ValueError(f"deployment share {self.share!r}: expected a fraction in [0, 1]")
        if self.strategy != "single" and not self.challenger_alias:
            raise ValueError(f"deployment strategy {self.strategy!r} needs a challenger alias")
        if isinstance(self.sample_size, bool) or not isinstance(self.sample_size, int):
            raise ValueError(f"deployment sample size {self.sample_size!r}: expected a whole number")
        if self.strategy == "ab" and self.sample_size <= 0:
            raise ValueError("deployment strategy 'ab' needs a planned sample size (--sample-size) > 0")

    @property
    def aliases(self) -> tuple[str, ...]:
        """The aliases the serving process must hold loaded."""
        if self.strategy == "single" or not self.challenger_alias:
            return (self.champion_alias,)
        return (self.champion_alias, self.challenger_alias)

    def describe(self) -> str:
        if self.strategy == "single":
            return f"single:{self.champion_alias}"
        return f"{self.strategy}:{self.champion_alias}+{self.challenger_alias}@{self.share:g}"

    def to_tags(self) -> dict[str, str]:
        """The record as one registry tag: written in one call, so a reader never sees half of it."""
        return {TAG: json.dumps(asdict(self), sort_keys=True)}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> Deployment:
        """The record in a registered model's tags (``single`` on the champion when there is none)."""
        if TAG not in tags:
            return cls()
        try:
            values = json.loads(tags[TAG])
            values["ramp"] = tuple(values.get("ramp") or DEFAULT_RAMP)
            return cls(**values)
        except (ValueError, TypeError, AttributeError) as error:
            raise ValueError(f"the registered model's {TAG!r} tag is no deployment record ({error}); "
                             "`mlops deploy --strategy single` writes a new one") from None

    def renewed(self, by: str, **changes: object) -> Deployment:
        """A new record (new id when the strategy, the challenger or the champion changes, so that
        routing reshuffles and the arms' statistics start over)."""
        changed = replace(self, **changes)
        experiment = ("strategy", "challenger_alias", "challenger_version", "champion_version")
        same_experiment = all(getattr(changed, name) == getattr(self, name) for name in experiment)
        return replace(
            changed,
            deployment_id=self.deployment_id if same_experiment else uuid.uuid4().hex[:12],
            updated_at=datetime.now(UTC).isoformat(timespec="microseconds"),
            updated_by=by,
        )


def routing_point(deployment_id: str, key: str) -> float:
    """A uniform point in [0, 1) for ``key``, stable for the life of a deployment."""
    digest = hashlib.blake2b(f"{deployment_id}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def challenger_answers(deployment: Deployment, key: str) -> bool:
    """Whether the challenger answers this key (canary, ab)."""
    if deployment.strategy not in ("canary", "ab") or deployment.share <= 0.0:
        return False
    return routing_point(deployment.deployment_id, key) < deployment.share


def shadow_scores(deployment: Deployment, key: str) -> bool:
    """Whether the challenger also scores this key in shadow."""
    if deployment.strategy != "shadow" or deployment.share <= 0.0:
        return False
    return deployment.share >= 1.0 or routing_point(deployment.deployment_id, key) < deployment.share
