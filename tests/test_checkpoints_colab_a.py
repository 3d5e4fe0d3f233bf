"""Tests of the Colab A checkpoint declarations (checkpoints/colab_a.py).

Every judge is tested on good and bad evidence (wrong values, wrong types, missing keys,
forged shapes); every collect runs with ``FakeSession`` over a namespace built from the
notebook's OWN solution code: the cells that define the data, the bundle, the verified loader,
the apps and the answers are executed once per module in a fresh run folder (the working
directory of this module's tests, as it is the kernel's), and wrong variants are built from
the notebook's own functions. Nothing here executes the whole notebook (the schemathesis test
does that); the model trains in about a second.

No ``from __future__ import annotations`` here: FastAPI must see the request model class in
the endpoint annotations, not a string naming a local variable.
"""

import json
import textwrap
from pathlib import Path

import joblib
import nbformat
import pandas as pd
import pytest
from fastapi import FastAPI

from autograde.collect import judge_checkpoint
from checkpoints import colab_a
from checkpoints.colab_a import (
    BUNDLE_NAME,
    CHECKPOINTS,
    FEATURES,
    IMPOSSIBLE_REQUESTS,
    LOAD_ONCE_REQUESTS,
    VALID_REQUESTS,
    collect_load_once,
    collect_no_skew,
    collect_request_shape,
    collect_tamper,
    collect_validation,
    judge_load_once,
    judge_no_skew,
    judge_request_shape,
    judge_tamper,
    judge_validation,
)
from checkpoints.interface import Unavailable, Verdict
from checkpoints.testing import FakeSession

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO_ROOT / "notebooks" / "colab_a_fastapi.ipynb"
DECLARED = {checkpoint.id: checkpoint for checkpoint in CHECKPOINTS}

# The notebook's cells this module executes, found by a line they contain (or their grade_id).
NEEDED_CELLS = [
    "import hashlib", "def answer_fingerprint", "FEATURES = [", "X = applicants[FEATURES]", "def file_sha256", "MODEL_VERSION = ",
    "class ArtifactRefused", "a_ex_verified_loader", "running_servers = {}", "APPROVAL_THRESHOLD = ",
    "class FirstDraftApplicant", "a_ex_load_once", "a_ex_request_model", "LOG_PATH = Path",
    "answer_a1", "answer_a2", "answer_a3", "answer_a4", "answer_a5",
]


class Session(FakeSession):
    """FakeSession whose ``kernel`` accepts a body indented for the grader's snippet (as
    ``autograde.collect`` requires), like the real session does."""

    def kernel(self, code, args=None):
        return super().kernel(textwrap.dedent(code), args)


def _runnable(source: str) -> str:
    # no servers started and no requests sent while building the namespace
    return "\n".join(line for line in source.splitlines() if "start_server(" not in line and "_url" not in line)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("colab_a_run")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        yield folder


@pytest.fixture(scope="module")
def ns(run_dir):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    namespace: dict = {"__name__": "colab_a_notebook"}
    for wanted in NEEDED_CELLS:
        cells = [c for c in nb.cells if c.cell_type == "code" and (
            c.metadata.get("nbgrader", {}).get("grade_id") == wanted or wanted in c.source)]
        assert cells, f"no cell of the notebook contains {wanted!r}"
        exec(compile(_runnable(cells[0].source), f"<cell {wanted}>", "exec"), namespace)  # noqa: S102
    namespace["fast_app"] = namespace["make_load_once_app"](namespace["FirstDraftApplicant"])
    assert (run_dir / BUNDLE_NAME).is_file()
    return namespace


def session_over(ns, run_dir, seed=0, **overrides) -> Session:
    return Session({**ns, **overrides}, run_dir, seed=seed)


def outcome(checkpoint_id, session):
    return judge_checkpoint(DECLARED[checkpoint_id], 2.0 if checkpoint_id != "cp_a_request_shape" else 1.0, session)


