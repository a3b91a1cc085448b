"""The MLflow tracking server and model registry, as one Dagster resource.

Own resource rather than dagster-mlflow's, which leaves runs RUNNING when used from assets: here
every run is ended, FAILED when the body raised. Registry aliases only (``champion``,
``challenger``, ``previous_champion``), never the deprecated stages.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from dagster import ConfigurableResource
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import Field

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous_champion"


class MLflowRegistry(ConfigurableResource):
    """Tracking and registry; nothing is configured until a method is called."""

    tracking_uri: str = Field(description="MLflow tracking URI, e.g. sqlite:///data/mlflow.db.")
    artifact_location: str = Field(description="Folder for run artifacts (created on first run).")
    experiment_name: str = Field(default="flight-delay", description="Experiment the runs go to.")
    model_name: str = Field(default="flight_delay_15", description="Registered model name.")

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def _experiment_id(self, name: str | None = None) -> str:
        client = self.client()
        name = name or self.experiment_name
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        folder = Path(self.artifact_location) / name
        folder.mkdir(parents=True, exist_ok=True)
        return client.create_experiment(name, artifact_location=folder.resolve().as_uri())

    @contextmanager
    def start_run(self, run_name: str, tags: dict[str, str] | None = None,
                  experiment_name: str | None = None) -> Iterator[mlflow.ActiveRun]:
        """An active MLflow run that is always ended (FINISHED, or FAILED if the body raised)."""
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        run = mlflow.start_run(experiment_id=self._experiment_id(experiment_name), run_name=run_name,
                               tags=tags or {})
        try:
            yield run
        except BaseException:
            mlflow.end_run(status="FAILED")
            raise
        mlflow.end_run(status="FINISHED")

    def run_url(self, run_id: str) -> str:
        """Where the run is shown by ``mlflow ui`` (README: ``make mlflow-ui``)."""
        experiment = self.client().get_run(run_id).info.experiment_id
        return f"http://127.0.0.1:5000/#/experiments/{experiment}/runs/{run_id}"

    def download_text(self, run_id: str, artifact: str) -> str:
        """The text of a run's artifact (e.g. ``reference_profile.json``)."""
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            return Path(self.client().download_artifacts(run_id, artifact, folder)).read_text()

    def version_by_alias(self, alias: str) -> ModelVersion | None:
        try:
            return self.client().get_model_version_by_alias(self.model_name, alias)
        except MlflowException:
            return None

    def version_number(self, alias: str) -> str | None:
        """The version an alias points at, as a string ("3"), or None."""
        found = self.version_by_alias(alias)
        return str(found.version) if found is not None else None

    def versions(self) -> list[ModelVersion]:
        try:
            return list(self.client().search_model_versions(f"name='{self.model_name}'"))
        except MlflowException:
            return []

    def find_version(self, tag: str, value: str) -> ModelVersion | None:
        """The newest version whose tag ``tag`` equals ``value``."""
        matches = [v for v in self.versions() if v.tags.get(tag) == value]
        return max(matches, key=lambda v: int(v.version)) if matches else None

    def set_alias(self, alias: str, version: str) -> None:
        self.client().set_registered_model_alias(self.model_name, alias, str(version))

    def restore_aliases(self, aliases: dict[str, str | None]) -> None:
        """Point each alias back at its version, or remove it where it pointed at none."""
        client = self.client()
        for alias, version in aliases.items():
            if version is None:
                client.delete_registered_model_alias(self.model_name, alias)
            else:
                client.set_registered_model_alias(self.model_name, alias, str(version))

    def load_sklearn(self, version: str):
        """The scikit-learn pipeline of a version (for scoring probabilities)."""
        mlflow.set_registry_uri(self.tracking_uri)
        mlflow.set_tracking_uri(self.tracking_uri)
        return mlflow.sklearn.load_model(f"models:/{self.model_name}/{version}")
