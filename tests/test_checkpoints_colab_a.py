"""Unit tests of the Colab A verifiers: each passes on a correct object and fails, with a
message a student can act on, on a wrong one.

The objects under test are small stand-ins for what the notebook builds (a tiny bundle on
disk, a strict request model, load-once and per-request apps); nothing here executes the
notebook. Every verifier that serves an app does so on a free port and probes it from a
fresh process, exactly as in grading.

No ``from __future__ import annotations`` here: FastAPI must see the request model class in
the endpoint annotations, not a string naming a local variable.
"""

import hashlib
import json
import math
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from checkpoints import colab_a
from checkpoints.colab_a import (
    FEATURES,
    IMPOSSIBLE_REQUESTS,
    VALID_APPLICANT,
    VALID_REQUESTS,
    check_load_once,
    check_no_skew,
    check_request_shape,
    check_tampered_refused,
    check_validation,
    judge_validation,
)
from checkpoints.common import CheckpointFailed

# ---------------------------------------------------------------------------------------
# a tiny bundle and reference implementations
# ---------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def bundle_files(tmp_path_factory) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame(
        {
            "income": rng.lognormal(np.log(55_000), 0.45, n),
            "debt_ratio": rng.beta(2, 5, n),
            "credit_score": np.clip(rng.normal(680, 70, n), 300, 850),
            "employment_years": np.clip(rng.gamma(2.0, 4.0, n), 0, 45),
            "loan_amount": rng.lognormal(np.log(15_000), 0.6, n),
        }
    )
    label = (frame["debt_ratio"] + frame["loan_amount"] / frame["income"] > 0.55).astype(int)
    pipeline = Pipeline(
        [("scaler", StandardScaler()), ("mlp", MLPClassifier((8,), max_iter=300, tol=1e-3, random_state=0))]
    )
    pipeline.fit(frame[list(FEATURES)], label)
    folder = tmp_path_factory.mktemp("bundle")
    bundle_path, manifest_path = folder / "credit_model.joblib", folder / "credit_model.json"
    bundle = {"pipeline": pipeline, "feature_names": list(FEATURES), "provenance": {}, "version": "test-1"}
    joblib.dump(bundle, bundle_path)
    manifest_path.write_text(json.dumps({"artifact": bundle_path.name, "sha256": _sha256(bundle_path)}))
    return bundle_path, manifest_path


def verified_loader(artifact, manifest):
    artifact, manifest = Path(artifact), Path(manifest)
    try:
        expected = json.loads(manifest.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"refused: no readable manifest ({exc})") from None
    if expected.get("artifact") != artifact.name or _sha256(artifact) != expected.get("sha256"):
        raise ValueError("refused: the artifact does not match its manifest")
    return joblib.load(artifact)


class StrictRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)
    income: float = Field(ge=0, le=5_000_000)
    debt_ratio: float = Field(ge=0, le=1)
    credit_score: float = Field(ge=300, le=850)
    employment_years: float = Field(ge=0, le=60)
    loan_amount: float = Field(gt=0, le=2_000_000)


class DraftRequest(BaseModel):
    income: float = Field(ge=0)
    debt_ratio: float = Field(ge=0, le=1)
    credit_score: float = Field(ge=300, le=850)
    employment_years: float = Field(ge=0)
    loan_amount: float = Field(ge=0)


async def _explain(request: Request, error: RequestValidationError):
    detail = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", "invalid"), "type": e.get("type", "")}
        for e in error.errors()
    ]
    return JSONResponse(status_code=422, content={"detail": detail})


def _score(bundle, applicant, raw_to_bare_network: bool = False) -> dict:
    names = bundle["feature_names"]
    row = pd.DataFrame([[getattr(applicant, n) for n in names]], columns=names)
    if raw_to_bare_network:  # training-serving skew: the scaler is skipped
        probability = float(bundle["pipeline"].named_steps["mlp"].predict_proba(row.to_numpy())[0, 1])
    else:
        probability = float(bundle["pipeline"].predict_proba(row)[0, 1])
    return {"approved": probability < 0.5, "probability": probability, "model_version": bundle["version"]}


def make_app(bundle_path, request_model=StrictRequest, *, handler=True, per_request=False, skew=False):
    api = FastAPI()
    if handler:
        api.add_exception_handler(RequestValidationError, _explain)
    bundle = None if per_request else joblib.load(bundle_path)

    @api.post("/predict")
    def predict(applicant: request_model):
        current = joblib.load(bundle_path) if per_request else bundle
        return _score(current, applicant, raw_to_bare_network=skew)

    return api