def test_every_hidden_cell_names_this_module():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    hidden = {c.metadata["nbgrader"]["grade_id"]: c.source for c in nb.cells
              if c.metadata.get("nbgrader", {}).get("grade") and "BEGIN HIDDEN TESTS" in c.source}
    assert set(hidden) == set(DECLARED)
    for source in hidden.values():
        assert "autograde-checkpoint: checkpoints.colab_a" in source
        assert "check_" not in source and "import" not in source
        assert source.splitlines()[0] == "# Hidden checkpoint (graded by your instructor)."


# ---------------------------------------------------------------------------------------
# predictions: the solution's answers are accepted, wrong ones refused
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("checkpoint_id, wrong", [
    ("cp_a_tamper", True), ("cp_a_load_once", "c"), ("cp_a_request_shape", [62000, 0.28, 710, 6, 18000]),
    ("cp_a_negative_income", 200), ("cp_a_no_skew", 3),
])
def test_prediction_accepts_the_solution_and_refuses_a_wrong_answer(ns, run_dir, checkpoint_id, wrong):
    prediction = DECLARED[checkpoint_id].prediction
    solution = session_over(ns, run_dir).value(prediction.variable)
    assert prediction.judge(solution).passed
    assert not prediction.judge(wrong).passed
    assert not prediction.judge(None).passed


def test_load_once_prediction_is_a_range_letter_in_any_case():
    prediction = DECLARED["cp_a_load_once"].prediction
    for right in ("a", " A ", "A"):
        assert prediction.judge(right).passed, right
    for wrong in ("b", "c", "a or b", [20, 0], 1.6, "under 3x"):
        assert not prediction.judge(wrong).passed, wrong


def test_request_shape_prediction_has_many_right_forms():
    prediction = DECLARED["cp_a_request_shape"].prediction
    assert prediction.check is not None and not prediction.accept
    integers = {"income": 250000, "debt_ratio": 1, "credit_score": 850, "employment_years": 35, "loan_amount": 400000}
    for right in (dict(colab_a.VALID_APPLICANT), integers, {name: 0.0 for name in reversed(FEATURES)}):
        assert prediction.judge(right).passed, right


@pytest.mark.parametrize("answer", [
    None, [62000, 0.28, 710, 6, 18000], {"income": 62000}, "a dict", 5,
    {**colab_a.VALID_APPLICANT, "income": "62000"}, {**colab_a.VALID_APPLICANT, "zip": 1},
    {**colab_a.VALID_APPLICANT, "debt_ratio": True}, {**colab_a.VALID_APPLICANT, "credit_score": float("nan")},
    {**colab_a.VALID_APPLICANT, "loan_amount": float("inf")}, {**colab_a.VALID_APPLICANT, "income": None},
])
def test_request_shape_prediction_refuses_wrong_bodies(answer):
    assert not DECLARED["cp_a_request_shape"].prediction.judge(answer).passed


def test_prediction_points_are_small():
    points = {c.id: c.prediction.points for c in CHECKPOINTS if c.prediction}
    assert points == {"cp_a_tamper": 0.5, "cp_a_load_once": 0.5, "cp_a_request_shape": 0.25,
                      "cp_a_negative_income": 0.5, "cp_a_no_skew": 0.5}


