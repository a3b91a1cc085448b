"""Training assets: ``training_dataset`` -> ``trained_model`` -> ``evaluated_model`` -> ``promoted_model``."""


import hashlib
import json
from dataclasses import asdict

import mlflow
import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, Config, Failure, MetadataValue, Output, asset
from mlflow.models import ModelSignature, infer_signature
from mlflow.types.schema import ColSpec, Schema
from pydantic import Field
from sklearn.inspection import permutation_importance

from mlops_pipelines.features.resource import FeatureStoreResource, store_warnings_logged
from mlops_pipelines.features.store import built_versions, views_not_built_as_declared
from mlops_pipelines.governance.ledger import PromotionRecord, append_promotion, record_gates
from mlops_pipelines.ingest.lake import RawLake
from mlops_pipelines.monitoring.profile import build_profile
from mlops_pipelines.training.dataset import (
    FEATURE_REFS,
    LABEL,
    SCHEDULE_FEATURES,
    build_training_dataset,
    feature_columns,
)
from mlops_pipelines.training.gates import GatePolicy, evaluate_gates
from mlops_pipelines.training.model import ModelParams, TimeSplit, build_pipeline, fold_auc, score
from mlops_pipelines.training.registry import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS_CHAMPION,
    MLflowRegistry,
)
from mlops_pipelines.validation.contracts import CONTRACTS
from mlops_pipelines.validation.store import refuse_failed_validations
from mlops_pipelines.versioning import code_version, git_commit
from mlops_pipelines.warehouse import WAREHOUSE_POOL, DuckDBWarehouse

SKOPS_TRUSTED_TYPES = [
    "functools.partial",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.utils.validation.check_array",
]


def _feature_view_assets() -> list[str]:
    return sorted({ref.split(":", 1)[0] for ref in FEATURE_REFS})


class TrainingDatasetConfig(Config):
    label_policy: str = Field(
        default="exclude",
        description="Cancelled and diverted flights have no arrival delay: 'exclude' leaves them "
        "out (counted in the metadata), 'as_delayed' labels them delayed.",
    )


@asset(
    group_name="training",
    deps=["int_flight_outcomes", "stg_flights", *_feature_view_assets()],
    pool=WAREHOUSE_POOL,
    kinds={"duckdb", "parquet"},
    description="Every labelled flight with its features as of its scheduled departure (UTC), "
    "joined point-in-time; snapshotted immutably under data/lake/snapshots.",
)
def training_dataset(
    context: AssetExecutionContext,
    config: TrainingDatasetConfig,
    warehouse: DuckDBWarehouse,
    raw_lake: RawLake,
    feature_store: FeatureStoreResource,
) -> Output[dict]:
    store = feature_store.store()
    names = _feature_view_assets()
    with warehouse.connect() as connection, store_warnings_logged(context.log):
        # The training job runs on its own schedule: it must not train on a table whose latest
        # delivery failed its blocking check, even if the SQL models were not rebuilt since.
        refuse_failed_validations(connection, list(CONTRACTS), "training_dataset")
        # Nor on a view declared otherwise than its table was built (an edit not built yet, or
        # whose build failed): the model could be traced to neither declaration.
        edited = views_not_built_as_declared(connection, [store.views[name] for name in names])
        if edited:
            raise Failure(
                description="training_dataset: feature views declared otherwise than built: "
                + "; ".join(f"{view.name} (declared {view.version}, built {built})" for view, built in edited)
                + ". Materialize them first (the build_features job), then train.",
                metadata={"views_not_built_as_declared": MetadataValue.json(
                    {view.name: {"declared": view.version, "built": built} for view, built in edited})})
        # The versions the tables were built with: what the model's features come from.
        built = built_versions(connection, names)
        used_views = {name: built.get(name, store.views[name].version) for name in names}
        dataset, counts = build_training_dataset(connection, store, config.label_policy)
        connection.execute("create schema if not exists training")
        connection.execute("create or replace table training.training_dataset as select * from dataset")
    snapshot = raw_lake.snapshot("training_dataset", dataset)
    reference = {
        "path": str(snapshot.path),
        "sha256": snapshot.sha256,
        "rows": counts.rows,
        "feature_refs": list(FEATURE_REFS),
        "feature_view_versions": used_views,
        "label_policy": config.label_policy,
    }
    return Output(
        reference,
        metadata={
            "dagster/row_count": MetadataValue.int(counts.rows),
            "flights": MetadataValue.int(counts.flights),
            "cancelled_flights": MetadataValue.int(counts.cancelled),
            "diverted_flights": MetadataValue.int(counts.diverted),
            "excluded_unlabelled": MetadataValue.int(counts.excluded_unlabelled),
            "positive_rate": MetadataValue.float(round(counts.positive_rate, 6)),
            "label_policy": MetadataValue.text(config.label_policy),
            "data_sha256": MetadataValue.text(snapshot.sha256),
            "snapshot": MetadataValue.path(str(snapshot.path)),
            "feature_view_versions": MetadataValue.json(used_views),
            "null_share_by_feature": MetadataValue.md(
                "| feature | null share |\n|---|---|\n"
                + "\n".join(
                    f"| {c} | {dataset[c].null_count / max(dataset.num_rows, 1):.3f} |"
                    for c in feature_columns()
                )
            ),
        },
    )