def failure(call) -> str:
    with pytest.raises(CheckpointFailed) as info:
        call()
    return str(info.value)


# ---------------------------------------------------------------------------------------
# checkpoint a1: tampered / unknown artifacts
# ---------------------------------------------------------------------------------------


def test_tamper_passes_with_a_verifying_loader(bundle_files, capsys):
    check_tampered_refused(False, verified_loader, *bundle_files)
    assert "[checkpoint a1] passed" in capsys.readouterr().out


def test_tamper_fails_when_the_loader_does_not_verify(bundle_files):
    def naive(artifact, manifest):
        return joblib.load(artifact)

    assert "bytes were changed" in failure(lambda: check_tampered_refused(False, naive, *bundle_files))


def test_tamper_fails_when_the_loader_unpickles_before_checking(bundle_files):
    def check_after_loading(artifact, manifest):
        loaded = joblib.load(artifact)  # too late: the payload already ran
        return verified_loader(artifact, manifest) and loaded

    message = failure(lambda: check_tampered_refused(False, check_after_loading, *bundle_files))
    assert "unpickled" in message


def test_tamper_fails_when_the_loader_refuses_everything(bundle_files):
    def paranoid(artifact, manifest):
        raise ValueError("never")

    assert "genuine" in failure(lambda: check_tampered_refused(False, paranoid, *bundle_files))


def test_tamper_fails_on_stub_and_on_wrong_prediction(bundle_files):
    def stub(artifact, manifest):
        raise NotImplementedError()

    assert "not implemented" in failure(lambda: check_tampered_refused(False, stub, *bundle_files))
    assert "does not match" in failure(lambda: check_tampered_refused(True, verified_loader, *bundle_files))
    assert "not set" in failure(lambda: check_tampered_refused(None, verified_loader, *bundle_files))


# ---------------------------------------------------------------------------------------
# checkpoint a2: load once, counted by the audit hook
# ---------------------------------------------------------------------------------------


def test_load_once_passes(bundle_files, capsys):
    slow = make_app(bundle_files[0], DraftRequest, handler=False, per_request=True)
    fast = make_app(bundle_files[0], DraftRequest)
    check_load_once((20, 0), slow, fast, bundle_path=bundle_files[0])
    assert "20 loads the wrong way, 0 with load-once" in capsys.readouterr().out


def test_load_once_fails_when_the_fix_still_loads_per_request(bundle_files):
    slow = make_app(bundle_files[0], DraftRequest, per_request=True)
    message = failure(lambda: check_load_once((20, 0), slow, slow, bundle_path=bundle_files[0]))
    assert "still loads the model" in message and "20 read(s)" in message


def test_load_once_fails_when_nothing_is_loaded_the_wrong_way(bundle_files):
    fast = make_app(bundle_files[0], DraftRequest)
    assert "did 0 times" in failure(lambda: check_load_once((20, 0), fast, fast, bundle_path=bundle_files[0]))


def test_load_once_rejects_a_wrong_prediction_or_a_missing_app(bundle_files):
    fast = make_app(bundle_files[0], DraftRequest)
    assert "does not match" in failure(lambda: check_load_once((20, 20), fast, fast, bundle_path=bundle_files[0]))
    assert "does not match" in failure(lambda: check_load_once((True, 0), fast, fast, bundle_path=bundle_files[0]))
    assert "no `fast_app`" in failure(lambda: check_load_once((20, 0), fast, None, bundle_path=bundle_files[0]))


# ---------------------------------------------------------------------------------------
# checkpoint a3: the request shape
# ---------------------------------------------------------------------------------------


def test_request_shape_passes(bundle_files, capsys):
    check_request_shape(dict(VALID_APPLICANT), make_app(bundle_files[0]))
    assert "[checkpoint a3] passed" in capsys.readouterr().out


def test_request_shape_fails_on_wrong_answers(bundle_files):
    app = make_app(bundle_files[0])
    missing = {k: v for k, v in VALID_APPLICANT.items() if k != "loan_amount"}
    assert "missing the field(s) loan_amount" in failure(lambda: check_request_shape(missing, app))
    as_text = dict(VALID_APPLICANT, income="62000")
    assert "finite numbers" in failure(lambda: check_request_shape(as_text, app))
    assert "should be a dict" in failure(lambda: check_request_shape([1, 2, 3, 4, 5], app))


