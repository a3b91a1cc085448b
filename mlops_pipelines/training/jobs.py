"""The training job, training_dataset to promoted_model, and its schedule."""

from dagster import AssetSelection, ScheduleDefinition, define_asset_job

training_job = define_asset_job(
    "training",
    selection=AssetSelection.assets(
        "training_dataset", "trained_model", "evaluated_model", "promoted_model"
    ),
    description="Build the point-in-time training set, train a challenger, evaluate it against "
    "the champion on the holdout, and promote it only if every gate passes.",
)

training_schedule = ScheduleDefinition(
    name="monthly_training",
    job=training_job,
    cron_schedule="0 6 2 * *",
    execution_timezone="America/New_York",
    description="Retrain after the features are rebuilt, on the 2nd of each month at 06:00.",
)