class TrainingConfig(Config):
    train_start: str = Field(default="2013-01", description="First training month (YYYY-MM, local).")
    train_end: str = Field(default="2013-10", description="First month after training = holdout start.")
    holdout_end: str = Field(default="2014-01", description="First month after the holdout.")
    max_iter: int = Field(default=300, description="Boosting iterations (trees).")
    learning_rate: float = Field(default=0.08, description="Shrinkage per tree.")
    max_leaf_nodes: int = Field(default=31, description="Leaves per tree.")
    l2_regularization: float = Field(default=1.0, description="L2 penalty on leaf values.")
    seed: int = Field(default=42, description="Seed of every random choice in training.")
    decision_threshold: float = Field(
        default=0.35,
        description="Probability at or above which a flight is predicted delayed (precision/recall "
        "are reported at it); the base rate is about 0.24.",
    )


def _months_trained_on(train_window: str, split: TimeSplit) -> list[str]:
    """The months of ``split``'s holdout inside a model's ``train_window`` tag ("2013-01..2013-09",
    inclusive); none when the tag is missing or unreadable (models registered before it)."""
    first, sep, last = train_window.partition("..")
    try:
        trained = set(pd.period_range(first, last, freq="M")) if sep else set()
    except ValueError:
        return []
    holdout = pd.period_range(split.train_end, split.month_before(split.holdout_end), freq="M")
    return [str(month) for month in holdout if month in trained]


def _split(config: TrainingConfig) -> TimeSplit:
    return TimeSplit(config.train_start, config.train_end, config.holdout_end)


def _params(config: TrainingConfig) -> ModelParams:
    return ModelParams(config.max_iter, config.learning_rate, config.max_leaf_nodes,
                       config.l2_regularization, config.seed)


def _signature(columns: dict[str, str], example_output: np.ndarray) -> ModelSignature:
    """Schedule columns are required; feature-view columns are optional (a view may have no row
    within its TTL, and the model reads a missing value as missing)."""
    schedule = set(SCHEDULE_FEATURES)
    inputs = Schema([
        ColSpec("string" if kind == "str" else "double", name, required=name in schedule)
        for name, kind in columns.items()
    ])
    return ModelSignature(inputs=inputs, outputs=infer_signature(None, example_output).outputs)


