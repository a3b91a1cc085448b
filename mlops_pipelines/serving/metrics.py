"""Prometheus metrics of one serving app (its own registry, so two apps in a process never mix)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Milliseconds matter here: the target is p99 <= 10 ms.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("mlops_requests", "HTTP /predict requests by outcome", ["status"], registry=r)
        self.latency = Histogram("mlops_request_latency_seconds", "Time to answer /predict", buckets=LATENCY_BUCKETS,
                                 registry=r)
        self.predictions = Counter("mlops_predictions", "Items answered, by arm and model version",
                                   ["arm", "model_version"], registry=r)
        self.challenger_errors = Counter("mlops_challenger_errors", "Challenger failures (the champion answered)",
                                         ["model_version"], registry=r)
        self.champion_errors = Counter("mlops_champion_errors", "Champion failures (the previous champion answered)",
                                       ["model_version"], registry=r)
        self.shadow_predictions = Counter("mlops_shadow_predictions", "Items scored in shadow", registry=r)
        self.load_failures = Counter("mlops_model_load_failures", "Model versions that failed to load",
                                     ["alias", "model_version"], registry=r)
        self.model_info = Gauge("mlops_model_loaded", "1 for each alias and the version serving it",
                                ["alias", "model_version"], registry=r)
        self.ready = Gauge("mlops_ready", "1 when a champion is loaded and serving", registry=r)
        self.log_rows = Counter("mlops_prediction_log_rows", "Rows written to the prediction log", registry=r)
        self.log_dropped = Counter("mlops_prediction_log_dropped", "Rows dropped (log queue full)", registry=r)
