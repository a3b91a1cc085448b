"""The models the serving process holds, by registry alias, and how they change under it.

A poller reads the registered model (its aliases and its deployment tags, one registry call) every
``poll_seconds``; a version that changed is loaded in the background and the whole serving state
is then replaced by one reference assignment. A request reads ``manager.state`` once and uses that
snapshot to the end, so a swap never touches a request in flight (blue-green). A version that
fails to load leaves the previous one serving; the failure shows in ``/ready`` and ``/metrics``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlops_pipelines.serving.deployment import Deployment
from mlops_pipelines.serving.predictor import LoadedModel
from mlops_pipelines.training.registry import PREVIOUS_CHAMPION

log = logging.getLogger(__name__)

RETRY_SECONDS = 60.0
"""How long a version that failed to load waits before the poller tries it again."""


@dataclass(frozen=True)
class ServingState:
    """An immutable snapshot: the deployment record and a model per alias it names."""

    deployment: Deployment
    models: dict[str, LoadedModel]
    errors: dict[str, str] = field(default_factory=dict)
    """alias -> why its wanted version is not the one serving (load failure, missing alias)."""
    checked_at: datetime | None = None
    previous_champion: LoadedModel | None = None
    """The champion this one replaced, still in memory: it answers if the new one fails to predict."""

    @property
    def champion(self) -> LoadedModel | None:
        return self.models.get(self.deployment.champion_alias)

    @property
    def challenger(self) -> LoadedModel | None:
        alias = self.deployment.challenger_alias
        return self.models.get(alias) if alias and self.deployment.strategy != "single" else None


def load_version(tracking_uri: str, model_name: str, alias: str, version: str) -> LoadedModel:
    """Load a registered version and its signature (raises on any failure)."""
    uri = f"models:/{model_name}/{version}"
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    info = mlflow.models.get_model_info(uri)
    model = mlflow.sklearn.load_model(uri)
    signature = info.signature
    if signature is None:
        raise ValueError(f"model version {version} of {model_name!r} has no signature: serving needs its columns")
    inputs = signature.inputs.inputs
    version_info = MlflowClient(tracking_uri, registry_uri=tracking_uri).get_model_version(model_name, version)
    return LoadedModel(
        alias=alias,
        version=str(version),
        run_id=version_info.run_id,
        columns=[c.name for c in inputs],
        required=[c.name for c in inputs if getattr(c, "required", True)],
        model=model,
    )


class ModelManager:
    """Holds the serving state for one registered model and keeps it in step with the registry."""

    def __init__(
        self,
        tracking_uri: str,
        model_name: str,
        poll_seconds: float = 2.0,
        on_load_failure: Callable[[str, str], None] | None = None,
        loader: Callable[[str, str, str, str], LoadedModel] = load_version,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.poll_seconds = poll_seconds
        self.state = ServingState(Deployment(), {}, {"champion": "not loaded yet"})
        self._on_load_failure = on_load_failure
        self._loader = loader
        self.on_refresh: Callable[[ServingState], None] | None = None
        """Called with the new state after every refresh, under its lock (e.g. to publish metrics)."""
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # A version that failed to load is retried only every RETRY_SECONDS (or on /admin/reload),
        # not on every poll: alias -> (version, reason, when).
        self._failed: dict[str, tuple[str, str, float]] = {}

    def refresh(self) -> ServingState:
        """Read aliases and the deployment record; load what changed; swap the state in one step."""
        with self._refresh_lock:
            client = MlflowClient(self.tracking_uri, registry_uri=self.tracking_uri)
            current = self.state
            try:
                registered = client.get_registered_model(self.model_name)
            except MlflowException as error:
                self.state = ServingState(current.deployment, current.models,
                                          {**current.errors, "registry": str(error).splitlines()[0]},
                                          datetime.now(UTC), current.previous_champion)
                return self.state
            try:
                deployment = Deployment.from_tags(dict(registered.tags))
            except (ValueError, TypeError) as error:
                # A malformed record must not stop serving: keep the last good one.
                deployment = current.deployment
                errors_extra = {"deployment": str(error)}
            else:
                errors_extra = {}
            aliases = dict(registered.aliases)
            models: dict[str, LoadedModel] = {}
            errors: dict[str, str] = dict(errors_extra)
            for alias in deployment.aliases:
                # The challenger is the version pinned by the deployment, wherever its alias has moved.
                pinned = deployment.challenger_version if alias == deployment.challenger_alias else None
                version = pinned or aliases.get(alias)
                held = current.models.get(alias)
                if version is None:
                    errors[alias] = f"alias {alias!r} of {self.model_name!r} points at no version"
                    if held is not None and alias == deployment.champion_alias:
                        models[alias] = held  # keep answering rather than fail every request
                    continue
                if held is not None and held.version == str(version):
                    models[alias] = held
                    continue
                failed_version, _reason, failed_at = self._failed.get(alias, (None, None, 0.0))
                if failed_version == str(version) and time.monotonic() - failed_at < RETRY_SECONDS:
                    errors[alias] = _reason
                    if held is not None:
                        models[alias] = held
                    continue
                try:
                    models[alias] = self._loader(self.tracking_uri, self.model_name, alias, str(version))
                    self._failed.pop(alias, None)
                    log.info("loaded %s version %s as %s", self.model_name, version, alias)
                except Exception as error:  # any failure to load must leave the old model serving
                    reason = f"version {version} failed to load: {type(error).__name__}: {error}".splitlines()[0]
                    self._failed[alias] = (str(version), reason, time.monotonic())
                    errors[alias] = reason
                    if self._on_load_failure is not None:
                        self._on_load_failure(alias, str(version))
                    log.error("alias %s: %s", alias, reason)
                    if held is not None:
                        models[alias] = held
            previous = current.previous_champion
            old, new = current.champion, models.get(deployment.champion_alias)
            if old is not None and new is not None and new.version != old.version:
                previous = old
            elif previous is None and new is not None:
                previous = self._registry_fallback(aliases, new.version)
            self.state = ServingState(deployment, models, errors, datetime.now(UTC), previous)
            if self.on_refresh is not None:  # under the lock: two refreshes never publish out of order
                self.on_refresh(self.state)
            return self.state

    def _registry_fallback(self, aliases: dict, champion_version: str) -> LoadedModel | None:
        """The registry's ``previous_champion``, loaded once: the fallback of a freshly started
        process, which has not seen a swap of its own."""
        version = aliases.get(PREVIOUS_CHAMPION)
        if version is None or str(version) == champion_version:
            return None
        if self._failed.get(PREVIOUS_CHAMPION, (None, None, 0.0))[0] == str(version):
            return None
        try:
            return self._loader(self.tracking_uri, self.model_name, PREVIOUS_CHAMPION, str(version))
        except Exception as error:  # no fallback is a weaker service, not a broken one
            self._failed[PREVIOUS_CHAMPION] = (str(version), f"{type(error).__name__}: {error}", time.monotonic())
            log.warning("previous champion version %s could not be loaded as a fallback: %s", version, error)
            return None

    def retry_failed(self) -> None:
        """Forget versions that failed to load, so the next refresh tries them again."""
        self._failed.clear()

    def start(self) -> None:
        """Poll the registry in a daemon thread until :meth:`stop`."""
        def loop() -> None:
            while not self._stop.wait(self.poll_seconds):
                try:
                    self.refresh()
                except Exception:  # the poller must survive a registry hiccup; the next poll retries
                    log.exception("registry poll failed")

        self._thread = threading.Thread(target=loop, name="registry-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