def _fingerprint(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


@asset(
    group_name="training",
    kinds={"mlflow", "scikit-learn"},
    description="A seeded gradient-boosted model trained on the training window, logged to MLflow "
    "and registered as a new version with alias 'challenger' (or the identical version reused).",
)
def trained_model(
    context: AssetExecutionContext,
    config: TrainingConfig,
    training_dataset: dict,
    mlflow_registry: MLflowRegistry,
) -> Output[dict]:
    frame = pd.read_parquet(training_dataset["path"])
    split = _split(config)
    params = _params(config)
    columns = feature_columns(tuple(training_dataset["feature_refs"]))
    train, _ = split.split(frame)
    if train[LABEL].nunique() < 2:
        raise ValueError(f"training window {config.train_start}..{config.train_end} has {len(train)} "
                         "rows and fewer than two classes: nothing to learn")
    lineage = {
        "data_sha256": training_dataset["sha256"],
        "code_version": code_version(),
        "params": asdict(params),
        "columns": columns,
        "split": asdict(split),
        "threshold": config.decision_threshold,
        "feature_view_versions": training_dataset["feature_view_versions"],
        "label_policy": training_dataset["label_policy"],
    }
    fingerprint = _fingerprint(lineage)
    existing = mlflow_registry.find_version("fingerprint", fingerprint)
    if existing is not None:
        # Same data, code, features and parameters: the model would be the same; do not register a twin.
        mlflow_registry.set_alias(CHALLENGER, existing.version)
        context.log.info(f"identical model already registered as version {existing.version}; reused")
        return Output(
            {**lineage, "version": str(existing.version), "mlflow_run_id": existing.run_id,
             "fingerprint": fingerprint, "reused": True},
            metadata={
                "model_version": MetadataValue.int(int(existing.version)),
                "reused_existing_version": MetadataValue.bool(True),
                "fingerprint": MetadataValue.text(fingerprint),
                "mlflow_run": MetadataValue.url(mlflow_registry.run_url(existing.run_id)),
            },
        )

    inputs, labels = train[list(columns)], train[LABEL]
    pipeline = build_pipeline(columns, params)
    pipeline.fit(inputs, labels)
    train_probabilities = pipeline.predict_proba(inputs)[:, 1]
    train_scores = score(labels, train_probabilities, config.decision_threshold)
    # What monitoring compares new months against, kept with the model: features and predictions.
    profile = build_profile(
        inputs.assign(prediction=train_probabilities),
        categorical=[c for c, kind in columns.items() if kind == "str"],
    )

    # Importance on the last training month (never the holdout), by permutation: model-agnostic.
    # (The 30 days before the last training row when the window's last month has no rows loaded.)
    month = pd.Timedelta(days=30)
    latest = train["sched_dep_utc"].max()
    last_month = split.boundary(split.month_before(config.train_end))
    tail_end = split.boundary(config.train_end) if latest >= last_month else latest
    tail = train[train["sched_dep_utc"] >= tail_end - month]
    tail = tail.sample(n=min(len(tail), 20000), random_state=params.seed)
    importance = permutation_importance(
        pipeline, tail[list(columns)], tail[LABEL], scoring="roc_auc", n_repeats=2,
        random_state=params.seed, n_jobs=1,
    )
    importances = sorted(zip(columns, importance.importances_mean, strict=True), key=lambda kv: -kv[1])

    run_name = f"trained_model-{context.run.run_id}"
    tags = {"dagster_run_id": context.run.run_id, "code_version": code_version(), "git_commit": git_commit(),
            "data_sha256": training_dataset["sha256"], "fingerprint": fingerprint}
    with mlflow_registry.start_run(run_name, tags) as run:
        mlflow.log_params({**asdict(params), **{f"split.{k}": v for k, v in asdict(split).items()},
                           "decision_threshold": config.decision_threshold,
                           "label_policy": training_dataset["label_policy"],
                           "train_rows": len(train), "feature_count": len(columns)})
        mlflow.log_metrics({f"train_{k}": v for k, v in train_scores.items()})
        mlflow.log_dict({"columns": columns, "feature_refs": training_dataset["feature_refs"],
                         "feature_view_versions": training_dataset["feature_view_versions"]},
                        "features.json")
        mlflow.log_dict({name: float(value) for name, value in importances}, "permutation_importance.json")
        mlflow.log_text(profile.to_json(), "reference_profile.json")
        example = inputs.head(5)
        signature = _signature(columns, pipeline.predict_proba(example))
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            signature=signature,
            input_example=example,
            registered_model_name=mlflow_registry.model_name,
            pyfunc_predict_fn="predict_proba",
            # skops (no arbitrary code on load); these are the types the tree pipeline needs.
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
        )
        version = str(info.registered_model_version)
        run_id = run.info.run_id
    client = mlflow_registry.client()
    for key, value in {**tags, "feature_columns": json.dumps(columns),
                       "feature_view_versions": json.dumps(training_dataset["feature_view_versions"]),
                       "train_window": split.train_window,
                       "holdout_window": split.holdout_window}.items():
        client.set_model_version_tag(mlflow_registry.model_name, version, key, value)
    mlflow_registry.set_alias(CHALLENGER, version)
    return Output(
        {**lineage, "version": version, "mlflow_run_id": run_id, "fingerprint": fingerprint, "reused": False},
        metadata={
            "model_version": MetadataValue.int(int(version)),
            "reused_existing_version": MetadataValue.bool(False),
            "train_rows": MetadataValue.int(len(train)),
            "train_roc_auc": MetadataValue.float(round(train_scores["roc_auc"], 6)),
            "fingerprint": MetadataValue.text(fingerprint),
            "data_sha256": MetadataValue.text(training_dataset["sha256"]),
            "code_version": MetadataValue.text(code_version()),
            "mlflow_run": MetadataValue.url(mlflow_registry.run_url(run_id)),
            "feature_importance": MetadataValue.md(
                "| feature | permutation importance (ROC AUC drop) |\n|---|---|\n"
                + "\n".join(f"| {n} | {v:.4f} |" for n, v in importances)
            ),
        },
    )


