"""Run the whole lifecycle through Dagster, as the UI would, and summarise what it decided.

Each stage is a real Dagster run in the instance at ``$DAGSTER_HOME`` (``data/dagster_home``), so
that every run, materialization and check is in the UI afterwards (``make ui``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dagster import DagsterInstance, Definitions

from mlops_pipelines.ingest.sources import FLIGHT_MONTHS
from mlops_pipelines.paths import ProjectPaths

# The runs' full logs are in the UI; the terminal gets warnings and errors only.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
DAGSTER_YAML = Path(__file__).resolve().parents[1] / "config" / "dagster.yaml"


@dataclass
class StageResult:
    name: str
    success: bool
    run_id: str
    errors: list[str] = field(default_factory=list)


@dataclass
class LifecycleResult:
    stages: list[StageResult]

    @property
    def success(self) -> bool:
        return all(s.success for s in self.stages)

    @property
    def failed(self) -> StageResult | None:
        return next((s for s in self.stages if not s.success), None)


def prepare_dagster_home(paths: ProjectPaths) -> Path:
    """Create ``data/dagster_home`` with the project's dagster.yaml (kept if the user edited it)."""
    home = paths.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if not target.exists() and DAGSTER_YAML.exists():
        shutil.copyfile(DAGSTER_YAML, target)
    return home


def _errors(result) -> list[str]:
    messages = []
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            error = event.step_failure_data.error
            # The user's own exception is at the bottom of Dagster's wrappers.
            while error.cause is not None:
                error = error.cause
            text = error.message.strip()
            if error.cls_name == "Failure":  # (its class path, dagster._core..., says nothing more)
                text = text.split(": ", 1)[-1]
            messages.append(f"{event.step_key}: {text}")
    return messages


def training_window(months: Sequence[str]) -> dict:
    """The training job's run config for a lifecycle over ``months`` only (YYYY-MM, in order):
    train on all but the last, hold out the last. (The default window, training through 2013-09
    and holding out the last quarter, finds no rows in other months.)"""
    from mlops_pipelines.training.model import TimeSplit  # (here: it brings scikit-learn, ~0.7 s to import)

    return {"ops": {"trained_model": {"config": {"train_start": months[0], "train_end": months[-1],
                                                 "holdout_end": TimeSplit.month_after(months[-1])}}}}


def run_lifecycle(
    paths: ProjectPaths,
    months: Sequence[str] = FLIGHT_MONTHS,
    echo: Callable[[str], None] = print,
    defs: Definitions | None = None,
    instance: DagsterInstance | None = None,
    run_config: dict[str, dict] | None = None,
) -> LifecycleResult:
    """Ingest reference tables and each month, build features, then train, evaluate and promote.

    Stops at the first failed stage (a failed blocking check fails its run): nothing after it runs.
    ``run_config`` maps a job name to extra run config (e.g. the training window of ``training``).
    """
    if defs is None:
        from mlops_pipelines.definitions import build_definitions

        defs = build_definitions(paths)
    if instance is None:
        os.environ["DAGSTER_HOME"] = str(prepare_dagster_home(paths))
        instance = DagsterInstance.get()
    stages: list[StageResult] = []

    def run(job_name: str, label: str, partition_key: str | None = None) -> bool:
        job = defs.resolve_job_def(job_name)
        config = {**QUIET, **(run_config or {}).get(job_name, {})}
        result = job.execute_in_process(
            instance=instance, partition_key=partition_key, raise_on_error=False, run_config=config
        )
        stage = StageResult(label, result.success, result.run_id, [] if result.success else _errors(result))
        stages.append(stage)
        echo(f"  {'ok  ' if stage.success else 'FAIL'} {label:<28} run {result.run_id[:8]}")
        for message in stage.errors:
            echo(f"       {message}")
        return stage.success

    echo("ingest and validate")
    if not run("ingest_reference", "reference tables"):
        return LifecycleResult(stages)
    for month in months:
        if not run("ingest_flights", f"flights {month}", partition_key=month):
            return LifecycleResult(stages)
    echo("features")
    if not run("build_features", "SQL models and feature views"):
        return LifecycleResult(stages)
    echo("training")
    run("training", "train, evaluate, promote")
    return LifecycleResult(stages)
