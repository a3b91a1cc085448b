"""Deployment actions: deploy a strategy, promote, roll back, stop an experiment.

Each action changes the registry (the deployment tags, or the ``champion`` alias) and appends an
event to the deployment outbox, a JSON-lines file under ``data/serving/``: the serving process may
act (admin endpoints) but never opens the warehouse, so events reach the promotion ledger when a
warehouse writer imports the outbox (the CLI does it at once; the ``deployment_controller`` asset
on every run). Import is idempotent by event id.
"""

from __future__ import annotations

import json
import uuid
import warnings
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlops_pipelines.governance.ledger import PromotionRecord, append_promotion
from mlops_pipelines.serving.deployment import DEFAULT_RAMP, Deployment
from mlops_pipelines.training.registry import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION

# Registered model tag: the last rollback, "<version left>-><version put back>". A second rollback
# while the aliases are still as it left them is refused; any other promotion makes it moot.
ROLLED_BACK_FROM = "rolled_back_from"


@dataclass(frozen=True)
class DeploymentEvent:
    """One deployment step, in the promotion ledger's terms."""

    event_id: str
    model_name: str
    decision: str  # deployed | ramped | promoted | rolled_back | concluded
    reason: str
    strategy: str
    share: float
    champion_before: str | None
    champion_after: str | None
    challenger_version: str | None
    statistics: dict
    decided_by: str
    decided_at: str

    def record(self) -> PromotionRecord:
        return PromotionRecord(
            dagster_run_id=self.event_id, model_name=self.model_name,
            challenger_version=self.challenger_version or "", champion_before=self.champion_before,
            champion_after=self.champion_after, decision=self.decision,
            reason=f"{self.reason} (by {self.decided_by})", challenger_roc_auc=None, champion_roc_auc=None,
            strategy=self.strategy, share=self.share, statistics=json.dumps(self.statistics, sort_keys=True),
        )