class EvaluationConfig(Config):
    roc_auc_floor: float = Field(default=0.70, description="Minimum holdout ROC AUC.")
    max_regression: float = Field(default=0.005, description="Largest ROC AUC drop vs the champion.")
    fold_auc_floor: float = Field(default=0.68, description="Minimum ROC AUC of every holdout month.")
    max_fold_spread: float = Field(default=0.06, description="Largest best-minus-worst month ROC AUC.")


def _gate_table(decisions) -> str:
    rows = "\n".join(
        f"| {d.gate} | {'PASS' if d.passed else 'FAIL'} | {d.reason} |" for d in decisions
    )
    return f"| gate | decision | reason |\n|---|---|---|\n{rows}"


@asset(
    group_name="training",
    pool=WAREHOUSE_POOL,
    kinds={"mlflow", "scikit-learn"},
    description="The challenger and the current champion scored on the same later holdout; "
    "every promotion gate decided with its reason.",
)
def evaluated_model(
    context: AssetExecutionContext,
    config: EvaluationConfig,
    trained_model: dict,
    training_dataset: dict,
    mlflow_registry: MLflowRegistry,
    warehouse: DuckDBWarehouse,
) -> Output[dict]:
    frame = pd.read_parquet(training_dataset["path"])
    split = TimeSplit(**trained_model["split"])
    _, holdout = split.split(frame)
    if holdout[LABEL].nunique() < 2:
        raise ValueError(f"holdout {split.train_end}..{split.holdout_end} has {len(holdout)} rows "
                         "and fewer than two classes: cannot evaluate")
    folds = split.folds(holdout)
    threshold = trained_model["threshold"]
    challenger_version = trained_model["version"]
    challenger = mlflow_registry.load_sklearn(challenger_version)
    p_challenger = challenger.predict_proba(holdout[list(trained_model["columns"])])[:, 1]
    challenger_scores = score(holdout[LABEL], p_challenger, threshold)
    challenger_folds = fold_auc(holdout[LABEL], p_challenger, folds)

    champion = mlflow_registry.version_by_alias(CHAMPION)
    champion_version = str(champion.version) if champion else None
    champion_scores, champion_note = None, "no current champion"
    if champion is not None and champion_version == challenger_version:
        champion_scores, champion_note = challenger_scores, "the challenger is the champion"
    elif champion is not None:
        columns = json.loads(champion.tags.get("feature_columns", "{}"))
        missing = [c for c in columns if c not in holdout.columns]
        seen = _months_trained_on(champion.tags.get("train_window", ""), split)
        if seen:
            # Scored on rows it learnt from, the champion would look better than it is.
            champion_note = (f"champion v{champion.version} was trained on {', '.join(seen)} of this holdout "
                             f"({split.holdout_window}): no fair comparison on the same rows")
        elif not columns or missing:
            champion_note = (f"champion v{champion.version} cannot be scored on this holdout: "
                             f"missing {missing or 'its column list'}")
        else:
            model = mlflow_registry.load_sklearn(champion.version)
            champion_scores = score(holdout[LABEL], model.predict_proba(holdout[list(columns)])[:, 1], threshold)
            champion_note = f"champion v{champion.version} scored on the same {len(holdout)} rows"
    policy = GatePolicy(config.roc_auc_floor, config.max_regression, config.fold_auc_floor, config.max_fold_spread)
    decisions = evaluate_gates(
        challenger_scores["roc_auc"], challenger_folds,
        champion_scores["roc_auc"] if champion_scores else None, policy,
        champion_unscorable=champion_note if champion is not None and champion_scores is None else None,
    )
    all_passed = all(d.passed for d in decisions)
    with warehouse.connect() as connection:
        record_gates(connection, context.run.run_id, mlflow_registry.model_name, challenger_version,
                     champion_version, decisions)
    client = mlflow_registry.client()
    run_id = trained_model["mlflow_run_id"]
    for key, value in challenger_scores.items():
        client.log_metric(run_id, f"holdout_{key}", value)
    for fold, value in challenger_folds.items():
        client.log_metric(run_id, f"holdout_roc_auc_{fold.replace('-', '_')}", value)
    for d in decisions:
        client.set_tag(run_id, f"gate.{d.gate}", f"{'PASS' if d.passed else 'FAIL'}: {d.reason}")
    context.log.info(f"challenger v{challenger_version}: ROC AUC {challenger_scores['roc_auc']:.4f}; "
                     f"{champion_note}; gates {'all passed' if all_passed else 'failed'}")
    metadata = {f"holdout/{k}": MetadataValue.float(round(v, 6)) for k, v in challenger_scores.items()}
    metadata.update({f"holdout_fold/{k}": MetadataValue.float(round(v, 6)) for k, v in challenger_folds.items()})
    if champion_scores:
        metadata.update({f"champion/{k}": MetadataValue.float(round(v, 6)) for k, v in champion_scores.items()})
    metadata.update({
        "challenger_version": MetadataValue.int(int(challenger_version)),
        "champion_version": MetadataValue.text(champion_version or "none"),
        "holdout_window": MetadataValue.text(split.holdout_window),
        "gates_passed": MetadataValue.bool(all_passed),
        "gates": MetadataValue.md(_gate_table(decisions)),
        "mlflow_run": MetadataValue.url(mlflow_registry.run_url(run_id)),
    })
    return Output(
        {
            "challenger_version": challenger_version,
            "champion_version": champion_version,
            "all_passed": all_passed,
            "gates": [d.to_dict() for d in decisions],
            "challenger_metrics": challenger_scores,
            "champion_metrics": champion_scores,
            "fold_roc_auc": challenger_folds,
        },
        metadata=metadata,
    )


