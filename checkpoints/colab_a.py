"""Checkpoints of Colab A, the FastAPI credit-scoring notebook, judged outside the kernel.

Each declaration in ``CHECKPOINTS`` collects plain data from the running notebook through the
grader's session and judges it here, in the grader's process (see ``checkpoints.interface``).

Public contract of the notebook these checkpoints rely on: the working directory (the run
folder) holds ``credit_model.joblib`` (a joblib dump of a dict with ``pipeline``,
``feature_names``, ``provenance`` and ``version``) and ``credit_model.json`` (a manifest with
``artifact`` and ``sha256``); ``load_verified_bundle(artifact_path, manifest_path)`` returns the
bundle or raises; ``slow_app``, ``fast_app`` and ``app`` are ASGI apps whose ``POST /predict``
answers ``{"approved": bool, "probability": P(default) in [0, 1], "model_version": str}``.

How each behaviour is observed:

- cp_a_tamper: the grader builds, in its own process, a pickle whose only effect when loaded is
  to create a file (a fresh random name per run) and has the kernel write it, next to copies
  of the genuine bundle, into a fresh folder of the run folder; the kernel then calls the
  student's loader on each artifact (the student's own code, in the student's own kernel) and
  hands back, as data, what each call returned or raised. Whether the payload ran is read from
  OUTSIDE: does its file exist in the run folder afterwards? The folder is removed afterwards.
- cp_a_load_once: model loads are counted from outside with ``session.count_opens()`` (inotify
  on the run folder) around each HTTP request the grader sends to ``slow_app`` and to
  ``fast_app``. A "model load" is an open of a model file of the run folder: the bundle
  ``credit_model.joblib`` and any other ``*.joblib``, ``*.pkl`` or ``*.pickle`` file (also
  compressed: ``.gz``, ``.bz2``, ``.xz``, ``.lzma``, ``.z``), since unpickling a model needs
  its file opened. Other files do not count: the prediction log (``predictions.jsonl``)
  appended per request, or the manifest ``credit_model.json`` (reading it is not loading the
  model). Each request is counted in its own block, so inotify merging identical consecutive
  events cannot hide a load: a request "loaded the model" when a model file was opened while
  it was served. Limitation: a file outside the run folder (a copy in /tmp) is not observed.
- cp_a_request_shape, cp_a_negative_income: the grader serves ``app`` from a kernel thread and
  sends raw HTTP requests from its own side (raw text, so ``NaN``, ``Infinity`` or ``1e309``
  reach the server unchanged).
- cp_a_no_skew: held-out applicants drawn per run from ``session.rng`` are sent to ``app``; the
  probe ``probes/credit_bundle.py`` verifies the manifest's sha256, unpickles the bundle in a
  fresh sandbox and answers its ``predict_proba`` for the same rows; the judge compares.

Predictions: cp_a_load_once's (``checkpoint_a2``) is the range of the measured slowdown of
per-request loading (median latency, wrong way / load once) with the notebook's small bundle, one of
"a" (under 3x), "b" (3-10x), "c" (over 10x). Only "a" is accepted: on the 2-core CI machine the
notebook printed 1.6x-1.7x in every run (idle or loaded); both latencies are Python work (unpickling
vs HTTP + JSON + validation), so a faster or slower CPU moves them together, and 1.6x is far from
the 3x boundary. Only the size sweep's artifacts of many MiB leave "a" (8 MiB about 3.7x, 32 MiB
about 5.5-7x). cp_a_request_shape's (``checkpoint_a3``, a request body) has many right forms: any
object with exactly the five named, finite numeric fields, so its ``Prediction`` has a ``check``.
"""

from __future__ import annotations

import base64
import json
import math
import os
import pickle
import posixpath
import random
import re

from checkpoints.interface import Checkpoint, Malformed, Prediction, Unavailable, Verdict, quote, robust

FEATURES = ("income", "debt_ratio", "credit_score", "employment_years", "loan_amount")
BUNDLE_NAME = "credit_model.joblib"
MANIFEST_NAME = "credit_model.json"
BUNDLE_PROBE = "credit_bundle"
LOAD_ONCE_REQUESTS = 20
NO_SKEW_APPLICANTS = 25
SKEW_TOLERANCE = 1e-9
MODEL_FILE = re.compile(r"\.(joblib|pkl|pickle)(\.(gz|bz2|xz|lzma|z))?$", re.IGNORECASE)

