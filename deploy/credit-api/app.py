"""The credit-scoring API as it runs in the container (deploy/credit-api/Dockerfile).

The same service the Colab A notebook builds, as a module: the bundle the notebook writes
(credit_model.joblib + its manifest credit_model.json) is verified against the manifest's
sha256 and loaded ONCE, at import; a missing, tampered or unknown file is refused and the
process exits with a clear message instead of unpickling it. Requests are validated by a
strict pydantic model (422 naming the field and the reason, never 500); /health answers for
the container's HEALTHCHECK.

    MODEL_DIR=.  uvicorn app:app --host 127.0.0.1 --port 8000
Environment: MODEL_DIR (default: this file's folder), PREDICTION_LOG (a JSONL file to append
every decision to; default: none, since the container's filesystem is not the place to keep it).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import joblib
import pandas as pd
import sklearn
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline  # FastAPI with the /docs page's assets served locally
from pydantic import BaseModel, ConfigDict, Field

MODEL_DIR = Path(os.environ.get("MODEL_DIR") or Path(__file__).resolve().parent)
BUNDLE_PATH = MODEL_DIR / "credit_model.joblib"
MANIFEST_PATH = MODEL_DIR / "credit_model.json"
APPROVAL_THRESHOLD = 0.5  # approve when the predicted probability of default is below this


class ArtifactRefused(RuntimeError):
    """A model file nobody can vouch for: it is never unpickled."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_verified_bundle(artifact_path: Path, manifest_path: Path) -> dict:
    try:
        expected = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as problem:
        raise ArtifactRefused(f"refused {artifact_path}: no readable manifest at {manifest_path} ({problem})") from None
    if expected.get("artifact") != artifact_path.name:
        raise ArtifactRefused(f"refused {artifact_path}: the manifest describes {expected.get('artifact')!r}")
    if not artifact_path.is_file():
        raise ArtifactRefused(f"refused {artifact_path}: the file does not exist")
    actual = file_sha256(artifact_path)
    if actual != expected.get("sha256"):
        raise ArtifactRefused(f"refused {artifact_path}: sha256 {actual[:12]}... differs from the manifest's "
                              f"{str(expected.get('sha256'))[:12]}...; the file changed after it was published")
    bundle = joblib.load(artifact_path)  # only now: these are exactly the published bytes
    trained_with = bundle.get("provenance", {}).get("library_versions", {}).get("scikit-learn")
    if trained_with and trained_with != sklearn.__version__:
        raise ArtifactRefused(f"refused {artifact_path}: trained with scikit-learn {trained_with}, this image has "
                              f"{sklearn.__version__}; pin scikit-learn=={trained_with} in requirements.txt")
    return bundle


class CreditRequest(BaseModel):
    # The notebook's contract: real finite JSON numbers, all five fields, nothing else.
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

    income: float = Field(ge=0, le=5_000_000, description="annual income")
    debt_ratio: float = Field(ge=0, le=1, description="share of income already spent on debt service")
    credit_score: float = Field(ge=300, le=850, description="credit bureau score")
    employment_years: float = Field(ge=0, le=60, description="years in current employment")
    loan_amount: float = Field(gt=0, le=2_000_000, description="requested loan amount")


class ValidationProblem(BaseModel):
    field: str
    loc: list[str]
    msg: str
    type: str


class ValidationReport(BaseModel):
    """What a 422 carries (documented on /docs as it is really sent: no echoed input)."""

    detail: list[ValidationProblem]


class CreditDecision(BaseModel):
    approved: bool
    probability: float = Field(ge=0, le=1, description="predicted probability of default")
    model_version: str


try:
    bundle = load_verified_bundle(BUNDLE_PATH, MANIFEST_PATH)  # once, at start-up
except ArtifactRefused as refusal:
    raise SystemExit(f"credit-api: {refusal}") from None
if bundle["feature_names"] != list(CreditRequest.model_fields):
    raise SystemExit(f"credit-api: the bundle's features {bundle['feature_names']} differ from the API's "
                     f"{list(CreditRequest.model_fields)}")

MODEL_VERSION = str(bundle["version"])
PREDICTION_LOG = os.environ.get("PREDICTION_LOG")
_log_lock = threading.Lock()

app = FastAPIOffline(title="Credit scoring API", version=MODEL_VERSION)


@app.exception_handler(RequestValidationError)
async def explain_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    # Field, reason and type; never the offending input (a NaN cannot be written as JSON).
    problems = []
    for item in error.errors():
        location = [str(part) for part in item.get("loc", ())]
        field = location[-1] if len(location) > 1 and item.get("type") != "json_invalid" else "body"
        problems.append({"field": field, "loc": location, "msg": item.get("msg", "invalid value"),
                         "type": item.get("type", "value_error")})
    return JSONResponse(status_code=422, content={"detail": problems})


@app.get("/health")
def health() -> dict:
    return {"status": "ok", "model_version": MODEL_VERSION}


@app.post("/predict", response_model=CreditDecision,
          responses={422: {"model": ValidationReport, "description": "an impossible value: the field and the reason"}})
def predict(applicant: CreditRequest) -> dict:
    names = bundle["feature_names"]  # the schema travels with the model
    row = pd.DataFrame([[getattr(applicant, name) for name in names]], columns=names)
    probability = float(bundle["pipeline"].predict_proba(row)[0, 1])
    decision = {"approved": probability < APPROVAL_THRESHOLD, "probability": probability,
                "model_version": MODEL_VERSION}
    if PREDICTION_LOG:
        record = {"timestamp": datetime.now(UTC).isoformat(), "model_version": MODEL_VERSION,
                  "inputs": applicant.model_dump(), "output": decision}
        with _log_lock, open(PREDICTION_LOG, "a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")
    return decision