@asset(
    group_name="training",
    pool=WAREHOUSE_POOL,
    kinds={"mlflow"},
    description="Moves alias 'champion' to the challenger only when every gate passed; the "
    "previous champion keeps alias 'previous_champion'; every decision goes to the ledger.",
)
def promoted_model(
    context: AssetExecutionContext,
    evaluated_model: dict,
    mlflow_registry: MLflowRegistry,
    warehouse: DuckDBWarehouse,
) -> Output[dict]:
    challenger = evaluated_model["challenger_version"]
    evaluated_against = evaluated_model["champion_version"]
    failed = [g for g in evaluated_model["gates"] if not g["passed"]]
    champion_metrics = evaluated_model["champion_metrics"] or {}
    # The warehouse is opened (and its write lock taken) before any alias moves, and a failed
    # ledger write puts the aliases back: a failed run never leaves a moved champion behind.
    with warehouse.connect() as connection:
        current_version = mlflow_registry.version_number(CHAMPION)
        previous_version = mlflow_registry.version_number(PREVIOUS_CHAMPION)
        if current_version != evaluated_against:
            decision, after = "refused", current_version
            reason = (f"the champion moved from v{evaluated_against} to v{current_version} after the "
                      "evaluation: evaluate again")
        elif current_version == challenger:
            decision, after, reason = "unchanged", current_version, f"v{challenger} is already the champion"
        elif failed:
            decision, after = "refused", current_version
            reason = "; ".join(f"{g['gate']}: {g['reason']}" for g in failed)
        else:
            decision, after = "promoted", challenger
            reason = "every gate passed: " + "; ".join(g["reason"] for g in evaluated_model["gates"])
        record = PromotionRecord(
            dagster_run_id=context.run.run_id,
            model_name=mlflow_registry.model_name,
            challenger_version=challenger,
            champion_before=current_version,
            champion_after=after,
            decision=decision,
            reason=reason,
            challenger_roc_auc=evaluated_model["challenger_metrics"]["roc_auc"],
            champion_roc_auc=champion_metrics.get("roc_auc"),
        )
        mlflow_registry.client().set_model_version_tag(
            mlflow_registry.model_name, challenger, "promotion_decision", f"{decision}: {reason}"[:5000]
        )
        if decision == "promoted":
            if current_version is not None:
                mlflow_registry.set_alias(PREVIOUS_CHAMPION, current_version)
            mlflow_registry.set_alias(CHAMPION, challenger)
        try:
            append_promotion(connection, record)
        except Exception:
            if decision == "promoted":
                mlflow_registry.restore_aliases({CHAMPION: current_version, PREVIOUS_CHAMPION: previous_version})
            raise
    log = context.log.info if decision != "refused" else context.log.warning
    log(f"{decision}: {reason}")
    return Output(
        asdict(record),
        metadata={
            "decision": MetadataValue.text(decision),
            "promoted": MetadataValue.bool(decision == "promoted"),
            "champion_version": MetadataValue.int(int(after)) if after else MetadataValue.text("none"),
            "champion_before": MetadataValue.text(current_version or "none"),
            "challenger_version": MetadataValue.int(int(challenger)),
            "reason": MetadataValue.md(reason),
            "champion_uri": MetadataValue.text(f"models:/{mlflow_registry.model_name}@{CHAMPION}"),
        },
    )


training_assets = [training_dataset, trained_model, evaluated_model, promoted_model]
