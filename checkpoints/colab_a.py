"""Hidden checkpoint verifiers for Colab A, the FastAPI credit-scoring notebook.

Every verifier checks two things: the student's recorded prediction, and the real behaviour
of the student's code, observed from outside the kernel wherever that is possible:

- HTTP behaviour is observed by a fresh process (``checkpoints.colab_a_probe`` via
  ``run_probe``) acting as the client of a server this module starts itself on a free port;
- the offline probabilities are computed by that fresh process from the bundle on disk;
- model loads are counted by a Python audit hook (``sys.addaudithook``) that sees every real
  file open and every unpickling in the kernel; an audit hook cannot be removed, and no
  kernel variable a student could rebind feeds the count.

Public contract of the notebook these verifiers rely on: the working directory holds
``credit_model.joblib`` (a joblib dump of a dict with ``pipeline``, ``feature_names``,
``provenance`` and ``version``) and ``credit_model.json`` (a manifest with ``artifact`` and
``sha256``); the final app answers ``POST /predict`` with
``{"approved": bool, "probability": P(default) in [0, 1], "model_version": str}``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from checkpoints.common import CheckpointFailed, expect, free_port, passed, run_probe

FEATURES = ("income", "debt_ratio", "credit_score", "employment_years", "loan_amount")
BUNDLE_NAME = "credit_model.joblib"
MANIFEST_NAME = "credit_model.json"
PROBE = "checkpoints.colab_a_probe"
LOAD_ONCE_REQUESTS = 20

VALID_APPLICANT = {
    "income": 62000.0,
    "debt_ratio": 0.28,
    "credit_score": 710.0,
    "employment_years": 6.0,
    "loan_amount": 18000.0,
}


# ---------------------------------------------------------------------------------------
# serving a student's app, from a thread this module owns
# ---------------------------------------------------------------------------------------


def _require_app(app: object, name: str = "app") -> None:
    expect(app is not None, f"no `{name}` found: run the cells that build it first")
    expect(callable(app), f"`{name}` is not a web app (got {type(app).__name__}); it should be a FastAPI app")


@contextlib.contextmanager
def serve(app: object, name: str = "app", timeout_s: float = 15.0) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 at a free port in a daemon thread; yield its base URL."""
    _require_app(app, name)
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", access_log=False)
    server = uvicorn.Server(config)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            server.run()
        except BaseException as exc:  # SystemExit from a failed start included: report, not stderr
            failures.append(exc)

    thread = threading.Thread(target=run, name=f"checkpoint-a-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(5)
            raise CheckpointFailed(f"`{name}` could not be served (the server did not start)")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def _probe_http(base_url: str, requests: list[dict]) -> list[dict]:
    answer = run_probe(PROBE, {"base_url": base_url, "requests": requests})
    return answer["responses"]


def _post(body: str, content_type: str = "application/json") -> dict:
    return {"method": "POST", "path": "/predict", "body": body, "content_type": content_type}


def _json_body(response: dict) -> object:
    try:
        return json.loads(response.get("body") or "")
    except ValueError:
        return None


def _decision_problem(response: dict) -> str | None:
    """Why a /predict response is not a well-formed decision, or None when it is one."""
    if response.get("status") != 200:
        return f"status {response.get('status')}"
    body = _json_body(response)
    if not isinstance(body, dict):
        return "the body is not a JSON object"
    if set(body) != {"approved", "probability", "model_version"}:
        return f"the body has keys {sorted(body)}, expected approved, probability, model_version"
    if not isinstance(body["approved"], bool):
        return "`approved` is not a boolean"
    probability = body["probability"]
    if isinstance(probability, bool) or not isinstance(probability, (int, float)) or not 0 <= probability <= 1:
        return "`probability` is not a number in [0, 1]"
    if not isinstance(body["model_version"], str):
        return "`model_version` is not a string"
    return None


def _paths(bundle_path: str | os.PathLike | None, manifest_path: str | os.PathLike | None) -> tuple[Path, Path]:
    bundle = Path(bundle_path) if bundle_path is not None else Path.cwd() / BUNDLE_NAME
    manifest = Path(manifest_path) if manifest_path is not None else bundle.with_name(MANIFEST_NAME)
    expect(bundle.is_file(), f"{bundle.name} was not found in the working directory: run the bundle cells")
    expect(manifest.is_file(), f"{manifest.name} was not found in the working directory: run the bundle cells")
    return bundle.resolve(), manifest.resolve()


# ---------------------------------------------------------------------------------------
# checkpoint: the shape of the request JSON
# ---------------------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _request_schema(openapi: dict) -> dict:
    """The JSON schema of POST /predict's body, with a top-level $ref resolved."""
    try:
        schema = openapi["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    except (KeyError, TypeError):
        raise CheckpointFailed("the app's OpenAPI schema has no JSON request body for POST /predict") from None
    ref = schema.get("$ref") if isinstance(schema, dict) else None
    if ref:
        name = ref.rsplit("/", 1)[-1]
        schema = openapi.get("components", {}).get("schemas", {}).get(name, {})
    return schema


def _property_is_number(spec: dict) -> bool:
    if spec.get("type") in ("number", "integer"):
        return True
    options = spec.get("anyOf") or spec.get("oneOf") or []
    return bool(options) and all(opt.get("type") in ("number", "integer") for opt in options)


def check_request_shape(answer: object, app: object) -> None:
    """checkpoint_a3: the request JSON is an object with the five named numeric fields."""
    expect(answer is not None, "checkpoint_a3 is not set: write an example request body as a dict")
    expect(isinstance(answer, dict), f"checkpoint_a3 should be a dict (a JSON object), not {type(answer).__name__}")
    missing = [name for name in FEATURES if name not in answer]
    unknown = sorted(str(key) for key in answer if key not in FEATURES)
    expect(not missing, f"checkpoint_a3 is missing the field(s) {', '.join(missing)}")
    expect(not unknown, f"checkpoint_a3 has field(s) the model does not use: {', '.join(unknown)}")
    not_numbers = [name for name in FEATURES if not _is_number(answer[name])]
    expect(not not_numbers, f"checkpoint_a3: {', '.join(not_numbers)} should be finite numbers")

    with serve(app) as url:
        schema_response, example_response = _probe_http(
            url,
            [{"method": "GET", "path": "/openapi.json", "body": None}, _post(json.dumps(answer))],
        )
    openapi = _json_body(schema_response)
    expect(schema_response.get("status") == 200 and isinstance(openapi, dict), "the app does not serve /openapi.json")
    schema = _request_schema(openapi)
    properties = schema.get("properties", {}) if isinstance(schema, dict) else {}
    expect(
        set(properties) == set(FEATURES),
        f"the request model's fields are {sorted(properties)}; expected exactly the five features",
    )
    expect(
        all(_property_is_number(properties[name]) for name in FEATURES),
        "every field of the request model should be a number (float)",
    )
    expect(set(schema.get("required", [])) == set(FEATURES), "all five fields of the request model should be required")
    expect(
        schema.get("additionalProperties") is False, "the request model should forbid unknown fields (extra='forbid')"
    )
    problem = _decision_problem(example_response)
    if problem and example_response.get("status") == 422:
        problem = "your example request was rejected with 422: " + (example_response.get("body") or "")[:300]
    expect(problem is None, f"POST /predict with your example did not return a decision: {problem}")
    passed("a3", "an object with five named numeric fields, accepted by the API")


# ---------------------------------------------------------------------------------------
# checkpoint: impossible values get 422 naming the field and the reason, never 500
# ---------------------------------------------------------------------------------------


def _body_with(field: str, literal: str | None, extra: str = "") -> str:
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
    ("negative income", _body_with("income", "-5000"), "income"),
    ("income of 10^15", _body_with("income", "1e15"), "income"),
    ("negative debt_ratio", _body_with("debt_ratio", "-0.1"), "debt_ratio"),
    ("debt_ratio above 1", _body_with("debt_ratio", "1.5"), "debt_ratio"),
    ("credit_score below 300", _body_with("credit_score", "299.5"), "credit_score"),
    ("credit_score above 850", _body_with("credit_score", "851"), "credit_score"),
    ("negative employment_years", _body_with("employment_years", "-1"), "employment_years"),
    ("200 employment_years", _body_with("employment_years", "200"), "employment_years"),
    ("negative loan_amount", _body_with("loan_amount", "-20000"), "loan_amount"),
    ("loan_amount of 10^15", _body_with("loan_amount", "1e15"), "loan_amount"),
    ("NaN literal", _body_with("income", "NaN"), "income"),
    ("Infinity literal", _body_with("loan_amount", "Infinity"), "loan_amount"),
    ("-Infinity literal", _body_with("credit_score", "-Infinity"), "credit_score"),
    ("1e309 (overflows to inf)", _body_with("income", "1e309"), "income"),
    ("-1e309 (overflows to -inf)", _body_with("debt_ratio", "-1e309"), "debt_ratio"),
    ("a 400-digit integer", _body_with("loan_amount", "1" + "0" * 400), "loan_amount"),
    ('the string "inf"', _body_with("income", '"inf"'), "income"),
    ('the string "nan"', _body_with("debt_ratio", '"nan"'), "debt_ratio"),
    ('the string "-Infinity"', _body_with("employment_years", '"-Infinity"'), "employment_years"),
    ("a numeric string", _body_with("income", '"60000"'), "income"),
    ("a boolean", _body_with("employment_years", "true"), "employment_years"),
    ("null", _body_with("credit_score", "null"), "credit_score"),
    ("a list", _body_with("loan_amount", "[18000]"), "loan_amount"),
    ("an object", _body_with("income", '{"amount": 62000}'), "income"),
    ("a missing field", _body_with("loan_amount", None), "loan_amount"),
    ("an unknown field", _body_with("", None, '"zip_code": 10001'), "zip_code"),
    ("a JSON array body", "[62000, 0.28, 710, 6, 18000]", None),
    ("an empty body", "", None),
    ("invalid JSON", '{"income": 62000,', None),
]

# Plausible applicants every sensible set of bounds accepts (integers included: JSON has
# no separate integer type, so 60000 and 60000.0 are the same number to a client).
VALID_REQUESTS: list[tuple[str, str]] = [
    ("a typical applicant", json.dumps(VALID_APPLICANT)),
    (
        "integers and boundary values",
        json.dumps(
            {"income": 250000, "debt_ratio": 1, "credit_score": 850, "employment_years": 35, "loan_amount": 400000}
        ),
    ),
    (
        "lower boundary values",
        json.dumps(
            {"income": 18000, "debt_ratio": 0.0, "credit_score": 300, "employment_years": 0, "loan_amount": 1000}
        ),
    ),
]


def _names_field(body: object, field: str | None) -> bool:
    """True when a 422 body names ``field`` and gives a reason for it."""
    if not isinstance(body, dict):
        return False
    detail = body.get("detail")
    if not isinstance(detail, list) or not detail:
        return False
    for item in detail:
        if not isinstance(item, dict):
            continue
        reason = item.get("msg") or item.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            continue
        if field is None:
            return True
        loc = item.get("loc") or []
        named = [str(part) for part in loc] if isinstance(loc, list) else []
        if field in named or item.get("field") == field:
            return True
    return False


def judge_validation(impossible: list[dict], valid: list[dict]) -> list[str]:
    """The problems found in the probe's responses (an empty list means all is well)."""
    problems = []
    for (description, _body, field), response in zip(IMPOSSIBLE_REQUESTS, impossible):
        status = response.get("status")
        if status is None:
            problems.append(f"{description}: no answer ({response.get('error', 'connection failed')})")
        elif status >= 500:
            problems.append(f"{description}: got {status}, a server error; it must be rejected with 422")
        elif status != 422:
            problems.append(f"{description}: got {status}, expected 422")
        elif not _names_field(_json_body(response), field):
            where = f"name the field `{field}`" if field else "give a reason"
            problems.append(f"{description}: the 422 answer does not {where} with a reason")
    for (description, _body), response in zip(VALID_REQUESTS, valid):
        problem = _decision_problem(response)
        if problem:
            problems.append(f"a valid request ({description}) was not answered with a decision: {problem}")
    return problems


def check_validation(answer: object, app: object) -> None:
    """checkpoint_a4: a negative income gets 422, and so does every other impossible value."""
    expect(answer is not None, "checkpoint_a4 is not set: write the status code you expect")
    expect(
        isinstance(answer, int) and not isinstance(answer, bool) and answer == 422,
        "checkpoint_a4 does not match what the API answers to a negative income",
    )
    with serve(app) as url:
        responses = _probe_http(
            url, [_post(body) for _, body, _ in IMPOSSIBLE_REQUESTS] + [_post(body) for _, body in VALID_REQUESTS]
        )
    problems = judge_validation(responses[: len(IMPOSSIBLE_REQUESTS)], responses[len(IMPOSSIBLE_REQUESTS) :])
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        raise CheckpointFailed(f"{len(problems)} request(s) were not handled right: {shown}")
    passed("a4", f"{len(IMPOSSIBLE_REQUESTS)} impossible requests got 422 naming the field; valid ones got a decision")


# ---------------------------------------------------------------------------------------
# checkpoint: no training-serving skew
# ---------------------------------------------------------------------------------------


def held_out_applicants(count: int = 25, seed: int = 20260607) -> list[dict]:
    """Plausible applicants drawn here, never seen by the student's code before grading."""
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        rows.append(
            {
                "income": round(rng.lognormvariate(math.log(55_000), 0.45), 2),
                "debt_ratio": round(rng.betavariate(2, 5), 4),
                "credit_score": round(min(850.0, max(300.0, rng.gauss(680, 70))), 1),
                "employment_years": round(min(45.0, rng.gammavariate(2.0, 4.0)), 1),
                "loan_amount": round(rng.lognormvariate(math.log(15_000), 0.6), 2),
            }
        )
    return rows


def check_no_skew(
    answer: object,
    app: object,
    bundle_path: str | os.PathLike | None = None,
    manifest_path: str | os.PathLike | None = None,
    tolerance: float = 1e-9,
) -> None:
    """checkpoint_a5: served probabilities equal the bundle's predict_proba, row for row."""
    expect(answer is not None, "checkpoint_a5 is not set: write how many probabilities you expect to differ")
    expect(
        isinstance(answer, int) and not isinstance(answer, bool) and answer == 0,
        "checkpoint_a5 does not match what the comparison shows",
    )
    bundle, manifest = _paths(bundle_path, manifest_path)
    rows = held_out_applicants()
    with serve(app) as url:
        report = run_probe(
            PROBE,
            {
                "base_url": url,
                "requests": [_post(json.dumps(row)) for row in rows],
                "bundle_path": str(bundle),
                "manifest_path": str(manifest),
                "rows": rows,
            },
        )
    expect("bundle" in report, f"the check could not load the bundle from disk: {report.get('bundle_error')}")
    offline = report["bundle"]
    expect(
        tuple(offline["feature_names"]) == FEATURES,
        f"the bundle's feature schema is {offline['feature_names']}; expected {list(FEATURES)} in this order",
    )
    mismatches = []
    for index, (response, expected) in enumerate(zip(report["responses"], offline["probabilities"])):
        problem = _decision_problem(response)
        expect(problem is None, f"held-out applicant {index} was not answered with a decision: {problem}")
        body = _json_body(response)
        if abs(body["probability"] - expected) > tolerance:
            mismatches.append((index, body["probability"], expected))
        expect(
            body["model_version"] == offline["version"],
            f"the API says model_version {body['model_version']!r}, the bundle on disk is {offline['version']!r}",
        )
    if mismatches:
        index, served, expected = mismatches[0]
        raise CheckpointFailed(
            f"{len(mismatches)} of {len(rows)} served probabilities differ from the bundle's predict_proba "
            f"(applicant {index}: served {served:.6f}, offline {expected:.6f}): the API does not feed the model "
            "what it was trained on"
        )
    passed("a5", f"{len(rows)} held-out applicants: served probability == offline predict_proba")


# ---------------------------------------------------------------------------------------
# checkpoint: load once, counted by an audit hook
# ---------------------------------------------------------------------------------------


class _LoadAuditor:
    """Counts, while active, real opens of one file and every unpickled global.

    Installed once per process with ``sys.addaudithook``; audit hooks cannot be removed,
    so nothing the student's code does later can switch it off.
    """

    def __init__(self) -> None:
        self.active = False
        self.target = ""
        self.target_name = ""
        self.opens = 0
        self.unpickled = 0

    def __call__(self, event: str, args: tuple) -> None:
        if not self.active:
            return
        try:
            if event == "open":
                path = args[0]
                if isinstance(path, int) or path is None:
                    return
                name = os.fsdecode(path)
                if os.path.basename(name) == self.target_name and os.path.realpath(name) == self.target:
                    self.opens += 1
            elif event == "pickle.find_class":
                self.unpickled += 1
        except Exception:  # an audit hook must never break the operation it observes
            pass

    @contextlib.contextmanager
    def counting(self, target: Path) -> Iterator[_LoadAuditor]:
        self.target, self.target_name = os.path.realpath(target), target.name
        self.opens = self.unpickled = 0
        self.active = True
        try:
            yield self
        finally:
            self.active = False


_AUDITOR: _LoadAuditor | None = None


def _auditor() -> _LoadAuditor:
    global _AUDITOR
    if _AUDITOR is None:
        _AUDITOR = _LoadAuditor()
        sys.addaudithook(_AUDITOR)
    return _AUDITOR


def count_loads(app: object, name: str, bundle: Path, n_requests: int) -> tuple[int, int, list[dict]]:
    """Serve ``app``, send ``n_requests`` valid requests from a fresh process, and return
    (opens of the bundle, unpickled globals, responses) observed during those requests only."""
    auditor = _auditor()
    with serve(app, name) as url:
        with auditor.counting(bundle):
            responses = _probe_http(url, [_post(json.dumps(VALID_APPLICANT))] * n_requests)
        opens, unpickled = auditor.opens, auditor.unpickled
    return opens, unpickled, responses


def check_load_once(
    answer: object,
    slow_app: object,
    fast_app: object,
    bundle_path: str | os.PathLike | None = None,
    n_requests: int = LOAD_ONCE_REQUESTS,
) -> None:
    """checkpoint_a2: during N requests the per-request endpoint loads the bundle N times,
    the load-once endpoint 0 times."""
    expect(answer is not None, "checkpoint_a2 is not set: write (wrong-way loads, load-once loads)")
    expect(
        isinstance(answer, (tuple, list))
        and len(answer) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in answer)
        and tuple(answer) == (n_requests, 0),
        "checkpoint_a2 does not match the number of loads the servers really perform",
    )
    bundle, _ = _paths(bundle_path, None)
    slow_opens, _, slow_responses = count_loads(slow_app, "slow_app", bundle, n_requests)
    fast_opens, fast_unpickled, fast_responses = count_loads(fast_app, "fast_app", bundle, n_requests)
    for name, responses in (("slow_app", slow_responses), ("fast_app", fast_responses)):
        bad = [r for r in responses if _decision_problem(r)]
        expect(
            not bad,
            f"{name} did not answer every valid request with a decision: {_decision_problem(bad[0]) if bad else ''}",
        )
    expect(
        slow_opens == n_requests,
        f"the wrong-way endpoint should read {bundle.name} on every request: it did {slow_opens} times "
        f"in {n_requests} requests (did you change slow_app?)",
    )
    expect(
        fast_opens == 0 and fast_unpickled == 0,
        f"your load-once endpoint still loads the model while serving: {fast_opens} read(s) of {bundle.name} "
        f"and {fast_unpickled} unpickled object(s) during {n_requests} requests; load the bundle once, "
        "when the app is built, and reuse it",
    )
    passed("a2", f"{n_requests} requests: {slow_opens} loads the wrong way, 0 with load-once")


