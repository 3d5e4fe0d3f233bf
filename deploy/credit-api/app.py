# GENERATED from notebooks/colab_d_mlops.ipynb by tools/make_deploy.py: do not edit by hand,
# change the notebook and run `python tools/make_deploy.py`.
"""The credit-scoring API as it ships (written by the Colab D notebook).

It serves whichever bundle the POINTER file names: a small JSON file with the bundle's
`artifact` (a file name next to the pointer), its `sha256` and its `model_version`. The
pointer is re-read on every request (a few hundred bytes); the model is loaded only when the
pointer changes, after its sha256 is verified: a rollback is one edit of the pointer, and the
running service follows it on its next request, without a restart. Every request to /predict
is logged (inputs, decision, status, latency, model version) when PREDICTION_LOG is set.

    MODEL_POINTER=credit_model.json PREDICTION_LOG=predictions.jsonl uvicorn app:app --port 8000
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import sklearn
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

try:  # serves the /docs page's assets itself (no CDN); plain FastAPI where it is not installed
    from fastapi_offline import FastAPIOffline as FastAPI
except ImportError:
    from fastapi import FastAPI

HERE = Path(__file__).resolve().parent
POINTER = Path(os.environ.get("MODEL_POINTER") or HERE / "credit_model.json")
PREDICTION_LOG = os.environ.get("PREDICTION_LOG")  # unset in the image: its filesystem is not the place
APPROVAL_THRESHOLD = 0.5  # approve when the predicted probability of default is below this
CLOCK = lambda: datetime.now(UTC)  # noqa: E731 - the notebook fast-forwards it to simulate weeks


class ArtifactRefused(RuntimeError):
    """A model file nobody can vouch for: it is never unpickled."""


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_pointed_bundle(pointer_bytes, folder):
    """The bundle a pointer names, verified before unpickling; ArtifactRefused otherwise."""
    try:
        pointer = json.loads(pointer_bytes)
        name, expected = pointer["artifact"], pointer["sha256"]
    except (ValueError, KeyError, TypeError):
        raise ArtifactRefused("refused: the model pointer is not a JSON object with artifact and sha256") from None
    artifact = folder / str(name)
    if Path(str(name)).name != name or not artifact.is_file():
        raise ArtifactRefused(f"refused {artifact}: not a file next to the pointer")
    actual = file_sha256(artifact)
    if actual != expected:
        raise ArtifactRefused(f"refused {artifact}: sha256 {actual[:12]}... differs from the pointer's "
                              f"{str(expected)[:12]}...; the file changed after it was published")
    bundle = joblib.load(artifact)  # only now: these are exactly the published bytes
    trained_with = bundle.get("provenance", {}).get("library_versions", {}).get("scikit-learn")
    if trained_with and trained_with != sklearn.__version__:
        raise ArtifactRefused(f"refused {artifact}: trained with scikit-learn {trained_with}, this runtime has "
                              f"{sklearn.__version__}")
    return bundle


class LiveModel:
    """The bundle the pointer names, reloaded only when the pointer's bytes change."""

    def __init__(self, pointer_path):
        self.pointer_path = Path(pointer_path)
        self.lock = threading.Lock()
        self.pointer_bytes = self.pointer_path.read_bytes()
        self.bundle = load_pointed_bundle(self.pointer_bytes, self.pointer_path.parent)

    def current(self):
        latest = self.pointer_path.read_bytes()  # cheap: a few hundred bytes per request
        with self.lock:
            if latest != self.pointer_bytes:
                before = self.bundle["version"]
                try:
                    self.bundle = load_pointed_bundle(latest, self.pointer_path.parent)
                    event = {"event": "model_switch", "from": before, "to": self.bundle["version"],
                             "reason": json.loads(latest).get("reason", "")}
                except ArtifactRefused as refusal:  # keep serving the model that was verified
                    event = {"event": "switch_refused", "kept": before, "reason": str(refusal)}
                self.pointer_bytes = latest
                write_log({"timestamp": CLOCK().isoformat(), **event})
            return self.bundle


class CreditRequest(BaseModel):
    # Real finite JSON numbers, all five fields, nothing else (Colab A's contract).
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

    income: float = Field(ge=0, le=5_000_000, description="annual income")
    debt_ratio: float = Field(ge=0, le=1, description="share of income already spent on debt service")
    credit_score: float = Field(ge=300, le=850, description="credit bureau score")
    employment_years: float = Field(ge=0, le=60, description="years in current employment")
    loan_amount: float = Field(gt=0, le=2_000_000, description="requested loan amount")


class CreditDecision(BaseModel):
    approved: bool
    probability: float = Field(ge=0, le=1, description="predicted probability of default")
    model_version: str


_log_lock = threading.Lock()


def write_log(record):
    if PREDICTION_LOG:
        with _log_lock, open(PREDICTION_LOG, "a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")


try:
    live_model = LiveModel(POINTER)  # verified and loaded once, at start-up
except (OSError, ArtifactRefused) as refusal:
    raise SystemExit(f"credit-api: {refusal}") from None

app = FastAPI(title="Credit scoring API")


@app.exception_handler(RequestValidationError)
async def explain_validation_error(request: Request, error: RequestValidationError):
    # Field, reason and type; never the offending input (a NaN cannot be written as JSON).
    problems = []
    for item in error.errors():
        location = [str(part) for part in item.get("loc", ())]
        field = location[-1] if len(location) > 1 and item.get("type") != "json_invalid" else "body"
        problems.append({"field": field, "loc": location, "msg": item.get("msg", "invalid value"),
                         "type": item.get("type", "value_error")})
    request.state.log = {"inputs": None, "output": None, "invalid_fields": [p["field"] for p in problems]}
    return JSONResponse(status_code=422, content={"detail": problems})


@app.middleware("http")
async def log_every_prediction(request: Request, call_next):
    started = time.perf_counter()
    response = await call_next(request)
    if request.url.path == "/predict":
        request_id = uuid.uuid4().hex
        response.headers["X-Request-ID"] = request_id  # the key the actual outcome will be joined on
        entry = getattr(request.state, "log", {"inputs": None, "output": None})
        write_log({"timestamp": CLOCK().isoformat(), "request_id": request_id, "status": response.status_code,
                   "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                   "model_version": live_model.bundle["version"], **entry})
    return response


@app.get("/health")
def health():
    return {"status": "ok", "model_version": live_model.current()["version"]}


@app.post("/predict", response_model=CreditDecision)
def predict(applicant: CreditRequest, request: Request):
    bundle = live_model.current()
    names, pipeline = bundle["feature_names"], bundle["pipeline"]  # the schema travels with the model
    row = np.array([[getattr(applicant, name) for name in names]], dtype=float)
    if hasattr(pipeline, "feature_names_in_"):  # a pipeline fitted on a DataFrame wants one back
        row = pd.DataFrame(row, columns=names)
    probability = float(pipeline.predict_proba(row)[0, 1])
    decision = {"approved": probability < APPROVAL_THRESHOLD, "probability": probability,
                "model_version": str(bundle["version"])}
    request.state.log = {"inputs": applicant.model_dump(), "output": decision,
                         "model_version": decision["model_version"]}
    return decision