def test_self_check_digests_match_the_accepted_answers(ns):
    """Each visible self-check compares with the sha256 of an answer the grader accepts."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    checks = {c.metadata["nbgrader"]["grade_id"]: c.source for c in nb.cells
              if c.metadata.get("nbgrader", {}).get("grade_id", "").startswith("selfcheck_")}
    assert set(checks) == {f"selfcheck_a{n}" for n in range(1, 6)}
    for checkpoint in CHECKPOINTS:
        prediction = checkpoint.prediction
        solution = ns[prediction.variable]
        assert prediction.judge(json.loads(json.dumps(solution))).passed, prediction.variable
        assert ns["answer_fingerprint"](solution) in checks["selfcheck_" + prediction.variable.split("_")[1]]


# ---------------------------------------------------------------------------------------
# cp_a_tamper
# ---------------------------------------------------------------------------------------

GOOD_TAMPER = {
    "cases": {
        "genuine": {"raised": None, "returned": "dict", "has_pipeline": True},
        "appended": {"raised": "ArtifactRefused", "message": "refused: sha256 differs"},
        "swapped": {"raised": "ArtifactRefused", "message": "refused: sha256 differs"},
        "unknown": {"raised": "ArtifactRefused", "message": "refused: no readable manifest"},
    },
    "payload_ran": {"swapped": False, "unknown": False},
}


def _tamper(**changes):
    evidence = json.loads(json.dumps(GOOD_TAMPER))
    for key, value in changes.items():
        if key == "payload_ran":
            evidence["payload_ran"].update(value)
        else:
            evidence["cases"][key] = value
    return evidence


def test_judge_tamper_on_good_and_bad_evidence():
    assert judge_tamper(GOOD_TAMPER).passed
    cases = [
        (_tamper(genuine={"raised": "ArtifactRefused", "message": "no"}), "refused the genuine"),
        (_tamper(genuine={"raised": None, "returned": "list", "has_pipeline": False}), "should return the loaded"),
        (_tamper(appended={"raised": None, "returned": "dict", "has_pipeline": True}), "bytes were changed"),
        (_tamper(appended={"raised": "ValueError", "message": "  "}), "empty error message"),
        (_tamper(payload_ran={"swapped": True}), "unpickled a swapped-in file"),
        (_tamper(payload_ran={"unknown": True}), "unpickled an artifact that has no manifest"),
        (_tamper(unknown={"raised": None, "returned": "TextIOWrapper", "has_pipeline": False}), "did not refuse"),
        (_tamper(swapped={"raised": "NotImplementedError", "message": ""}), "not implemented"),
        ({"outside_run_folder": True}, "working directory"),
    ]
    for evidence, expected in cases:
        verdict = judge_tamper(evidence)
        assert not verdict.passed and expected in verdict.message, (expected, verdict)


@pytest.mark.parametrize("forged", [
    None, [], "ok", {"cases": [], "payload_ran": {}}, {"cases": GOOD_TAMPER["cases"]},
    {**GOOD_TAMPER, "payload_ran": {"swapped": "no", "unknown": False}},
    {**GOOD_TAMPER, "payload_ran": {"swapped": 0, "unknown": 0}},
    _tamper(genuine={"raised": None, "returned": "dict", "has_pipeline": "yes"}),
    _tamper(appended=["raised"]), _tamper(appended={"raised": 1, "message": "x"}),
])
def test_judge_tamper_refuses_forged_shapes(forged):
    verdict = judge_tamper(forged)
    assert isinstance(verdict, Verdict) and not verdict.passed


def test_collect_tamper_passes_with_the_notebook_loader_and_cleans_up(ns, run_dir):
    before = sorted(p.name for p in run_dir.iterdir())
    evidence = collect_tamper(session_over(ns, run_dir))
    assert judge_tamper(evidence).passed, evidence
    assert evidence["cases"]["swapped"]["raised"] == "ArtifactRefused"
    assert sorted(p.name for p in run_dir.iterdir()) == before


def test_collect_tamper_sees_the_payload_run_from_outside(ns, run_dir):
    def check_after_loading(artifact, manifest):
        loaded = joblib.load(artifact)  # too late: the payload already ran
        return ns["load_verified_bundle"](artifact, manifest) and loaded

    evidence = collect_tamper(session_over(ns, run_dir, load_verified_bundle=check_after_loading))
    assert evidence["payload_ran"] == {"swapped": True, "unknown": True}
    assert "unpickled a swapped-in file" in judge_tamper(evidence).message


def test_collect_tamper_uses_a_fresh_marker_each_run(ns, run_dir, monkeypatch):
    seen = []
    original = colab_a.payload_bytes
    monkeypatch.setattr(colab_a, "payload_bytes", lambda path: seen.append(path) or original(path))
    collect_tamper(session_over(ns, run_dir, seed=1))
    collect_tamper(session_over(ns, run_dir, seed=2))
    assert len(seen) == 4 and len(set(seen)) == 4


@pytest.mark.parametrize("loader, expected", [
    (lambda artifact, manifest: joblib.load(artifact), "bytes were changed"),
    (lambda artifact, manifest: (_ for _ in ()).throw(ValueError("never")), "refused the genuine"),
    (lambda artifact, manifest: (_ for _ in ()).throw(NotImplementedError()), "not implemented"),
])
def test_collect_tamper_fails_wrong_loaders(ns, run_dir, loader, expected):
    result = outcome("cp_a_tamper", session_over(ns, run_dir, load_verified_bundle=loader))
    assert result.behaviour_score == 0 and expected in result.behaviour.message
    assert result.prediction_score == 0.5  # an honest right prediction keeps its points


def test_collect_tamper_without_a_loader_or_bundle(ns, run_dir, tmp_path):
    session = session_over(ns, run_dir)
    del session.namespace["load_verified_bundle"]
    result = outcome("cp_a_tamper", session)
    assert result.score == 0.5 and "load_verified_bundle is not defined" in result.behaviour.message
    empty = Session(dict(ns), tmp_path)  # the kernel's folder has no bundle: nothing is written
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        with pytest.raises(Unavailable, match="was not found"):
            collect_tamper(empty)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------
# cp_a_load_once
# ---------------------------------------------------------------------------------------

DECISION = {"status": 200, "body": json.dumps({"approved": True, "probability": 0.2, "model_version": "1.0.0"})}


def _load_evidence(slow_loads=None, fast_loads=None, n=LOAD_ONCE_REQUESTS, responses=None):
    def part(loads):
        files = {BUNDLE_NAME: sum(loads)} if sum(loads) else {}
        return {"loads": loads, "files": files, "responses": responses or [DECISION] * n}

    return {"requests": n, "slow": part(slow_loads or [1] * n), "fast": part(fast_loads or [0] * n)}


def test_judge_load_once_on_good_and_bad_evidence():
    assert judge_load_once(_load_evidence()).passed
    assert judge_load_once(_load_evidence(slow_loads=[2] * LOAD_ONCE_REQUESTS)).passed
    cases = [
        (_load_evidence(fast_loads=[1] + [0] * (LOAD_ONCE_REQUESTS - 1)), "still loads the model"),
        (_load_evidence(slow_loads=[0] * LOAD_ONCE_REQUESTS), "during 0 of 20"),
        (_load_evidence(slow_loads=[1] * 10 + [0] * 10), "during 10 of 20"),
        (_load_evidence(responses=[{"status": 500, "body": "boom"}] * LOAD_ONCE_REQUESTS), "status 500"),
        (_load_evidence(responses=[{"status": None, "body": "", "error": "refused"}] * LOAD_ONCE_REQUESTS),
         "no answer"),
    ]
    for evidence, expected in cases:
        verdict = judge_load_once(evidence)
        assert not verdict.passed and expected in verdict.message, (expected, verdict)


@pytest.mark.parametrize("forged", [
    {}, {"requests": 20}, {**_load_evidence(), "requests": "20"}, {**_load_evidence(), "requests": 0},
    {**_load_evidence(), "fast": {"loads": {"a": 0}, "files": {}, "responses": [DECISION] * 20}},
    {**_load_evidence(), "fast": {"loads": [0] * 19, "files": {}, "responses": [DECISION] * 20}},
    {**_load_evidence(), "fast": {"loads": [-1] * 20, "files": {}, "responses": [DECISION] * 20}},
    {**_load_evidence(), "fast": {"loads": [0.0] * 20, "files": {}, "responses": [DECISION] * 20}},
    {**_load_evidence(), "fast": {"loads": [0] * 20, "files": [], "responses": [DECISION] * 20}},
    {**_load_evidence(), "fast": {"loads": [0] * 20, "files": {}, "responses": [{"status": "200"}] * 20}},
    {**_load_evidence(), "fast": {"loads": [0] * 20, "files": {}, "responses": DECISION}},
])
def test_judge_load_once_refuses_forged_shapes(forged):
    verdict = judge_load_once(forged)
    assert isinstance(verdict, Verdict) and not verdict.passed


def test_model_files_are_the_pickles_not_the_log():
    assert colab_a.is_model_file("credit_model.joblib") and colab_a.is_model_file("models/other.PKL")
    assert colab_a.is_model_file("copy.pickle") and colab_a.is_model_file("m.joblib.gz")
    assert not colab_a.is_model_file("predictions.jsonl") and not colab_a.is_model_file("credit_model.json")


def test_collect_load_once_counts_from_outside(ns, run_dir):
    session = session_over(ns, run_dir, app=None)
    # the notebook's load-once app logs every prediction: that file is opened per request, and does not count
    logging_fast = ns["make_load_once_app"](ns["FirstDraftApplicant"], log_path=Path("predictions.jsonl"))
    session.namespace["fast_app"] = logging_fast
    evidence = collect_load_once(session)
    assert evidence["slow"]["loads"] == [1] * LOAD_ONCE_REQUESTS and evidence["fast"]["loads"] == [0] * 20
    assert evidence["slow"]["files"] == {BUNDLE_NAME: LOAD_ONCE_REQUESTS}
    assert judge_load_once(evidence).passed
    assert (run_dir / "predictions.jsonl").is_file()


def test_collect_load_once_fails_when_the_fix_still_loads(ns, run_dir):
    slow = ns["slow_app"]
    result = outcome("cp_a_load_once", session_over(ns, run_dir, fast_app=slow))
    assert result.behaviour_score == 0 and "during 20 of 20 requests" in result.behaviour.message
    assert result.prediction_score == 0.5


def test_collect_load_once_fails_when_nothing_is_loaded_the_wrong_way(ns, run_dir):
    result = outcome("cp_a_load_once", session_over(ns, run_dir, slow_app=ns["fast_app"]))
    assert result.behaviour_score == 0 and "during 0 of 20" in result.behaviour.message


def test_collect_load_once_sees_a_copy_of_the_model(ns, run_dir):
    copy = run_dir / "copy.pkl"
    copy.write_bytes((run_dir / BUNDLE_NAME).read_bytes())

    sneaky = ns["make_per_request_app"](copy)
    try:
        evidence = collect_load_once(session_over(ns, run_dir, fast_app=sneaky))
    finally:
        copy.unlink()
    verdict = judge_load_once(evidence)
    assert not verdict.passed and '"copy.pkl" x20' in verdict.message


def test_collect_load_once_without_fast_app(ns, run_dir):
    session = session_over(ns, run_dir)
    del session.namespace["fast_app"]
    result = outcome("cp_a_load_once", session)
    assert result.behaviour_score == 0 and "fast_app" in result.behaviour.message


# ---------------------------------------------------------------------------------------
# cp_a_request_shape (its prediction, checkpoint_a3, is a Prediction with a check)
# ---------------------------------------------------------------------------------------


def test_collect_request_shape_full_marks_for_the_solution(ns, run_dir):
    evidence = collect_request_shape(session_over(ns, run_dir, seed=5))
    assert evidence["openapi"]["status"] == 200 and "answer" not in evidence
    assert evidence["applicant"] != collect_request_shape(session_over(ns, run_dir, seed=6))["applicant"]
    assert judge_request_shape(evidence).passed
    result = outcome("cp_a_request_shape", session_over(ns, run_dir))
    assert result.score == 1.0 and result.behaviour.passed and result.prediction.passed, result.message


@pytest.mark.parametrize("answer", [
    None, [62000, 0.28, 710, 6, 18000], {"income": 62000},
    {**colab_a.VALID_APPLICANT, "income": "62000"}, {**colab_a.VALID_APPLICANT, "zip": 1},
    {**colab_a.VALID_APPLICANT, "debt_ratio": True}, {**colab_a.VALID_APPLICANT, "credit_score": float("nan")},
])
def test_request_shape_wrong_prediction_keeps_the_behaviour_points(ns, run_dir, answer):
    result = outcome("cp_a_request_shape", session_over(ns, run_dir, checkpoint_a3=answer))
    assert result.behaviour.passed and result.behaviour_score == pytest.approx(0.75)
    assert not result.prediction.passed and result.score == pytest.approx(0.75)
    assert "62000" not in result.message


def test_request_shape_unreadable_prediction(ns, run_dir):
    result = outcome("cp_a_request_shape", session_over(ns, run_dir, checkpoint_a3={1, 2}))
    assert result.score == pytest.approx(0.75) and "no prediction recorded" in result.prediction.message


def test_request_shape_draft_model_keeps_only_the_prediction(ns, run_dir):
    draft = ns["add_service_routes"](ns["make_load_once_app"](ns["FirstDraftApplicant"]))
    result = outcome("cp_a_request_shape", session_over(ns, run_dir, app=draft))
    assert result.behaviour_score == 0 and result.prediction_score == pytest.approx(0.25)
    assert "forbid unknown fields" in result.behaviour.message


def test_judge_request_shape_on_schemas():
    openapi = {"paths": {"/predict": {"post": {"requestBody": {"content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/R"}}}}}}},
        "components": {"schemas": {"R": {"properties": {n: {"type": "number"} for n in FEATURES},
                                         "required": list(FEATURES), "additionalProperties": False}}}}
    good = {"openapi": {"status": 200, "body": json.dumps(openapi)}, "decision": DECISION}
    assert judge_request_shape(good).passed
    schema = openapi["components"]["schemas"]["R"]
    variants = [
        ({**schema, "required": list(FEATURES)[:4]}, "should be required"),
        ({**schema, "properties": {**schema["properties"], "income": {"type": "string"}}}, "should be a number"),
        ({**schema, "properties": {n: {"type": "number"} for n in FEATURES[:4]}}, "expected exactly the five"),
        ({k: v for k, v in schema.items() if k != "additionalProperties"}, "forbid unknown fields"),
    ]
    for variant, expected in variants:
        changed = {**openapi, "components": {"schemas": {"R": variant}}}
        verdict = judge_request_shape({**good, "openapi": {"status": 200, "body": json.dumps(changed)}})
        assert verdict.score == 0 and expected in verdict.message, (expected, verdict)
    anyof = {n: {"anyOf": [{"type": "number"}, {"type": "integer"}]} for n in FEATURES}
    changed = {**openapi, "components": {"schemas": {"R": {**schema, "properties": anyof}}}}
    assert judge_request_shape({**good, "openapi": {"status": 200, "body": json.dumps(changed)}}).passed
    assert judge_request_shape({**good, "decision": {"status": 422, "body": "{}"}}).score == 0
    assert judge_request_shape({**good, "openapi": {"status": 404, "body": ""}}).score == 0


@pytest.mark.parametrize("forged", [
    {}, {"openapi": None}, {"openapi": [], "decision": DECISION},
    {"openapi": {"status": 200, "body": {}}, "decision": DECISION},
    {"openapi": {"status": 200, "body": "{}"}, "decision": "200"},
])
def test_judge_request_shape_refuses_forged_shapes(forged):
    verdict = judge_request_shape(forged)
    assert isinstance(verdict, Verdict) and verdict.score == 0


# ---------------------------------------------------------------------------------------
# cp_a_negative_income
# ---------------------------------------------------------------------------------------


def _reply(status, detail):
    return {"status": status, "body": json.dumps({"detail": detail})}


def _validation_evidence(impossible_responses=None, valid_responses=None):
    impossible_responses = impossible_responses or [
        _reply(422, [{"loc": ["body", field or "x"], "msg": "bad value"}]) for _, _, field in IMPOSSIBLE_REQUESTS]
    valid_responses = valid_responses or [DECISION] * len(VALID_REQUESTS)
    return {
        "impossible": [{"description": d, "field": f, "response": r}
                       for (d, _, f), r in zip(IMPOSSIBLE_REQUESTS, impossible_responses, strict=True)],
        "valid": [{"description": d, "body": b, "response": r}
                  for (d, b), r in zip(VALID_REQUESTS, valid_responses, strict=True)],
    }


def test_judge_validation_needs_422_the_field_and_a_reason():
    good = _validation_evidence()
    assert judge_validation(good).passed
    first = good["impossible"][1:]
    no_field = {**good, "impossible": [{**good["impossible"][0], "response": _reply(422, [{"loc": ["body"],
                                                                                            "msg": "bad"}])}] + first}
    assert "does not name the field `income`" in judge_validation(no_field).message
    no_reason = {**good, "impossible": [{**good["impossible"][0],
                                         "response": _reply(422, [{"loc": ["body", "income"], "msg": ""}])}] + first}
    assert not judge_validation(no_reason).passed
    crash = {**good, "impossible": [{**good["impossible"][0], "response": {"status": 500, "body": "x"}}] + first}
    assert "a server error" in judge_validation(crash).message
    accepted = {**good, "impossible": [{**good["impossible"][0], "response": DECISION}] + first}
    assert "got 200, expected 422" in judge_validation(accepted).message
    bad_valid = _validation_evidence(valid_responses=[{"status": 200, "body": json.dumps(
        {"approved": "yes", "probability": 0.2, "model_version": "1"})}] * len(VALID_REQUESTS))
    assert "`approved` is not a boolean" in judge_validation(bad_valid).message


@pytest.mark.parametrize("forged", [
    {}, {"impossible": {}, "valid": []}, {"impossible": [], "valid": []},
    {"impossible": ["x"], "valid": [{"description": "d", "response": DECISION}]},
    {**_validation_evidence(), "valid": [{"description": "d", "response": {"status": "200", "body": ""}}]},
    {**_validation_evidence(), "valid": [{"description": "d", "response": {"status": 200, "body": {"a": 1}}}]},
    {**_validation_evidence(), "impossible": [{"description": "d", "field": ["income"],
                                               "response": _reply(422, [{"loc": ["income"], "msg": "m"}])}]},
])
def test_judge_validation_refuses_forged_shapes(forged):
    verdict = judge_validation(forged)
    assert isinstance(verdict, Verdict) and not verdict.passed


def test_impossible_requests_cover_every_required_kind():
    bodies = " ".join(body for _, body, _ in IMPOSSIBLE_REQUESTS)
    for literal in ("NaN", "Infinity", "-Infinity", "1e309", '"inf"', '"nan"', "true", "null", "zip_code"):
        assert literal in bodies
    assert set(FEATURES) <= {field for _, _, field in IMPOSSIBLE_REQUESTS}


def test_collect_validation_passes_for_the_notebook_app(ns, run_dir):
    session = session_over(ns, run_dir)
    evidence = collect_validation(session)
    assert len(evidence["valid"]) == len(VALID_REQUESTS) + colab_a.RANDOM_VALID_REQUESTS
    result = judge_validation(evidence)
    assert result.passed, result.message
    assert outcome("cp_a_negative_income", session).score == 2.0


def test_collect_validation_fails_for_the_first_draft(ns, run_dir):
    draft = ns["make_load_once_app"](ns["FirstDraftApplicant"])
    verdict = judge_validation(collect_validation(session_over(ns, run_dir, app=draft)))
    assert "server error" in verdict.message and "expected 422" in verdict.message


def test_collect_validation_fails_without_the_safe_handler(ns, run_dir):
    # strict model but FastAPI's default handler: NaN and infinities end in a 500
    bare = ns["make_load_once_app"](ns["CreditRequest"])
    verdict = judge_validation(collect_validation(session_over(ns, run_dir, app=bare)))
    assert "NaN literal: got 500" in verdict.message


# ---------------------------------------------------------------------------------------
# cp_a_no_skew
# ---------------------------------------------------------------------------------------


def skewed_app(ns) -> FastAPI:
    """The notebook's bundle served the wrong way: the bare network, without its scaler."""
    bundle = joblib.load(BUNDLE_NAME)
    api = FastAPI()
    request_model = ns["CreditRequest"]

    @api.post("/predict")
    def predict(applicant: request_model):
        row = pd.DataFrame([[getattr(applicant, n) for n in FEATURES]], columns=list(FEATURES))
        probability = float(bundle["pipeline"].named_steps["mlp"].predict_proba(row.to_numpy())[0, 1])
        return {"approved": probability < 0.5, "probability": probability, "model_version": bundle["version"]}

    return api


