"""The HTTP app: ``POST /predict``, ``GET /health``, ``GET /ready``, ``GET /metrics`` and token-guarded
admin endpoints (``/admin/reload``, ``/admin/deploy``, ``/admin/rollback``).

A request is answered from one snapshot of the serving state (see ``models.py``): which arm answers
each item follows the deployment record; a challenger that fails falls back to the champion for
that item, so the caller still gets an answer and the failure is logged and counted. The answer is
logged off the request path; shadow scoring runs after the response is sent.
"""

from __future__ import annotations

import gc
import hmac
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from mlops_pipelines.features.sql_project import SqlProject
from mlops_pipelines.paths import ProjectPaths
from mlops_pipelines.serving.control import DeploymentControl
from mlops_pipelines.serving.deployment import challenger_answers, shadow_scores
from mlops_pipelines.serving.flight_features import OnlineFeatureReader
from mlops_pipelines.serving.metrics import ServingMetrics
from mlops_pipelines.serving.models import ModelManager, ServingState
from mlops_pipelines.serving.prediction_log import PredictionLogWriter
from mlops_pipelines.serving.schema import PredictRequest

log = logging.getLogger(__name__)

ADMIN_TOKEN_ENV = "MLOPS_ADMIN_TOKEN"


@dataclass
class ServingSettings:
    """Where the app reads models and features and writes its log."""

    tracking_uri: str
    online_store_path: Path
    prediction_log_dir: Path
    deployment_outbox: Path
    model_name: str = "flight_delay_15"
    poll_seconds: float = 2.0
    """How often the registry is read for alias and deployment changes."""
    max_body_bytes: int = 1_000_000
    admin_token: str | None = field(default=None, repr=False)
    """Admin endpoints answer 403 without it; unset disables them."""

    @classmethod
    def from_paths(cls, paths: ProjectPaths, **overrides: Any) -> ServingSettings:
        values: dict[str, Any] = {
            "tracking_uri": os.environ.get("MLFLOW_TRACKING_URI") or paths.mlflow_tracking_uri,
            "online_store_path": paths.online_store_path,
            "prediction_log_dir": paths.prediction_log_dir,
            "deployment_outbox": paths.deployment_outbox,
            "admin_token": os.environ.get(ADMIN_TOKEN_ENV) or None,
        }
        values.update(overrides)
        return cls(**values)


def _error(status: int, detail: Any) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


Answer = tuple[int, bytes, Callable[[], None] | None]
"""Status, JSON body, and work to run once the response is sent (or None)."""


def _fail(status: int, detail: Any) -> Answer:
    return status, orjson.dumps({"detail": detail}, default=str), None