def test_request_shape_fails_when_unknown_fields_are_allowed(bundle_files):
    draft = make_app(bundle_files[0], DraftRequest)
    assert "forbid unknown fields" in failure(lambda: check_request_shape(dict(VALID_APPLICANT), draft))


# ---------------------------------------------------------------------------------------
# checkpoint a4: validation
# ---------------------------------------------------------------------------------------


def test_validation_passes_for_a_strict_model_with_a_safe_handler(bundle_files, capsys):
    check_validation(422, make_app(bundle_files[0]))
    assert "[checkpoint a4] passed" in capsys.readouterr().out


def test_validation_fails_for_the_first_draft_model(bundle_files):
    message = failure(lambda: check_validation(422, make_app(bundle_files[0], DraftRequest, handler=False)))
    assert "server error" in message and "expected 422" in message


def test_validation_fails_without_the_safe_handler(bundle_files):
    # strict model but FastAPI's default handler: NaN and infinities end in a 500
    message = failure(lambda: check_validation(422, make_app(bundle_files[0], handler=False)))
    assert "NaN literal: got 500" in message


def test_validation_fails_on_a_wrong_prediction(bundle_files):
    assert "does not match" in failure(lambda: check_validation(200, make_app(bundle_files[0])))
    assert "does not match" in failure(lambda: check_validation(422.0, make_app(bundle_files[0])))


def test_judge_validation_needs_the_field_and_a_reason():
    def reply(status, detail):
        return {"status": status, "body": json.dumps({"detail": detail})}

    good = []
    for _, _, field in IMPOSSIBLE_REQUESTS:
        good.append(reply(422, [{"loc": ["body", field or "x"], "msg": "bad value"}]))
    valid = [{"status": 200, "body": json.dumps({"approved": True, "probability": 0.2, "model_version": "1"})}] * len(
        VALID_REQUESTS
    )
    assert judge_validation(good, valid) == []

    no_field = [reply(422, [{"loc": ["body"], "msg": "bad value"}])] + good[1:]
    assert "does not name the field `income`" in judge_validation(no_field, valid)[0]
    no_reason = [reply(422, [{"loc": ["body", "income"], "msg": ""}])] + good[1:]
    assert judge_validation(no_reason, valid)
    bad_valid = [{"status": 200, "body": json.dumps({"approved": "yes", "probability": 0.2, "model_version": "1"})}]
    assert "`approved` is not a boolean" in judge_validation(good, bad_valid * len(VALID_REQUESTS))[0]


def test_impossible_requests_cover_every_required_kind():
    bodies = " ".join(body for _, body, _ in IMPOSSIBLE_REQUESTS)
    for literal in ("NaN", "Infinity", "-Infinity", "1e309", '"inf"', '"nan"', "true", "null", "zip_code"):
        assert literal in bodies
    fields = {field for _, _, field in IMPOSSIBLE_REQUESTS}
    assert set(FEATURES) <= fields


# ---------------------------------------------------------------------------------------
# checkpoint a5: no skew
# ---------------------------------------------------------------------------------------


def test_no_skew_passes(bundle_files, capsys):
    check_no_skew(0, make_app(bundle_files[0]), *bundle_files)
    assert "[checkpoint a5] passed" in capsys.readouterr().out


def test_no_skew_fails_when_the_scaler_is_skipped(bundle_files):
    skewed = make_app(bundle_files[0], skew=True)
    assert "differ from the bundle's predict_proba" in failure(lambda: check_no_skew(0, skewed, *bundle_files))


def test_no_skew_fails_on_a_wrong_prediction_or_missing_bundle(bundle_files, tmp_path):
    app = make_app(bundle_files[0])
    assert "does not match" in failure(lambda: check_no_skew(3, app, *bundle_files))
    assert "was not found" in failure(lambda: check_no_skew(0, app, tmp_path / "credit_model.joblib"))


def test_held_out_applicants_are_plausible_and_deterministic():
    rows = colab_a.held_out_applicants()
    assert rows == colab_a.held_out_applicants()
    for row in rows:
        assert set(row) == set(FEATURES)
        assert all(math.isfinite(v) for v in row.values())
        assert 0 <= row["debt_ratio"] <= 1 and 300 <= row["credit_score"] <= 850
        assert 0 < row["income"] < 5_000_000 and 0 < row["loan_amount"] < 2_000_000