# ---------------------------------------------------------------------------------------
# checkpoint: a tampered or unknown artifact is refused, never unpickled
# ---------------------------------------------------------------------------------------


class _MarkerPayload:
    """Pickles into 'call os.mkdir(marker)': proof that a loader unpickled the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _refusal(loader: Callable, artifact: Path, manifest: Path) -> tuple[bool, str]:
    """(refused?, message) for one call of the student's loader."""
    try:
        loader(artifact, manifest)
    except NotImplementedError:
        raise CheckpointFailed("load_verified_bundle is not implemented yet") from None
    except Exception as exc:
        return True, str(exc).strip()
    return False, ""


def check_tampered_refused(
    answer: object,
    loader: object,
    bundle_path: str | os.PathLike | None = None,
    manifest_path: str | os.PathLike | None = None,
) -> None:
    """checkpoint_a1: the verified loader loads the genuine bundle, and refuses, without
    unpickling them, a tampered copy, a swapped-in pickle and an artifact with no manifest."""
    expect(answer is not None, "checkpoint_a1 is not set: write True or False")
    expect(isinstance(answer, bool), "checkpoint_a1 should be True or False")
    expect(answer is False, "checkpoint_a1 does not match what happens when the tampered file is handed to the loader")
    expect(loader is not None and callable(loader), "no `load_verified_bundle` function found: run its cell first")
    bundle, manifest = _paths(bundle_path, manifest_path)

    with tempfile.TemporaryDirectory(prefix="checkpoint-a1-") as tmp:
        root = Path(tmp)

        genuine = root / "genuine"
        genuine.mkdir()
        shutil.copy(bundle, genuine / BUNDLE_NAME)
        shutil.copy(manifest, genuine / MANIFEST_NAME)
        try:
            loaded = loader(genuine / BUNDLE_NAME, genuine / MANIFEST_NAME)
        except NotImplementedError:
            raise CheckpointFailed("load_verified_bundle is not implemented yet") from None
        except Exception as exc:
            raise CheckpointFailed(f"load_verified_bundle refused the genuine, untouched bundle: {exc}") from None
        expect(
            isinstance(loaded, dict) and "pipeline" in loaded,
            "load_verified_bundle should return the loaded bundle (the dict with the pipeline) for a genuine file",
        )

        # 1. bytes appended after the pickle's STOP opcode: joblib.load still loads it fine.
        appended = root / "appended"
        appended.mkdir()
        (appended / BUNDLE_NAME).write_bytes(bundle.read_bytes() + b"tampered")
        shutil.copy(manifest, appended / MANIFEST_NAME)
        refused, message = _refusal(loader, appended / BUNDLE_NAME, appended / MANIFEST_NAME)
        expect(refused, "load_verified_bundle loaded a copy whose bytes were changed after the manifest was written")
        expect(bool(message), "load_verified_bundle refused the tampered copy, but with an empty error message")

        # 2. a pickle that runs code, swapped in under the genuine name.
        swapped = root / "swapped"
        swapped.mkdir()
        marker = root / "payload-ran"
        (swapped / BUNDLE_NAME).write_bytes(pickle.dumps(_MarkerPayload(marker), protocol=4))
        shutil.copy(manifest, swapped / MANIFEST_NAME)
        refused, message = _refusal(loader, swapped / BUNDLE_NAME, swapped / MANIFEST_NAME)
        expect(not marker.exists(), "load_verified_bundle unpickled a swapped-in file: the code inside it ran")
        expect(refused and bool(message), "load_verified_bundle did not refuse a swapped-in file with a clear message")

        # 3. an unknown artifact: nothing vouches for it.
        unknown = root / "unknown"
        unknown.mkdir()
        marker_unknown = root / "unknown-payload-ran"
        (unknown / BUNDLE_NAME).write_bytes(pickle.dumps(_MarkerPayload(marker_unknown), protocol=4))
        refused, message = _refusal(loader, unknown / BUNDLE_NAME, unknown / MANIFEST_NAME)
        expect(not marker_unknown.exists(), "load_verified_bundle unpickled an artifact that has no manifest")
        expect(refused and bool(message), "load_verified_bundle did not refuse an artifact that has no manifest")

    passed("a1", "genuine bundle loaded; tampered, swapped and unknown artifacts refused before unpickling")