def _skew_evidence(served, offline, version="1.0.0"):
    rows = colab_a.draw_applicants(__import__("random").Random(0), len(served))
    responses = [{"status": 200, "body": json.dumps({"approved": p < 0.5, "probability": p, "model_version": version})}
                 for p in served]
    return {"rows": rows, "responses": responses,
            "offline": {"version": "1.0.0", "feature_names": list(FEATURES), "probabilities": offline}}


def test_judge_no_skew_on_good_and_bad_evidence():
    assert judge_no_skew(_skew_evidence([0.1, 0.7], [0.1, 0.7])).passed
    assert judge_no_skew(_skew_evidence([0.1, 0.7 + 1e-12], [0.1, 0.7])).passed
    assert "1 of 2 served probabilities differ" in judge_no_skew(_skew_evidence([0.1, 0.8], [0.1, 0.7])).message
    assert "model_version" in judge_no_skew(_skew_evidence([0.1], [0.1], version="2.0")).message
    error = {**_skew_evidence([0.1], [0.1]), "offline": {"error": "the sha256 does not match"}}
    assert "could not load the bundle" in judge_no_skew(error).message
    reordered = _skew_evidence([0.1], [0.1])
    reordered["offline"]["feature_names"] = list(reversed(FEATURES))
    assert "feature schema" in judge_no_skew(reordered).message
    crashed = {**_skew_evidence([0.1], [0.1]), "responses": [{"status": 500, "body": "boom"}]}
    assert "was not answered with a decision" in judge_no_skew(crashed).message