class PredictFastPath:
    """Pure ASGI wrapper: ``POST /predict`` goes straight to its handler, in front of FastAPI's
    middleware stack, routing and request machinery (about a quarter of the CPU of a one-row
    request, profiled); everything else (other routes, the lifespan) passes through to the app."""

    def __init__(self, app: Any, answer: Callable[[bytes, float], Answer], too_large: Callable[[int], Answer],
                 on_error: Callable[[], None], limit: int) -> None:
        self.app, self.answer, self.too_large, self.on_error, self.limit = app, answer, too_large, on_error, limit

    @property
    def state(self) -> Any:
        """The wrapped app's state (the model manager, the log writer)."""
        return self.app.state

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["path"] != "/predict" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        chunks: list[bytes] = []
        size, more = 0, True
        result: Answer | None = None
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:  # stop reading: the rest is never held in memory
                result = self.too_large(size)
                break
            chunks.append(chunk)
            more = message.get("more_body", False)
        try:
            status, content, after = result or self.answer(b"".join(chunks), started)
        except Exception as error:  # an unexpected failure is still an answer, counted as an error
            log.exception("POST /predict failed")
            self.on_error()
            status, content, after = _fail(500, f"internal error: {type(error).__name__}: {error}")
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]})
        await send({"type": "http.response.body", "body": content})
        if after is not None:
            await run_in_threadpool(after)


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def create_app(settings: ServingSettings) -> PredictFastPath:
    """The serving app (an ASGI app: ``POST /predict`` in front, FastAPI for the other routes and the
    lifespan); models load at startup and follow the registry from then on."""
    metrics = ServingMetrics()
    manager = ModelManager(
        settings.tracking_uri, settings.model_name, settings.poll_seconds,
        on_load_failure=lambda alias, version: metrics.load_failures.labels(alias, version).inc(),
    )
    writer = PredictionLogWriter(settings.prediction_log_dir, on_write=metrics.log_rows.inc,
                                 on_drop=metrics.log_dropped.inc)
    reader = OnlineFeatureReader(settings.online_store_path, SqlProject().feature_views().values())

    def publish(state: ServingState) -> None:
        metrics.model_info.clear()
        for alias, model in state.models.items():
            metrics.model_info.labels(alias, model.version).set(1)
        metrics.ready.set(1 if state.champion is not None else 0)

    manager.on_refresh = publish

    def refresh() -> ServingState:
        return manager.refresh()

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await run_in_threadpool(refresh)
        # Everything loaded so far (libraries, models) lives for the whole process: keeping it out
        # of the garbage collector's full passes removes their pauses from the latency tail.
        gc.freeze()
        manager.start()
        writer.start()
        try:
            yield
        finally:
            manager.stop()
            writer.close()
            gc.unfreeze()

    predict_errors: dict[str, str] = {}
    """Last prediction failure per champion version (shown in /ready)."""
    app = FastAPI(title="mlops-pipelines serving", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.manager = manager
    app.state.writer = writer

    def authorized(request: Request) -> JSONResponse | None:
        if not settings.admin_token:
            return _error(403, f"admin endpoints are disabled: set {ADMIN_TOKEN_ENV} for the server")
        # The auth scheme is case-insensitive (RFC 9110): "Bearer", "bearer" and "BEARER" all go.
        scheme, _, given = request.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), settings.admin_token.encode()):
            return _error(403, "missing or wrong admin token (Authorization: Bearer <token>)")
        return None

    @app.get("/health")
    async def health() -> dict:
        """The process is up (it may not be ready: see /ready)."""
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        state = manager.state
        body = {
            "ready": state.champion is not None,
            "deployment": state.deployment.describe(),
            "deployment_id": state.deployment.deployment_id,
            "models": {a: {"version": m.version, "run_id": m.run_id, "loaded_at": m.loaded_at.isoformat()}
                       for a, m in state.models.items()},
            "errors": state.errors,
            "predict_errors": predict_errors,
            "previous_champion": state.previous_champion.version if state.previous_champion else None,
            "checked_at": state.checked_at.isoformat() if state.checked_at else None,
        }
        return JSONResponse(body, status_code=200 if state.champion is not None else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def too_large(size: int) -> Answer:
        metrics.requests.labels("rejected").inc()
        return _fail(413, f"request body of {size} bytes or more is over the limit of {settings.max_body_bytes}")

    def answer(body: bytes, started: float) -> Answer:
        """``POST /predict``: status, JSON body, and work to run after the response (or None)."""
        if len(body) > settings.max_body_bytes:
            return too_large(len(body))
        try:
            parsed = PredictRequest.model_validate_json(body)
        except ValidationError as error:
            metrics.requests.labels("invalid").inc()
            return _fail(422, [
                {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"], "type": e["type"]}
                for e in error.errors(include_url=False, include_context=False)
            ])
        state = manager.state  # one snapshot for the whole request: a swap never splits it
        champion = state.champion
        if champion is None:
            metrics.requests.labels("unavailable").inc()
            return _fail(503, f"no champion model is loaded: {state.errors}")
        challenger = state.challenger
        request_id = parsed.request_id or uuid.uuid4().hex
        deployment = state.deployment
        try:
            if parsed.flights is not None:
                columns = list(dict.fromkeys([*champion.columns, *(challenger.columns if challenger else [])]))
                rows = reader.rows(parsed.flights, columns)
                keys = [f.flight_id for f in parsed.flights]
                flight_ids: Sequence[str | None] = keys
                departures = [int(f.sched_dep.timestamp() * 1_000_000) for f in parsed.flights]
            else:
                rows = parsed.features
                keys = parsed.keys or [request_id] * len(rows)
                flight_ids = [None] * len(rows)
                departures = [None] * len(rows)
        except (LookupError, FileNotFoundError) as error:
            metrics.requests.labels("unavailable").inc()
            return _fail(503, f"online features unavailable: {error}")

        if parsed.features is not None:
            # A ready vector that lacks a required input, or holds a value of the wrong kind, is
            # the caller's mistake, not the model's (nor the challenger's): checked before either
            # scores.
            try:
                champion.check_rows(rows, strict=True)
            except KeyError as error:
                metrics.requests.labels("invalid").inc()
                return _fail(422, f"the model cannot score this input: {error.args[0]}")
        arms = ["champion"] * len(rows)
        probabilities: list[float | None] = [None] * len(rows)
        challenger_scores: list[float | None] = [None] * len(rows)
        challenger_errors: list[str | None] = [None] * len(rows)
        # Time of the predict call that answered each item: the controller's latency rule compares
        # arms by this, not by the request's latency, which both arms share in a mixed batch.
        model_ms: list[float | None] = [None] * len(rows)
        if challenger is None and deployment.strategy in ("canary", "ab"):
            # The deployment wants a challenger this process could not load: the items it would have
            # answered are logged as its failures, so the controller sees them and rolls it back.
            missing = state.errors.get(deployment.challenger_alias or "", "challenger not loaded")
            for i, key in enumerate(keys):
                if challenger_answers(deployment, key):
                    arms[i], challenger_errors[i] = "champion_fallback", f"not loaded: {missing}"[:300]
        if challenger is not None and deployment.strategy in ("canary", "ab"):
            chosen = [i for i, key in enumerate(keys) if challenger_answers(deployment, key)]
            if chosen:
                try:
                    called = time.perf_counter()
                    scored = challenger.predict([rows[i] for i in chosen])
                    took = (time.perf_counter() - called) * 1000.0
                    for i, p in zip(chosen, scored, strict=True):
                        arms[i], probabilities[i], challenger_scores[i] = "challenger", float(p), float(p)
                        model_ms[i] = took
                except Exception as error:  # a failing challenger must never fail the request
                    reason = f"{type(error).__name__}: {error}".splitlines()[0][:300]
                    metrics.challenger_errors.labels(challenger.version).inc(len(chosen))
                    for i in chosen:
                        arms[i], challenger_errors[i] = "champion_fallback", reason
        rest = [i for i, p in enumerate(probabilities) if p is None]
        answering = {i: champion for i in rest}
        if rest:
            called = time.perf_counter()
            try:
                scored = champion.predict([rows[i] for i in rest])
            except Exception as error:
                # The champion failed on input the server built or checked: the model's fault. The
                # previous champion (kept in memory) answers instead, if there is one.
                fallback = state.previous_champion
                reason = f"{type(error).__name__}: {error}".splitlines()[0][:300]
                metrics.champion_errors.labels(champion.version).inc(len(rest))
                predict_errors[f"{champion.alias} v{champion.version}"] = reason
                try:
                    if fallback is None:
                        raise error
                    scored = fallback.predict([rows[i] for i in rest])
                except Exception:
                    log.exception("champion failed to predict, and no previous champion could answer")
                    metrics.requests.labels("error").inc()
                    return _fail(503, f"the champion (version {champion.version}) failed to predict and no "
                                 f"previous champion could answer: {reason}")
                log.error("champion version %s failed (%s); previous champion %s answered",
                          champion.version, reason, fallback.version)
                for i in rest:
                    arms[i], answering[i] = "previous_champion", fallback
            took = (time.perf_counter() - called) * 1000.0
            for i, p in zip(rest, scored, strict=True):
                probabilities[i], model_ms[i] = float(p), took
        predictions = []
        for i, p in enumerate(probabilities):
            model = challenger if arms[i] == "challenger" else answering[i]
            predictions.append({
                "probability": p, "model_version": model.version, "alias": model.alias, "arm": arms[i],
                "key": keys[i], "flight_id": flight_ids[i],
            })
            if parsed.return_features:
                predictions[-1]["features"] = {c: rows[i].get(c) for c in model.columns}
            metrics.predictions.labels(arms[i], model.version).inc()
        latency = time.perf_counter() - started
        metrics.latency.observe(latency)
        metrics.requests.labels("ok").inc()
        # orjson: ~10x faster than json here, and NaN becomes null (valid JSON) in echoed features.
        content = orjson.dumps({"request_id": request_id, "predictions": predictions,
                                "deployment": deployment.describe()}, default=str)

        def log_rows() -> None:
            """Shadow scores (if any), then the rows to the log queue."""
            if challenger is not None and deployment.strategy == "shadow":
                shadowed = [i for i, key in enumerate(keys) if shadow_scores(deployment, key)]
                if shadowed:
                    try:
                        for i, p in zip(shadowed, challenger.predict([rows[i] for i in shadowed]), strict=True):
                            challenger_scores[i] = float(p)
                        metrics.shadow_predictions.inc(len(shadowed))
                    except Exception as error:  # shadow failures are logged, never returned
                        metrics.challenger_errors.labels(challenger.version).inc(len(shadowed))
                        for i in shadowed:
                            challenger_errors[i] = f"{type(error).__name__}: {error}".splitlines()[0][:300]
            now = time.time_ns() // 1000
            challenger_version = challenger.version if challenger is not None else None
            for i, prediction in enumerate(predictions):
                # In the order of prediction_log.SCHEMA; instants as microseconds since the epoch.
                writer.append((
                    request_id, i, now, keys[i], flight_ids[i], departures[i], deployment.deployment_id,
                    deployment.strategy, prediction["arm"], prediction["alias"], prediction["model_version"],
                    prediction["probability"], latency * 1000.0, model_ms[i], challenger_version,
                    _finite(challenger_scores[i]), challenger_errors[i],
                    {c: rows[i].get(c) for c in champion.columns},
                ))

        if challenger is not None and deployment.strategy == "shadow":
            # Shadow scoring costs a second model: it runs after the response is sent.
            return 200, content, log_rows
        log_rows()  # only queue appends: cheaper inline than a hop to the thread pool
        return 200, content, None


    @app.post("/admin/reload")
    async def reload(request: Request) -> JSONResponse:
        """Read the registry now instead of at the next poll."""
        if (denied := authorized(request)) is not None:
            return denied
        manager.retry_failed()  # an explicit reload tries failed versions again at once
        state = await run_in_threadpool(refresh)
        return JSONResponse({"deployment": state.deployment.describe(),
                             "models": {a: m.version for a, m in state.models.items()}, "errors": state.errors})

    def control() -> DeploymentControl:
        return DeploymentControl(settings.tracking_uri, settings.model_name, settings.deployment_outbox)

    @app.post("/admin/deploy")
    async def deploy(request: Request) -> JSONResponse:
        """Body: ``{"strategy": "canary", "challenger_alias": "challenger", "share": 0.1, "sample_size": 0,
        "ramp": [0.1, 0.5, 1]}`` (all but the strategy optional)."""
        if (denied := authorized(request)) is not None:
            return denied
        try:
            body = await request.json()
            ramp = body.get("ramp")
            event = await run_in_threadpool(
                control().deploy, body["strategy"], body.get("challenger_alias", "challenger"), body.get("share"),
                body.get("sample_size", 0), tuple(ramp) if isinstance(ramp, list) else ramp, "http-admin",
            )
        except (KeyError, ValueError, LookupError, TypeError) as error:
            return _error(422, f"cannot deploy: {error}")
        state = await run_in_threadpool(refresh)
        return JSONResponse({"event": event.event_id, "deployment": state.deployment.describe()})

    @app.post("/admin/rollback")
    async def rollback(request: Request) -> JSONResponse:
        if (denied := authorized(request)) is not None:
            return denied
        try:
            event = await run_in_threadpool(control().rollback, "rolled back through the admin endpoint", "http-admin")
        except (LookupError, ValueError) as error:
            return _error(422, f"cannot roll back: {error}")
        state = await run_in_threadpool(refresh)
        return JSONResponse({"event": event.event_id, "decision": event.decision,
                             "deployment": state.deployment.describe(),
                             "models": {a: m.version for a, m in state.models.items()}})

    # POST /predict is answered in front of the whole FastAPI stack (documented in the README).
    return PredictFastPath(app, answer=answer, too_large=too_large,
                           on_error=metrics.requests.labels("error").inc, limit=settings.max_body_bytes)