VALID_APPLICANT = {
    "income": 62000.0,
    "debt_ratio": 0.28,
    "credit_score": 710.0,
    "employment_years": 6.0,
    "loan_amount": 18000.0,
}


# ---------------------------------------------------------------------------------------
# shared helpers: requests, responses, applicants
# ---------------------------------------------------------------------------------------


def post(body: str) -> dict:
    return {"method": "POST", "path": "/predict", "body": body, "content_type": "application/json"}


def is_number(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def response_parts(response: object) -> tuple[int | None, str]:
    """(status, body text) of one answer of ``session.http``; Malformed otherwise."""
    if type(response) is not dict:
        raise Malformed("a response is not an object")
    status, body = response.get("status"), response.get("body", "")
    if status is not None and type(status) is not int:
        raise Malformed("a status is not an integer")
    if type(body) is not str:
        raise Malformed("a body is not text")
    return status, body


def json_body(response: object) -> object:
    _, body = response_parts(response)
    try:
        return json.loads(body)
    except ValueError:
        return None


def decision_problem(response: object) -> str | None:
    """Why a /predict response is not a well-formed decision, or None when it is one."""
    status, _ = response_parts(response)
    if status is None:
        return f"no answer ({quote(response.get('error', 'connection failed'), 80)})"
    if status != 200:
        return f"status {status}"
    body = json_body(response)
    if type(body) is not dict:
        return "the body is not a JSON object"
    if set(body) != {"approved", "probability", "model_version"}:
        return f"the body has keys {quote(sorted(body))}, expected approved, probability, model_version"
    if type(body["approved"]) is not bool:
        return "`approved` is not a boolean"
    if not is_number(body["probability"]) or not 0 <= body["probability"] <= 1:
        return "`probability` is not a number in [0, 1]"
    if type(body["model_version"]) is not str:
        return "`model_version` is not a string"
    return None


def draw_applicants(rng: random.Random, count: int) -> list[dict]:
    """Plausible applicants, drawn at collection time (never seen by the student's code before)."""
    rows = []
    for _ in range(count):
        rows.append(
            {
                "income": round(min(4_000_000.0, max(1_000.0, rng.lognormvariate(math.log(55_000), 0.45))), 2),
                "debt_ratio": round(rng.betavariate(2, 5), 4),
                "credit_score": round(min(850.0, max(300.0, rng.gauss(680, 70))), 1),
                "employment_years": round(min(45.0, rng.gammavariate(2.0, 4.0)), 1),
                "loan_amount": round(min(1_900_000.0, max(500.0, rng.lognormvariate(math.log(15_000), 0.6))), 2),
            }
        )
    return rows


def _list(value: object, length: int | None = None) -> list:
    if type(value) is not list or (length is not None and len(value) != length):
        raise Malformed("a list of the wrong shape")
    return value


# ---------------------------------------------------------------------------------------
# cp_a_tamper: a tampered or unknown artifact is refused, never unpickled
# ---------------------------------------------------------------------------------------

TAMPER_CASES = ("genuine", "appended", "swapped", "unknown")
PAYLOAD_CASES = ("swapped", "unknown")

# Grader code run in the kernel (style of autograde.collect._CALL_BODY: ``ns``, ``args``,
# sets ``result``). 1: a fresh folder with copies of the genuine bundle and manifest, and a copy
# whose bytes were appended to; answers the folder's absolute path as the kernel sees it.
TAMPER_PREPARE = r'''
    import os, shutil
    bundle, manifest = args["bundle"], args["manifest"]
    for name in (bundle, manifest):
        if not os.path.isfile(name):
            raise FileNotFoundError(name + " was not found in the working directory: run the bundle cells first")
    folder = os.path.abspath(args["folder"])
    for case in args["cases"]:
        os.makedirs(os.path.join(folder, case))
    shutil.copyfile(bundle, os.path.join(folder, "genuine", bundle))
    shutil.copyfile(manifest, os.path.join(folder, "genuine", manifest))
    with open(bundle, "rb") as handle:
        data = handle.read()
    with open(os.path.join(folder, "appended", bundle), "wb") as handle:
        handle.write(data + b"tampered")
    shutil.copyfile(manifest, os.path.join(folder, "appended", manifest))
    shutil.copyfile(manifest, os.path.join(folder, "swapped", manifest))
    result = folder
'''

# 2: write the grader-built payloads under the bundle's name, call the student's loader on each
# case, answer what it returned or raised (as data).
TAMPER_RUN = r'''
    import base64, os, pathlib
    loader = ns.get("load_verified_bundle")
    if loader is None or not callable(loader):
        raise NameError("load_verified_bundle is not defined: run the cell that defines it first")
    folder, bundle, manifest = args["folder"], args["bundle"], args["manifest"]
    for case, text in args["payloads"].items():
        with open(os.path.join(folder, case, bundle), "wb") as handle:
            handle.write(base64.b64decode(text))
    result = {}
    for case in args["cases"]:
        try:
            loaded = loader(pathlib.Path(folder, case, bundle), pathlib.Path(folder, case, manifest))
        except Exception as exc:
            result[case] = {"raised": type(exc).__name__, "message": str(exc)[:300]}
        else:
            result[case] = {"raised": None, "returned": type(loaded).__name__,
                            "has_pipeline": type(loaded) is dict and "pipeline" in loaded}
        loaded = None
'''

# 3: remove the folder.
TAMPER_CLEANUP = r'''
    import shutil
    shutil.rmtree(args["folder"], ignore_errors=True)
    result = True
'''


class _CreatesFile:
    """Pickles into 'call open(path, "x")': a file appears when, and only when, it is unpickled.
    Only ever dumped here, in the grader; loaded (or not) by the student's loader in the kernel."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "x"))


def payload_bytes(marker_path: str) -> bytes:
    return pickle.dumps(_CreatesFile(marker_path), protocol=4)


def collect_tamper(session) -> dict:
    token = f"{session.rng.getrandbits(64):016x}"
    folder = f"autograde-a1-{token}"
    markers = {case: f"{case}-payload-ran-{token}" for case in PAYLOAD_CASES}
    common = {"bundle": BUNDLE_NAME, "manifest": MANIFEST_NAME, "cases": list(TAMPER_CASES)}
    folder_abs = folder  # until the kernel says where it is
    try:
        answer = session.kernel(TAMPER_PREPARE, {**common, "folder": folder})
        if type(answer) is not str:
            raise Unavailable("the notebook did not prepare the check's folder")
        folder_abs = answer
        # The kernel must have written where the grader looks: its working directory is the run folder.
        if session.read_file(f"{folder}/genuine/{BUNDLE_NAME}", max_bytes=1) is None:
            return {"outside_run_folder": True}
        payloads = {
            case: base64.b64encode(payload_bytes(posixpath.join(folder_abs, markers[case]))).decode("ascii")
            for case in PAYLOAD_CASES
        }
        cases = session.kernel(TAMPER_RUN, {**common, "folder": folder_abs, "payloads": payloads})
        payload_ran = {case: session.read_file(f"{folder}/{markers[case]}", max_bytes=1) is not None
                       for case in PAYLOAD_CASES}
    finally:
        try:
            session.kernel(TAMPER_CLEANUP, {"folder": folder_abs})
        except Unavailable:
            pass
    return {"cases": cases, "payload_ran": payload_ran}


def _outcome(cases: dict, case: str) -> dict:
    outcome = cases[case]
    if type(outcome) is not dict:
        raise Malformed("a case is not an object")
    raised = outcome.get("raised")
    if raised is not None and type(raised) is not str:
        raise Malformed("an exception name is not text")
    return outcome


def _refused_with_message(outcome: dict) -> bool:
    message = outcome.get("message")
    return outcome.get("raised") is not None and type(message) is str and bool(message.strip())


@robust
def judge_tamper(evidence: dict) -> Verdict:
    if evidence.get("outside_run_folder"):
        return Verdict.fail("the notebook's working directory is not the folder it was started in "
                            "(did a cell change directory?): the check could not place its files")
    cases, ran = evidence["cases"], evidence["payload_ran"]
    if type(cases) is not dict or type(ran) is not dict:
        raise Malformed("cases")
    outcomes = {case: _outcome(cases, case) for case in TAMPER_CASES}
    if any(o.get("raised") == "NotImplementedError" for o in outcomes.values()):
        return Verdict.fail("load_verified_bundle is not implemented yet")
    genuine = outcomes["genuine"]
    if genuine.get("raised") is not None:
        return Verdict.fail(f"load_verified_bundle refused the genuine, untouched bundle: "
                            f"{quote(genuine['raised'], 40)} {quote(genuine.get('message', ''))}")
    if genuine.get("has_pipeline") is not True:
        return Verdict.fail("load_verified_bundle should return the loaded bundle (the dict with the pipeline) "
                            f"for a genuine file; it returned a {quote(genuine.get('returned'), 40)}")
    appended = outcomes["appended"]
    if appended.get("raised") is None:
        return Verdict.fail("load_verified_bundle loaded a copy whose bytes were changed after the manifest was written")
    if not _refused_with_message(appended):
        return Verdict.fail("load_verified_bundle refused the tampered copy, but with an empty error message")
    for case, what in (("swapped", "a swapped-in file"), ("unknown", "an artifact that has no manifest")):
        if ran[case] is not False:
            return Verdict.fail(f"load_verified_bundle unpickled {what}: the code inside it ran")
        if not _refused_with_message(outcomes[case]):
            return Verdict.fail(f"load_verified_bundle did not refuse {what} with a clear message")
    return Verdict.ok("genuine bundle loaded; tampered, swapped and unknown artifacts refused before unpickling")


# ---------------------------------------------------------------------------------------
# cp_a_load_once: loads counted from outside, per request
# ---------------------------------------------------------------------------------------


def is_model_file(path: str) -> bool:
    return os.path.basename(path) == BUNDLE_NAME or bool(MODEL_FILE.search(path))


def count_loads(session, app: str, bodies: list[dict]) -> dict:
    """Serve ``app``, send one request per body, and count the model files opened while each
    request was served (each in its own counting block)."""
    loads, files, responses = [], {}, []
    with session.serve(app) as server:
        for body in bodies:
            with session.count_opens() as opened:
                (response,) = session.http(server, [post(json.dumps(body))])
            models = {path: count for path, count in opened.items() if is_model_file(path)}
            for path, count in models.items():
                files[path] = files.get(path, 0) + count
            loads.append(sum(models.values()))
            responses.append(response)
    return {"loads": loads, "files": files, "responses": responses}


def collect_load_once(session) -> dict:
    bodies = draw_applicants(session.rng, LOAD_ONCE_REQUESTS)
    return {
        "requests": LOAD_ONCE_REQUESTS,
        "slow": count_loads(session, "slow_app", bodies),
        "fast": count_loads(session, "fast_app", bodies),
    }


def _files_text(files: dict) -> str:
    return ", ".join(f"{quote(path, 60)} x{count}" for path, count in sorted(files.items())[:4])


@robust
def judge_load_once(evidence: dict) -> Verdict:
    n = evidence["requests"]
    if type(n) is not int or n < 1:
        raise Malformed("requests")
    observed = {}
    for name in ("slow", "fast"):
        part = evidence[name]
        if type(part) is not dict or type(part.get("files")) is not dict:
            raise Malformed(name)
        loads = _list(part["loads"], n)
        if not all(type(count) is int and count >= 0 for count in loads):
            raise Malformed("loads")
        for response in _list(part["responses"], n):
            problem = decision_problem(response)
            if problem:
                return Verdict.fail(f"{name}_app did not answer every valid request with a decision: {problem}")
        observed[name] = (sum(1 for count in loads if count > 0), sum(loads), part["files"])
    slow_requests, _, _ = observed["slow"]
    fast_requests, fast_loads, fast_files = observed["fast"]
    if slow_requests != n:
        return Verdict.fail(f"the wrong-way endpoint should read {BUNDLE_NAME} on every request: it did during "
                            f"{slow_requests} of {n} requests (did you change slow_app?)")
    if fast_loads:
        return Verdict.fail(f"your load-once endpoint still loads the model while serving: model files were opened "
                            f"during {fast_requests} of {n} requests ({_files_text(fast_files)}); load the bundle "
                            "once, when the app is built, and reuse it")
    return Verdict.ok(f"{n} requests: the wrong-way endpoint loaded the model during every one, "
                      "the load-once endpoint during none")


# ---------------------------------------------------------------------------------------
# cp_a_request_shape: the request JSON is an object with the five named numeric fields
# ---------------------------------------------------------------------------------------


def collect_request_shape(session) -> dict:
    applicant = draw_applicants(session.rng, 1)[0]
    with session.serve("app") as server:
        schema, decision = session.http(
            server, [{"method": "GET", "path": "/openapi.json", "body": None}, post(json.dumps(applicant))]
        )
    return {"applicant": applicant, "openapi": schema, "decision": decision}


def is_request_body(answer: object) -> bool:
    """checkpoint_a3's check: an object with exactly the five named fields, each a finite number."""
    return type(answer) is dict and set(answer) == set(FEATURES) and all(is_number(answer[n]) for n in FEATURES)


def request_schema(openapi: object) -> dict:
    """The JSON schema of POST /predict's body, with a top-level $ref resolved ({} when absent)."""
    try:
        schema = openapi["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        ref = schema.get("$ref")
        if ref:
            schema = openapi["components"]["schemas"][str(ref).rsplit("/", 1)[-1]]
    except (KeyError, TypeError, AttributeError):
        return {}
    return schema if type(schema) is dict else {}


def property_is_number(spec: object) -> bool:
    if type(spec) is not dict:
        return False
    if spec.get("type") in ("number", "integer"):
        return True
    options = spec.get("anyOf") or spec.get("oneOf") or []
    return type(options) is list and bool(options) and all(
        type(opt) is dict and opt.get("type") in ("number", "integer") for opt in options
    )


def api_shape_problem(openapi_response: object, decision_response: object) -> str | None:
    status, _ = response_parts(openapi_response)
    openapi = json_body(openapi_response)
    if status != 200 or type(openapi) is not dict:
        return "the app does not serve /openapi.json"
    schema = request_schema(openapi)
    if not schema:
        return "the app's OpenAPI schema has no JSON request body for POST /predict"
    properties = schema.get("properties")
    properties = properties if type(properties) is dict else {}
    if set(properties) != set(FEATURES):
        return f"the request model's fields are {quote(sorted(properties))}; expected exactly the five features"
    if not all(property_is_number(properties[name]) for name in FEATURES):
        return "every field of the request model should be a number (float)"
    required = schema.get("required")
    if type(required) is not list or set(map(str, required)) != set(FEATURES):
        return "all five fields of the request model should be required"
    if schema.get("additionalProperties") is not False:
        return "the request model should forbid unknown fields (extra='forbid')"
    problem = decision_problem(decision_response)
    if problem:
        return f"POST /predict with a plausible applicant did not return a decision: {problem}"
    return None


@robust
def judge_request_shape(evidence: dict) -> Verdict:
    api_problem = api_shape_problem(evidence["openapi"], evidence["decision"])
    if api_problem:
        return Verdict.fail(api_problem)
    return Verdict.ok("the API's request body is an object with five named numeric fields, and it answers one")


# ---------------------------------------------------------------------------------------
# cp_a_negative_income: every impossible value gets 422 naming the field, never 500
# ---------------------------------------------------------------------------------------


def body_with(field: str, literal: str | None, extra: str = "") -> str:
    """VALID_APPLICANT as raw JSON text with ``field`` set to ``literal`` (None: left out)."""
    parts = []
    for name, value in VALID_APPLICANT.items():
        if name == field:
            if literal is not None:
                parts.append(f'"{name}": {literal}')
        else:
            parts.append(f'"{name}": {json.dumps(value)}')
    if extra:
        parts.append(extra)
    return "{" + ", ".join(parts) + "}"


# (description, raw body, field the 422 must name; None: a whole-body problem)
IMPOSSIBLE_REQUESTS: list[tuple[str, str, str | None]] = [
    ("negative income", body_with("income", "-5000"), "income"),
    ("income of 10^15", body_with("income", "1e15"), "income"),
    ("negative debt_ratio", body_with("debt_ratio", "-0.1"), "debt_ratio"),
    ("debt_ratio above 1", body_with("debt_ratio", "1.5"), "debt_ratio"),
    ("credit_score below 300", body_with("credit_score", "299.5"), "credit_score"),
    ("credit_score above 850", body_with("credit_score", "851"), "credit_score"),
    ("negative employment_years", body_with("employment_years", "-1"), "employment_years"),
    ("200 employment_years", body_with("employment_years", "200"), "employment_years"),
    ("negative loan_amount", body_with("loan_amount", "-20000"), "loan_amount"),
    ("loan_amount of 10^15", body_with("loan_amount", "1e15"), "loan_amount"),
    ("NaN literal", body_with("income", "NaN"), "income"),
    ("Infinity literal", body_with("loan_amount", "Infinity"), "loan_amount"),
    ("-Infinity literal", body_with("credit_score", "-Infinity"), "credit_score"),
    ("1e309 (overflows to inf)", body_with("income", "1e309"), "income"),
    ("-1e309 (overflows to -inf)", body_with("debt_ratio", "-1e309"), "debt_ratio"),
    ("a 400-digit integer", body_with("loan_amount", "1" + "0" * 400), "loan_amount"),
    ('the string "inf"', body_with("income", '"inf"'), "income"),
    ('the string "nan"', body_with("debt_ratio", '"nan"'), "debt_ratio"),
    ('the string "-Infinity"', body_with("employment_years", '"-Infinity"'), "employment_years"),
    ("a numeric string", body_with("income", '"60000"'), "income"),
    ("a boolean", body_with("employment_years", "true"), "employment_years"),
    ("null", body_with("credit_score", "null"), "credit_score"),
    ("a list", body_with("loan_amount", "[18000]"), "loan_amount"),
    ("an object", body_with("income", '{"amount": 62000}'), "income"),
    ("a missing field", body_with("loan_amount", None), "loan_amount"),
    ("an unknown field", body_with("", None, '"zip_code": 10001'), "zip_code"),
    ("a JSON array body", "[62000, 0.28, 710, 6, 18000]", None),
    ("an empty body", "", None),
    ("invalid JSON", '{"income": 62000,', None),
]

# Plausible applicants every sensible set of bounds accepts (integers included: JSON has
# no separate integer type, so 60000 and 60000.0 are the same number to a client).
VALID_REQUESTS: list[tuple[str, str]] = [
    ("a typical applicant", json.dumps(VALID_APPLICANT)),
    ("integers and boundary values", json.dumps(
        {"income": 250000, "debt_ratio": 1, "credit_score": 850, "employment_years": 35, "loan_amount": 400000})),
    ("lower boundary values", json.dumps(
        {"income": 18000, "debt_ratio": 0.0, "credit_score": 300, "employment_years": 0, "loan_amount": 1000})),
]
RANDOM_VALID_REQUESTS = 3


def collect_validation(session) -> dict:
    valid = list(VALID_REQUESTS) + [("a plausible applicant", json.dumps(row))
                                    for row in draw_applicants(session.rng, RANDOM_VALID_REQUESTS)]
    with session.serve("app") as server:
        responses = session.http(server, [post(body) for _, body, _ in IMPOSSIBLE_REQUESTS]
                                 + [post(body) for _, body in valid])
    cut = len(IMPOSSIBLE_REQUESTS)
    return {
        "impossible": [{"description": d, "field": f, "response": r}
                       for (d, _, f), r in zip(IMPOSSIBLE_REQUESTS, responses[:cut], strict=True)],
        "valid": [{"description": d, "body": b, "response": r}
                  for (d, b), r in zip(valid, responses[cut:], strict=True)],
    }


def names_field(body: object, field: str | None) -> bool:
    """True when a 422 body names ``field`` and gives a reason for it."""
    if type(body) is not dict:
        return False
    detail = body.get("detail")
    if type(detail) is not list or not detail:
        return False
    for item in detail:
        if type(item) is not dict:
            continue
        reason = item.get("msg") or item.get("reason")
        if type(reason) is not str or not reason.strip():
            continue
        if field is None:
            return True
        loc = item.get("loc")
        named = [str(part) for part in loc] if type(loc) is list else []
        if field in named or item.get("field") == field:
            return True
    return False


def validation_problems(impossible: list, valid: list) -> list[str]:
    """The problems found in the answers (an empty list means all is well)."""
    problems = []
    for case in impossible:
        description, field, response = str(case["description"]), case["field"], case["response"]
        if field is not None and type(field) is not str:
            raise Malformed("field")
        status, _ = response_parts(response)
        if status is None:
            problems.append(f"{description}: no answer ({quote(response.get('error', 'connection failed'), 80)})")
        elif status >= 500:
            problems.append(f"{description}: got {status}, a server error; it must be rejected with 422")
        elif status != 422:
            problems.append(f"{description}: got {status}, expected 422")
        elif not names_field(json_body(response), field):
            where = f"name the field `{field}`" if field else "give a reason"
            problems.append(f"{description}: the 422 answer does not {where} with a reason")
    for case in valid:
        problem = decision_problem(case["response"])
        if problem:
            problems.append(f"a valid request ({case['description']}) was not answered with a decision: {problem}")
    return problems


@robust
def judge_validation(evidence: dict) -> Verdict:
    impossible, valid = _list(evidence["impossible"]), _list(evidence["valid"])
    if not impossible or not valid or not all(type(case) is dict for case in impossible + valid):
        raise Malformed("cases")
    problems = validation_problems(impossible, valid)
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        return Verdict.fail(f"{len(problems)} request(s) were not handled right: {shown}")
    return Verdict.ok(f"{len(impossible)} impossible requests got 422 naming the field; valid ones got a decision")


# ---------------------------------------------------------------------------------------
# cp_a_no_skew: served probabilities equal the bundle's predict_proba on held-out applicants
# ---------------------------------------------------------------------------------------


def collect_no_skew(session) -> dict:
    rows = draw_applicants(session.rng, NO_SKEW_APPLICANTS)
    with session.serve("app") as server:
        responses = session.http(server, [post(json.dumps(row)) for row in rows])
    try:
        offline = session.probe(BUNDLE_PROBE, {"bundle": BUNDLE_NAME, "manifest": MANIFEST_NAME, "rows": rows})
    except Unavailable as exc:
        offline = {"error": str(exc)}
    return {"rows": rows, "responses": responses, "offline": offline}


@robust
def judge_no_skew(evidence: dict) -> Verdict:
    rows = _list(evidence["rows"])
    responses = _list(evidence["responses"], len(rows))
    offline = evidence["offline"]
    if type(offline) is not dict:
        raise Malformed("offline")
    if "error" in offline:
        return Verdict.fail(f"the check could not load the bundle from disk: {quote(offline['error'], 200)}")
    names = _list(offline["feature_names"])
    if tuple(names) != FEATURES:
        return Verdict.fail(f"the bundle's feature schema is {quote(names)}; expected {list(FEATURES)} in this order")
    probabilities = _list(offline["probabilities"], len(rows))
    version = offline["version"]
    mismatches = []
    for index, (response, expected) in enumerate(zip(responses, probabilities, strict=True)):
        if not is_number(expected):
            raise Malformed("probability")
        problem = decision_problem(response)
        if problem:
            return Verdict.fail(f"held-out applicant {index} was not answered with a decision: {problem}")
        body = json_body(response)
        if body["model_version"] != version:
            return Verdict.fail(f"the API says model_version {quote(body['model_version'], 40)}, "
                                f"the bundle on disk is {quote(version, 40)}")
        if abs(body["probability"] - expected) > SKEW_TOLERANCE:
            mismatches.append((index, body["probability"], expected))
    if mismatches:
        index, served, expected = mismatches[0]
        return Verdict.fail(
            f"{len(mismatches)} of {len(rows)} served probabilities differ from the bundle's predict_proba "
            f"(held-out applicant {quote(rows[index], 200)}: served {served:.6f}, offline {expected:.6f}): "
            "the API does not feed the model what it was trained on"
        )
    return Verdict.ok(f"{len(rows)} held-out applicants: served probability == offline predict_proba")


# ---------------------------------------------------------------------------------------
# declarations
# ---------------------------------------------------------------------------------------

CHECKPOINTS = [
    Checkpoint(
        "cp_a_tamper", collect_tamper, judge_tamper,
        prediction=Prediction("checkpoint_a1", accept=[False], points=0.5,
                              hint="True or False"),
        description="the verified loader loads the genuine bundle and refuses tampered or unknown artifacts "
                    "without unpickling them",
    ),
    Checkpoint(
        "cp_a_load_once", collect_load_once, judge_load_once,
        prediction=Prediction("checkpoint_a2", accept=["a"], points=0.5,
                              hint='"a", "b" or "c": the range of the median-latency ratio the notebook printed'),
        description="model loads while serving, counted from outside: every request the wrong way, none load-once",
    ),
    Checkpoint(
        "cp_a_request_shape", collect_request_shape, judge_request_shape,
        prediction=Prediction("checkpoint_a3", points=0.25, check=is_request_body,
                              hint="a dict with every field the API needs, each a number, and nothing else"),
        description="the API's request body is an object with the five named numeric fields, and its schema says so",
    ),
    Checkpoint(
        "cp_a_negative_income", collect_validation, judge_validation,
        prediction=Prediction("checkpoint_a4", accept=[422], points=0.5, hint="an HTTP status code"),
        description="every impossible value gets 422 naming the field, never 500; valid requests get a decision",
    ),
    Checkpoint(
        "cp_a_no_skew", collect_no_skew, judge_no_skew,
        prediction=Prediction("checkpoint_a5", accept=[0], points=0.5, hint="how many of 25 differ?"),
        description="served probabilities equal the bundle's predict_proba on held-out applicants",
    ),
]