@pytest.mark.parametrize("forged", [
    {}, {**_skew_evidence([0.1], [0.1]), "responses": []},
    {**_skew_evidence([0.1], [0.1]), "offline": []},
    {**_skew_evidence([0.1], [0.1]), "offline": {"version": "1.0.0", "feature_names": list(FEATURES),
                                                  "probabilities": [None]}},
    {**_skew_evidence([0.1], [0.1]), "offline": {"version": "1.0.0", "feature_names": list(FEATURES),
                                                  "probabilities": {"0": 0.1}}},
    {**_skew_evidence([0.1], [0.1]), "rows": {"0": {}}},
])
def test_judge_no_skew_refuses_forged_shapes(forged):
    verdict = judge_no_skew(forged)
    assert isinstance(verdict, Verdict) and not verdict.passed


def test_collect_no_skew_passes_for_the_notebook_app_and_fails_skewed(ns, run_dir):
    evidence = collect_no_skew(session_over(ns, run_dir, seed=3))
    assert len(evidence["rows"]) == colab_a.NO_SKEW_APPLICANTS and "error" not in evidence["offline"], evidence
    assert judge_no_skew(evidence).passed
    skewed = judge_no_skew(collect_no_skew(session_over(ns, run_dir, app=skewed_app(ns))))
    assert "differ from the bundle's predict_proba" in skewed.message


def test_collect_no_skew_without_a_matching_manifest(ns, run_dir, tmp_path):
    (tmp_path / BUNDLE_NAME).write_bytes((run_dir / BUNDLE_NAME).read_bytes() + b"x")
    (tmp_path / "credit_model.json").write_text((run_dir / "credit_model.json").read_text())
    verdict = judge_no_skew(collect_no_skew(Session(dict(ns), tmp_path)))
    assert "could not load the bundle" in verdict.message and "sha256" in verdict.message


def test_held_out_applicants_are_plausible_and_per_run():
    import random

    rows = colab_a.draw_applicants(random.Random(1), 200)
    assert rows != colab_a.draw_applicants(random.Random(2), 200)
    for row in rows:
        assert set(row) == set(FEATURES) and all(type(v) is float for v in row.values())
        assert 0 <= row["debt_ratio"] <= 1 and 300 <= row["credit_score"] <= 850
        assert 0 < row["income"] <= 5_000_000 and 0 < row["loan_amount"] <= 2_000_000
        assert 0 <= row["employment_years"] <= 60
