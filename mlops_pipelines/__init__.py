"""mlops-pipelines: a local-first MLOps lifecycle on Dagster, on the real 2013 NYC flights data."""

__version__ = "0.1.0"