class DeploymentControl:
    """The registry side of deployments for one registered model."""

    def __init__(self, tracking_uri: str, model_name: str, outbox: str | Path) -> None:
        self.client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
        self.model_name = model_name
        self.outbox = Path(outbox)

    # -- reading -------------------------------------------------------------------------------
    def aliases(self) -> dict[str, str]:
        try:
            return {k: str(v) for k, v in self.client.get_registered_model(self.model_name).aliases.items()}
        except MlflowException as error:
            raise LookupError(f"registered model {self.model_name!r} not found: run mlops demo first") from error

    def deployment(self) -> Deployment:
        return Deployment.from_tags(dict(self.client.get_registered_model(self.model_name).tags))

    def _current(self, expected_id: str | None) -> Deployment:
        """The record, checked to be the one a decision was made about (when ``expected_id`` is given)."""
        current = self.deployment()
        if expected_id is not None and current.deployment_id != expected_id:
            raise LookupError(f"the deployment changed (now {current.deployment_id}, judged {expected_id}): "
                              "nothing done")
        return current

    # -- writing -------------------------------------------------------------------------------
    def _write(self, deployment: Deployment) -> None:
        for key, value in deployment.to_tags().items():
            self.client.set_registered_model_tag(self.model_name, key, value)

    def _event(self, decision: str, reason: str, deployment: Deployment, before: str | None,
               after: str | None, challenger: str | None, statistics: dict | None, by: str,
               event_id: str | None) -> DeploymentEvent:
        event = DeploymentEvent(
            event_id=event_id or f"{by}-{uuid.uuid4().hex[:12]}", model_name=self.model_name,
            decision=decision, reason=reason, strategy=deployment.strategy, share=deployment.share,
            champion_before=before, champion_after=after, challenger_version=challenger,
            statistics=statistics or {}, decided_by=by,
            decided_at=datetime.now(UTC).isoformat(timespec="microseconds"),  # (the ledger's order)
        )
        self.outbox.parent.mkdir(parents=True, exist_ok=True)
        # One short line per write with O_APPEND: concurrent writers never interleave. A line a
        # crash cut short is closed first, so that it does not swallow this event.
        torn = self.outbox.exists() and self.outbox.stat().st_size > 0 and _last_byte(self.outbox) != b"\n"
        with self.outbox.open("a") as out:
            out.write(("\n" if torn else "") + json.dumps(asdict(event), sort_keys=True) + "\n")
        return event

    def deploy(self, strategy: str, challenger_alias: str | None = CHALLENGER, share: float | None = None,
               sample_size: int = 0, ramp: tuple[float, ...] | None = None, by: str = "cli") -> DeploymentEvent:
        """Start a strategy (``single`` ends any experiment). Checks the aliases exist first."""
        aliases = self.aliases()
        if CHAMPION not in aliases:
            raise LookupError(f"registered model {self.model_name!r} has no {CHAMPION!r} alias yet")
        try:
            current = self.deployment()
        except ValueError:
            current = Deployment()  # (an unreadable record: this deployment replaces it)
        challenger_version = None
        if strategy == "single":
            challenger_alias, share = None, 0.0
        else:
            if not challenger_alias or challenger_alias not in aliases:
                raise LookupError(f"alias {challenger_alias!r} of {self.model_name!r} points at no version")
            if aliases[challenger_alias] == aliases[CHAMPION]:
                raise ValueError(f"alias {challenger_alias!r} is the champion (version {aliases[CHAMPION]})")
            challenger_version = aliases[challenger_alias]
        ramp = tuple(ramp) if ramp is not None else DEFAULT_RAMP  # (not the last deployment's)
        if share is None:
            share = {"canary": ramp[0] if ramp else 0.0, "ab": 0.5, "shadow": 1.0}.get(strategy, 0.0)
        if strategy != "single" and isinstance(share, int | float) and not isinstance(share, bool) and share == 0:
            # (no key would reach the challenger: the controller would wait for its answers forever)
            raise ValueError(f"a {strategy} deployment with share 0 sends the challenger nothing: give a share > 0")
        deployment = current.renewed(by, strategy=strategy, challenger_alias=challenger_alias,
                                     challenger_version=challenger_version, share=share,
                                     sample_size=sample_size, ramp=tuple(ramp),
                                     champion_version=aliases[CHAMPION] if strategy != "single" else None)
        self._write(deployment)
        return self._event("deployed", f"deployment {deployment.describe()}", deployment, aliases[CHAMPION],
                           aliases[CHAMPION], challenger_version, {"deployment_id": deployment.deployment_id},
                           by, None)

    def set_share(self, share: float, reason: str, statistics: dict, by: str,
                  event_id: str | None = None, expected_id: str | None = None) -> DeploymentEvent:
        """Ramp the challenger's share within the running deployment."""
        current = self._current(expected_id)
        aliases = self.aliases()
        deployment = current.renewed(by, share=share)
        self._write(deployment)
        return self._event("ramped", reason, deployment, aliases.get(CHAMPION), aliases.get(CHAMPION),
                           current.challenger_version, statistics, by, event_id)

    def end_experiment(self, reason: str, statistics: dict | None = None, by: str = "cli",
                       event_id: str | None = None, decision: str = "rolled_back",
                       expected_id: str | None = None) -> DeploymentEvent:
        """Send all traffic back to the champion (the challenger stops serving); ``decision`` is
        ``rolled_back``, or ``concluded`` for an A/B test that ended without a winner."""
        current = self._current(expected_id)
        aliases = self.aliases()
        deployment = current.renewed(by, strategy="single", challenger_alias=None, challenger_version=None,
                                     share=0.0, champion_version=None)
        self._write(deployment)
        return self._event(decision, reason, deployment, aliases.get(CHAMPION), aliases.get(CHAMPION),
                           current.challenger_version, statistics, by, event_id)

    def promote(self, alias: str = CHALLENGER, reason: str = "promoted by hand", statistics: dict | None = None,
                by: str = "cli", event_id: str | None = None, version: str | None = None,
                expected_id: str | None = None) -> DeploymentEvent:
        """Point ``champion`` at ``version`` (default: the version of ``alias``, or, during an
        experiment on that alias, the version the experiment tests); the old one becomes
        ``previous_champion``; the deployment goes back to ``single``."""
        running = self._current(expected_id)
        aliases = self.aliases()
        if version is None and running.strategy != "single" and alias == running.challenger_alias \
                and running.challenger_version:
            # The version the experiment tests, which the alias may have left since (a retraining
            # moves ``challenger``): the one its evidence is about, against the champion it began
            # with (a record written before champions were pinned cannot tell).
            if running.champion_version and aliases.get(CHAMPION) != running.champion_version:
                raise ValueError(f"the champion changed from version {running.champion_version} to "
                                 f"{aliases.get(CHAMPION)} since the experiment on version "
                                 f"{running.challenger_version} began: it was never compared with the new "
                                 "champion; nothing promoted (deploy again to test it)")
            version = running.challenger_version
        if version is None:
            if alias not in aliases:
                raise LookupError(f"alias {alias!r} of {self.model_name!r} points at no version")
            version = aliases[alias]
        before, after = aliases.get(CHAMPION), str(version)
        if before == after:
            raise ValueError(f"version {after} is already the champion")
        if before is not None:
            self.client.set_registered_model_alias(self.model_name, PREVIOUS_CHAMPION, before)
        self.client.set_registered_model_alias(self.model_name, CHAMPION, after)
        if ROLLED_BACK_FROM in self.client.get_registered_model(self.model_name).tags:  # (a new champion)
            self.client.delete_registered_model_tag(self.model_name, ROLLED_BACK_FROM)
        deployment = self.deployment().renewed(by, strategy="single", challenger_alias=None,
                                               challenger_version=None, share=0.0, champion_version=None)
        self._write(deployment)
        return self._event("promoted", reason, deployment, before, after, after, statistics, by, event_id)

    def rollback(self, reason: str = "rolled back by hand", by: str = "cli") -> DeploymentEvent:
        """End a running experiment; with none running, put the previous champion back (once:
        rolling back again refuses rather than swapping back to the version just left, which
        stays ``previous_champion`` as serving's fallback and is recorded in ``rolled_back_from``)."""
        if self.deployment().strategy != "single":
            return self.end_experiment(reason, by=by)
        aliases = self.aliases()
        previous, current = aliases.get(PREVIOUS_CHAMPION), aliases.get(CHAMPION)
        if previous is None:
            raise LookupError(f"{self.model_name!r} has no {PREVIOUS_CHAMPION!r}: nothing to roll back to")
        tags = dict(self.client.get_registered_model(self.model_name).tags)
        if tags.get(ROLLED_BACK_FROM) == f"{previous}->{current}":  # (still as the last rollback left them)
            # A second rollback would swap back to the version the first one left: refused. (The
            # alias stays, so that serving processes still have a fallback should the champion fail.)
            raise LookupError(f"version {previous} is the one the last rollback left: nothing to roll back "
                              f"to (`mlops promote --alias {PREVIOUS_CHAMPION}` puts it back on purpose)")
        self.client.set_registered_model_alias(self.model_name, CHAMPION, previous)
        if current is not None:
            self.client.set_registered_model_alias(self.model_name, PREVIOUS_CHAMPION, current)
            self.client.set_registered_model_tag(self.model_name, ROLLED_BACK_FROM, f"{current}->{previous}")
        deployment = self.deployment()
        return self._event("rolled_back", reason, deployment, current, previous, current, {}, by, None)


def _last_byte(path: Path) -> bytes:
    with path.open("rb") as file:
        file.seek(-1, 2)
        return file.read(1)


def import_outbox(connection: duckdb.DuckDBPyConnection, outbox: str | Path) -> int:
    """Append the outbox's events to ``governance.promotion_ledger`` (idempotent); returns events read."""
    path = Path(outbox)
    if not path.exists():
        return 0
    count = 0
    for number, line in enumerate(path.read_text().splitlines(keepends=True), start=1):
        if not line.endswith("\n") or not line.strip():
            continue  # a line still being written is taken on the next import
        try:
            event = DeploymentEvent(**json.loads(line))
            append_promotion(connection, event.record())
            connection.execute(
                "update governance.promotion_ledger set decided_at = ?::timestamptz where dagster_run_id = ?",
                [event.decided_at, event.event_id],
            )
        except (ValueError, TypeError, duckdb.Error) as error:
            # A write a crash cut short (or a hand edit): the steps it did are done; the commands
            # after it must not fail once they have acted.
            warnings.warn(f"{path}: line {number} is no deployment event ({str(error).splitlines()[0]}); skipped",
                          stacklevel=2)
            continue
        count += 1
    return count
