"""Checkpoints of Colab D, the MLOps notebook (drift, monitoring, registry, gate, rollback),
judged outside the kernel.

Each declaration in ``CHECKPOINTS`` collects plain data from the running notebook through the
grader's session and judges it here, in the grader's process (see ``checkpoints.interface``).

Public contract of the notebook these checkpoints rely on:

- ``psi(expected, actual)`` returns the population stability index of two lists of numbers
  (decile edges of ``expected`` from ``np.quantile``, outer edges at -inf/+inf, shares floored
  at 1e-4, ``sum((a - e) * ln(a / e))``);
- ``classify_drift(summary)`` returns ``"concept"``, ``"data"`` or ``"none"`` for a summary with
  ``max_psi``, ``approval_rate``, ``baseline_approval_rate``, ``predicted_default_rate``,
  ``observed_default_rate`` and ``matured_loans``; ``story_summaries`` holds the notebook's two
  stories (the campaign, the rate shock) as such summaries;
- ``gate_decision(candidate_metrics, live_metrics)`` returns a bool for two dicts with
  ``roc_auc`` and ``accuracy`` (promote when neither regresses by more than 0.005);
- the run folder holds ``registry/registry.json`` (``{"versions": [{version, artifact, sha256,
  gate: None | {decision, candidate_metrics, live_metrics, tolerance}}]}``) and the pointer
  ``registry/LIVE.json`` (``{model_version, artifact, sha256, history: [{version, ...}]}``);
  ``point_live_to(version, reason)`` moves the pointer, ``rollback()`` moves it back to the
  version live before the current one and returns it; ``app`` is the ASGI service whose
  ``POST /predict`` answers ``{"approved", "probability", "model_version"}`` with the model the
  pointer names, re-read per request.

How each behaviour is observed (held-out inputs are drawn from ``session.rng`` at collection
time; the expected values are computed here and never sent to the kernel):

- cp_d_psi: the student's ``psi`` on four pairs of random samples (normal, lognormal or beta
  families, shifted by random amounts); the judge computes the true PSI itself.
- cp_d_drift: the student's ``classify_drift`` on the notebook's two stories and on twelve
  random summaries of six kinds (data drift, concept drift with quiet or drifted inputs, too
  few matured loans to tell, an approval jump alone, nothing); the judge applies the rule.
- cp_d_gate: the student's ``gate_decision`` on eight random metric pairs of six kinds (better,
  within tolerance, equal, AUC regressed, accuracy regressed, both regressed), plus the
  notebook's registry: each gate decision it records agrees with the rule on its own recorded
  metrics, one candidate was refused and one promoted, and no refused version was ever live.
- cp_d_rollback: the grader makes two registry versions live in a random order (the notebook's
  ``point_live_to``), serves ``app`` from a kernel thread, sends held-out applicants from its own
  side, calls the student's ``rollback()``, and sends them again without restarting anything.
  The probe ``probes/credit_bundle.py`` unpickles the earlier version's bundle from the registry
  (sha256 checked against the registry) in a fresh sandbox and answers its probabilities; after
  the rollback the service must answer with that version's ``model_version`` and exactly those
  probabilities.
"""

from __future__ import annotations

import json
import math
import random

from checkpoints.interface import Checkpoint, Malformed, Prediction, Unavailable, Verdict, quote, robust

FEATURES = ("income", "debt_ratio", "credit_score", "employment_years", "loan_amount")
REGISTRY_FILE = "registry/registry.json"
POINTER_FILE = "registry/LIVE.json"
BUNDLE_PROBE = "credit_bundle"
SUMMARY_KEYS = ("max_psi", "approval_rate", "baseline_approval_rate", "predicted_default_rate",
                "observed_default_rate", "matured_loans")
DRIFT_LABELS = ("concept", "data", "none")
STORY_EXPECTED = {"campaign": "data", "shock": "concept"}  # a word of the story's name -> its kind

PSI_CASES = 4
PSI_FLOOR = 1e-4
PSI_BINS = 10
DRIFT_SCENARIOS = 12
CONCEPT_RATIO, MIN_MATURED, DATA_PSI = 1.5, 100, 0.25
GATE_CASES = 8
GATE_TOLERANCE = 0.005
GATED_METRICS = ("roc_auc", "accuracy")
ROLLBACK_APPLICANTS = 6
SCORE_TOLERANCE = 1e-9


def is_number(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _list(value: object, length: int | None = None) -> list:
    if type(value) is not list or (length is not None and len(value) != length):
        raise Malformed("a list of the wrong shape")
    return value


def _dict(value: object) -> dict:
    if type(value) is not dict:
        raise Malformed("not an object")
    return value


def _call(session, function: str, *args) -> dict:
    """The student's ``function(*args)`` as data: {"value": ...} or {"error": message}."""
    try:
        return {"value": session.call(function, *args)}
    except Unavailable as exc:
        return {"error": str(exc)}


def _outcome_value(outcome: object) -> tuple[bool, object]:
    """(answered, value) of one ``_call`` outcome."""
    outcome = _dict(outcome)
    if "error" in outcome:
        return False, outcome["error"]
    return True, outcome["value"]


def _not_implemented(outcomes: list) -> bool:
    return any(type(o) is dict and "NotImplementedError" in str(o.get("error", "")) for o in outcomes)


# ---------------------------------------------------------------------------------------
# cp_d_psi: the population stability index on held-out distributions
# ---------------------------------------------------------------------------------------


def reference_psi(expected: list[float], actual: list[float], bins: int = PSI_BINS) -> float:
    """The notebook's recipe, computed here: decile edges of ``expected`` (outer edges at +-inf),
    shares of each sample per bin floored at 1e-4, sum of (a - e) ln(a / e)."""
    import numpy as np

    expected_array, actual_array = np.asarray(expected, dtype=float), np.asarray(actual, dtype=float)
    edges = np.quantile(expected_array, np.linspace(0, 1, bins + 1))
    edges[0], edges[-1] = -np.inf, np.inf
    e = np.clip(np.histogram(expected_array, edges)[0] / len(expected_array), PSI_FLOOR, None)
    a = np.clip(np.histogram(actual_array, edges)[0] / len(actual_array), PSI_FLOOR, None)
    return float(np.sum((a - e) * np.log(a / e)))


def draw_psi_case(rng: random.Random, shift: float) -> dict:
    """A training-like sample and a recent sample moved by about ``shift`` standard deviations."""
    family = rng.choice(("normal", "lognormal", "beta"))
    scale = rng.uniform(0.9, 1.25)
    n_expected, n_actual = 1000, rng.choice((500, 800))
    if family == "normal":
        mean, sd = rng.uniform(-50, 50), rng.uniform(1, 20)
        expected = [rng.gauss(mean, sd) for _ in range(n_expected)]
        actual = [rng.gauss(mean + shift * sd, sd * scale) for _ in range(n_actual)]
    elif family == "lognormal":
        mu, sigma = rng.uniform(9, 11), rng.uniform(0.3, 0.6)
        expected = [rng.lognormvariate(mu, sigma) for _ in range(n_expected)]
        actual = [rng.lognormvariate(mu + shift * sigma, sigma * scale) for _ in range(n_actual)]
    else:
        a, b = rng.uniform(2, 3), rng.uniform(4, 6)
        expected = [rng.betavariate(a, b) for _ in range(n_expected)]
        actual = [rng.betavariate(a * math.exp(-shift), b) for _ in range(n_actual)]
    return {"family": family, "expected": [round(v, 6) for v in expected], "actual": [round(v, 6) for v in actual]}


def psi_tolerance(true_value: float) -> float:
    return 0.005 + 0.02 * abs(true_value)


def collect_psi(session) -> dict:
    shifts = [0.0, rng_pick(session.rng, (0.1, 0.2)), rng_pick(session.rng, (0.35, 0.5)), rng_pick(session.rng, (0.8, 1.2))]
    session.rng.shuffle(shifts)
    cases = [draw_psi_case(session.rng, shift) for shift in shifts[:PSI_CASES]]
    outcomes = [_call(session, "psi", case["expected"], case["actual"]) for case in cases]
    return {"cases": cases, "outcomes": outcomes}


def rng_pick(rng: random.Random, bounds: tuple[float, float]) -> float:
    return rng.uniform(*bounds) * rng.choice((-1, 1))


@robust
def judge_psi(evidence: dict) -> Verdict:
    cases = _list(evidence["cases"])
    outcomes = _list(evidence["outcomes"], len(cases))
    if not cases:
        raise Malformed("no cases")
    if _not_implemented(outcomes):
        return Verdict.fail("psi is not implemented yet")
    right, problems = 0, []
    for index, (case, outcome) in enumerate(zip(cases, outcomes, strict=True)):
        expected, actual = _list(case["expected"]), _list(case["actual"])
        if not expected or not actual or not all(is_number(v) for v in expected + actual):
            raise Malformed("samples")
        true_value = reference_psi(expected, actual)
        answered, got = _outcome_value(outcome)
        if not answered:
            problems.append(f"sample pair {index + 1}: psi raised {quote(got, 160)}")
        elif not is_number(got):
            problems.append(f"sample pair {index + 1}: psi returned {quote(got, 60)}, not a number")
        elif abs(got - true_value) > psi_tolerance(true_value):
            problems.append(f"sample pair {index + 1} ({case.get('family')}, {len(expected)} vs {len(actual)} "
                            f"values, drawn for this run): psi returned {got:.4f}, the recipe gives {true_value:.4f}")
        else:
            right += 1
    if right == len(cases):
        return Verdict.ok(f"psi matches the recipe on {len(cases)} pairs of samples it had not seen")
    return Verdict(right / len(cases), f"{len(cases) - right} of {len(cases)} held-out pairs wrong: " + "; ".join(problems[:2]))


# ---------------------------------------------------------------------------------------
# cp_d_drift: data drift, concept drift or none, on the stories and held-out summaries
# ---------------------------------------------------------------------------------------


def reference_drift(summary: dict) -> str:
    for key in SUMMARY_KEYS:
        if not is_number(summary.get(key)):
            raise Malformed(f"summary key {key}")
    if (summary["matured_loans"] >= MIN_MATURED
            and summary["observed_default_rate"] >= CONCEPT_RATIO * summary["predicted_default_rate"]):
        return "concept"
    if summary["max_psi"] >= DATA_PSI:
        return "data"
    return "none"


DRIFT_KINDS = ("data", "concept_quiet_inputs", "concept_drifted_inputs", "too_early", "approval_jump_only", "none")


def draw_drift_scenario(rng: random.Random, kind: str) -> dict:
    """A monitoring summary of the given kind, every number well away from the rule's lines."""
    predicted = rng.uniform(0.12, 0.35)
    baseline = rng.uniform(0.5, 0.65)
    approval = baseline + rng.uniform(-0.04, 0.04)
    matured = rng.randint(150, 800)
    observed = predicted * rng.uniform(0.8, 1.25)
    max_psi = rng.uniform(0.01, 0.2)
    if kind == "data":
        max_psi, approval = rng.uniform(0.32, 1.6), baseline + rng.uniform(0.08, 0.2)
    elif kind == "concept_quiet_inputs":
        observed = predicted * rng.uniform(1.8, 3.0)
    elif kind == "concept_drifted_inputs":
        observed, max_psi = predicted * rng.uniform(1.8, 3.0), rng.uniform(0.32, 1.2)
    elif kind == "too_early":
        matured, observed = rng.randint(5, 60), predicted * rng.uniform(1.8, 3.0)
    elif kind == "approval_jump_only":
        approval = baseline + rng.uniform(0.12, 0.25)
    return {"max_psi": round(max_psi, 4), "approval_rate": round(min(approval, 0.99), 4),
            "baseline_approval_rate": round(baseline, 4), "predicted_default_rate": round(predicted, 4),
            "observed_default_rate": round(min(observed, 0.99), 4), "matured_loans": matured}


def collect_drift(session) -> dict:
    kinds = [DRIFT_KINDS[i % len(DRIFT_KINDS)] for i in range(DRIFT_SCENARIOS)]
    session.rng.shuffle(kinds)
    scenarios = [draw_drift_scenario(session.rng, kind) for kind in kinds]
    try:
        stories = session.value("story_summaries")
    except Unavailable as exc:
        stories = {"error": str(exc)}
    story_outcomes = {}
    if type(stories) is dict and "error" not in stories:
        for name, summary in list(stories.items())[:4]:
            story_outcomes[name] = _call(session, "classify_drift", summary)
    outcomes = [_call(session, "classify_drift", scenario) for scenario in scenarios]
    return {"stories": stories, "story_outcomes": story_outcomes, "scenarios": scenarios, "outcomes": outcomes}


def _label(value: object) -> str | None:
    return value.strip().lower() if type(value) is str else None


def _story_kind(name: str) -> str | None:
    lowered = name.lower()
    return next((label for word, label in STORY_EXPECTED.items() if word in lowered), None)


@robust
def judge_drift(evidence: dict) -> Verdict:
    scenarios = _list(evidence["scenarios"])
    outcomes = _list(evidence["outcomes"], len(scenarios))
    stories, story_outcomes = evidence["stories"], _dict(evidence["story_outcomes"])
    if not scenarios:
        raise Malformed("no scenarios")
    if _not_implemented(outcomes):
        return Verdict.fail("classify_drift is not implemented yet")
    problems, right, total = [], 0, len(scenarios) + len(STORY_EXPECTED)
    # The two stories: each must be read the way the rule reads the notebook's own summary of it.
    if type(stories) is not dict or "error" in stories:
        problems.append("the notebook's story_summaries could not be read"
                        + (f" ({quote(stories.get('error'), 120)})" if type(stories) is dict else ""))
    else:
        seen = set()
        for name, summary in stories.items():
            kind = _story_kind(str(name))
            if kind is None or kind in seen or name not in story_outcomes:
                continue
            seen.add(kind)
            answered, got = _outcome_value(story_outcomes[name])
            try:
                expected = reference_drift(_dict(summary))
            except Malformed:
                problems.append(f"the summary of {quote(name, 60)} is not six numbers")
                continue
            if answered and _label(got) == expected:
                right += 1
            else:
                problems.append(f"the story {quote(name, 60)} was classified as {quote(got, 80)}")
        if len(seen) < len(STORY_EXPECTED):
            problems.append("story_summaries does not hold both stories (the campaign and the rate shock)")
    for scenario, outcome in zip(scenarios, outcomes, strict=True):
        expected = reference_drift(_dict(scenario))
        answered, got = _outcome_value(outcome)
        if answered and _label(got) == expected:
            right += 1
        else:
            shown = ", ".join(f"{k}={scenario[k]}" for k in SUMMARY_KEYS)
            problems.append(f"held-out summary ({shown}) was classified as {quote(got, 80)}")
    if right == total:
        return Verdict.ok(f"classify_drift follows the rule on both stories and {len(scenarios)} held-out summaries")
    return Verdict(right / total, f"{total - right} of {total} classifications disagree with the rule: "
                   + "; ".join(problems[:2]))


# ---------------------------------------------------------------------------------------
# cp_d_gate: the CI gate's decision on held-out metrics, and the notebook's registry record
# ---------------------------------------------------------------------------------------


def reference_gate(candidate: dict, live: dict, tolerance: float = GATE_TOLERANCE) -> bool:
    for metrics in (candidate, live):
        if not all(is_number(_dict(metrics).get(name)) for name in GATED_METRICS):
            raise Malformed("metrics")
    return all(candidate[name] >= live[name] - tolerance for name in GATED_METRICS)


GATE_KINDS = ("better", "within_tolerance", "equal", "auc_regressed", "accuracy_regressed", "both_regressed")


def draw_gate_case(rng: random.Random, kind: str) -> dict:
    live = {"roc_auc": round(rng.uniform(0.65, 0.9), 4), "accuracy": round(rng.uniform(0.6, 0.85), 4)}
    up, down = (lambda: rng.uniform(0.01, 0.08)), (lambda: -rng.uniform(0.012, 0.1))
    if kind == "better":
        deltas = {"roc_auc": up(), "accuracy": up()}
    elif kind == "within_tolerance":
        small = -rng.uniform(0.001, 0.003)
        deltas = {"roc_auc": small, "accuracy": up()} if rng.random() < 0.5 else {"roc_auc": up(), "accuracy": small}
    elif kind == "equal":
        deltas = {"roc_auc": 0.0, "accuracy": 0.0}
    elif kind == "auc_regressed":
        deltas = {"roc_auc": down(), "accuracy": up()}
    elif kind == "accuracy_regressed":
        deltas = {"roc_auc": up(), "accuracy": down()}
    else:
        deltas = {"roc_auc": down(), "accuracy": down()}
    candidate = {name: round(min(max(live[name] + deltas[name], 0.0), 1.0), 4) for name in GATED_METRICS}
    return {"candidate": candidate, "live": live}


def collect_gate(session) -> dict:
    kinds = [GATE_KINDS[i % len(GATE_KINDS)] for i in range(GATE_CASES)]
    session.rng.shuffle(kinds)
    cases = [draw_gate_case(session.rng, kind) for kind in kinds]
    outcomes = [_call(session, "gate_decision", case["candidate"], case["live"]) for case in cases]
    registry, pointer = session.read_file(REGISTRY_FILE), session.read_file(POINTER_FILE)
    return {"cases": cases, "outcomes": outcomes,
            "registry": None if registry is None else registry.decode("utf-8", errors="replace"),
            "pointer": None if pointer is None else pointer.decode("utf-8", errors="replace")}


def registry_problem(registry_text: object, pointer_text: object) -> str | None:
    """Why the notebook's registry does not show a working gate, or None."""
    if type(registry_text) is not str or type(pointer_text) is not str:
        return f"{REGISTRY_FILE} or {POINTER_FILE} was not found in the run folder"
    try:
        registry, pointer = json.loads(registry_text), json.loads(pointer_text)
    except ValueError:
        return f"{REGISTRY_FILE} or {POINTER_FILE} is not valid JSON"
    if type(registry) is not dict or type(registry.get("versions")) is not list or type(pointer) is not dict:
        return f"{REGISTRY_FILE} has no list of versions"
    decisions = {}
    for entry in registry["versions"]:
        if type(entry) is not dict or type(entry.get("gate")) is not dict:
            continue
        gate = entry["gate"]
        try:
            expected = reference_gate(gate["candidate_metrics"], gate["live_metrics"])
        except (Malformed, KeyError, TypeError):
            return f"the gate record of {quote(entry.get('version'), 20)} has no readable metrics"
        recorded = gate.get("decision")
        if recorded not in ("promoted", "refused"):
            return f"the gate record of {quote(entry.get('version'), 20)} has no decision"
        if (recorded == "promoted") != expected:
            return (f"the registry records {quote(entry.get('version'), 20)} as {recorded}, "
                    "but its recorded metrics say otherwise")
        decisions[str(entry.get("version"))] = recorded
    if "refused" not in decisions.values() or "promoted" not in decisions.values():
        return "the registry does not record one refused and one promoted candidate (did the gate cell run?)"
    history = pointer.get("history")
    ever_live = {str(h.get("version")) for h in history if type(h) is dict} if type(history) is list else set()
    refused_live = sorted(v for v, d in decisions.items() if d == "refused" and v in ever_live)
    if refused_live:
        return f"a refused candidate was made live: {quote(refused_live, 40)}"
    return None


@robust
def judge_gate(evidence: dict) -> Verdict:
    cases = _list(evidence["cases"])
    outcomes = _list(evidence["outcomes"], len(cases))
    if not cases:
        raise Malformed("no cases")
    if _not_implemented(outcomes):
        return Verdict.fail("gate_decision is not implemented yet")
    right, problems = 0, []
    for case, outcome in zip(cases, outcomes, strict=True):
        expected = reference_gate(case["candidate"], case["live"])
        answered, got = _outcome_value(outcome)
        if answered and type(got) is bool and got == expected:
            right += 1
        elif not answered:
            problems.append(f"gate_decision raised {quote(got, 120)}")
        else:
            problems.append(f"candidate {case['candidate']} vs live {case['live']} (drawn for this run): "
                            f"gate_decision returned {quote(got, 40)}")
    held_out = right / len(cases)
    registry = registry_problem(evidence.get("registry"), evidence.get("pointer"))
    if registry:
        problems.append(registry)
    score = 0.75 * held_out + (0.0 if registry else 0.25)
    if score >= 1.0:
        return Verdict.ok(f"the gate decides right on {len(cases)} held-out candidates, and the registry shows "
                          "the worse candidate refused and never live")
    return Verdict(score, "; ".join(problems[:3]))


# ---------------------------------------------------------------------------------------
# cp_d_rollback: one call, and the running service answers with the previous version
# ---------------------------------------------------------------------------------------


def draw_applicants(rng: random.Random, count: int) -> list[dict]:
    rows = []
    for _ in range(count):
        rows.append({
            "income": round(min(4_000_000.0, max(1_000.0, rng.lognormvariate(math.log(55_000), 0.45))), 2),
            "debt_ratio": round(rng.betavariate(2.7, 5.3), 4),
            "credit_score": round(min(850.0, max(300.0, rng.gauss(680, 70))), 1),
            "employment_years": round(min(45.0, rng.gammavariate(2.0, 4.0)), 1),
            "loan_amount": round(min(1_900_000.0, max(500.0, rng.lognormvariate(math.log(15_000), 0.6))), 2),
        })
    return rows


def post(body: str) -> dict:
    return {"method": "POST", "path": "/predict", "body": body, "content_type": "application/json"}


def servable_versions(registry_text: str | None) -> dict[str, dict]:
    """Registry entries that were not refused by the gate, by version."""
    try:
        registry = json.loads(registry_text or "null")
    except ValueError:
        return {}
    if type(registry) is not dict or type(registry.get("versions")) is not list:
        return {}
    found = {}
    for entry in registry["versions"]:
        if type(entry) is not dict or type(entry.get("version")) is not str:
            continue
        gate = entry.get("gate")
        if type(gate) is dict and gate.get("decision") == "refused":
            continue
        if type(entry.get("artifact")) is str and type(entry.get("sha256")) is str:
            found[entry["version"]] = {"artifact": entry["artifact"], "sha256": entry["sha256"]}
    return found


def collect_rollback(session) -> dict:
    raw = session.read_file(REGISTRY_FILE)
    versions = servable_versions(None if raw is None else raw.decode("utf-8", errors="replace"))
    if len(versions) < 2:
        return {"setup_error": f"{REGISTRY_FILE} does not list two versions the service may serve"}
    earlier, later = session.rng.sample(sorted(versions), 2)
    rows = draw_applicants(session.rng, ROLLBACK_APPLICANTS)
    try:
        session.call("point_live_to", earlier, "grader check: the version to come back to")
        session.call("point_live_to", later, "grader check: the version to roll back from")
    except Unavailable as exc:
        return {"setup_error": f"point_live_to could not make the registry's versions live: {exc}"}
    bodies = [post(json.dumps(row)) for row in rows]
    with session.serve("app") as server:
        before = session.http(server, bodies[:2])
        rolled_back = _call(session, "rollback")
        after = session.http(server, bodies)
    entry = versions[earlier]
    try:
        offline = session.probe(BUNDLE_PROBE, {"artifact": f"registry/{entry['artifact']}", "sha256": entry["sha256"],
                                               "rows": rows})
    except Unavailable as exc:
        offline = {"error": str(exc)}
    return {"earlier": earlier, "later": later, "rows": rows, "before": before, "rollback": rolled_back,
            "after": after, "offline": offline}


def _decision(response: object) -> tuple[dict | None, str | None]:
    """(the decision body, None) for a well-formed 200 answer, else (None, why not)."""
    response = _dict(response)
    status, body = response.get("status"), response.get("body", "")
    if status is None:
        return None, f"no answer ({quote(response.get('error', 'connection failed'), 80)})"
    if type(status) is not int or type(body) is not str:
        raise Malformed("response")
    if status != 200:
        return None, f"status {status}"
    try:
        decision = json.loads(body)
    except ValueError:
        return None, "the body is not JSON"
    if (type(decision) is not dict or type(decision.get("model_version")) is not str
            or not is_number(decision.get("probability"))):
        return None, "the body is not a decision with model_version and probability"
    return decision, None


@robust
def judge_rollback(evidence: dict) -> Verdict:
    if "setup_error" in evidence:
        return Verdict.fail(f"the check could not prepare the rollback: {quote(evidence['setup_error'], 200)}")
    earlier, later = evidence["earlier"], evidence["later"]
    rows = _list(evidence["rows"])
    before, after = _list(evidence["before"]), _list(evidence["after"], len(rows))
    for response in before:
        decision, problem = _decision(response)
        if problem:
            return Verdict.fail(f"before the rollback, the service did not answer with a decision: {problem}")
        if decision["model_version"] != later:
            return Verdict.fail(f"after {later} was made live, the service still answered with "
                                f"{quote(decision['model_version'], 30)}: it does not follow the pointer")
    answered, returned = _outcome_value(evidence["rollback"])
    if not answered:
        if "NotImplementedError" in str(returned):
            return Verdict.fail("rollback is not implemented yet")
        return Verdict.fail(f"rollback() raised {quote(returned, 200)}")
    offline = _dict(evidence["offline"])
    if "error" in offline:
        return Verdict.fail(f"the check could not load {earlier} from the registry: {quote(offline['error'], 200)}")
    if offline.get("version") != earlier:
        return Verdict.fail(f"the registry's bundle for {earlier} says it is version {quote(offline.get('version'), 30)}")
    probabilities = _list(offline["probabilities"], len(rows))
    mismatches = 0
    for response, expected in zip(after, probabilities, strict=True):
        decision, problem = _decision(response)
        if problem:
            return Verdict.fail(f"after rollback(), a request was not answered with a decision: {problem}")
        if decision["model_version"] != earlier:
            return Verdict.fail(f"after rollback() from {later}, the service answered with "
                                f"{quote(decision['model_version'], 30)} instead of the version live before it")
        if not is_number(expected) or abs(decision["probability"] - expected) > SCORE_TOLERANCE:
            mismatches += 1
    if mismatches:
        return Verdict.fail(f"after rollback(), {mismatches} of {len(rows)} probabilities differ from the "
                            f"registry's {earlier} bundle")
    if returned != earlier:
        return Verdict(0.75, f"the service rolled back to {earlier}, but rollback() returned {quote(returned, 30)} "
                             "instead of the version now live")
    return Verdict.ok(f"one call rolled {later} back to {earlier}; the running service answered {len(rows)} "
                      "held-out applicants with that version's exact scores, without a restart")


# ---------------------------------------------------------------------------------------
# declarations
# ---------------------------------------------------------------------------------------

CHECKPOINTS = [
    Checkpoint(
        "cp_d_psi", collect_psi, judge_psi,
        prediction=Prediction("checkpoint_d1", accept=["c"], points=0.5, hint="a, b or c"),
        description="psi follows the decile recipe on held-out pairs of samples",
    ),
    Checkpoint(
        "cp_d_drift", collect_drift, judge_drift,
        prediction=Prediction("checkpoint_d2", accept=["a"], points=0.5, hint="a, b or c"),
        description="classify_drift reads the two stories and held-out monitoring summaries by the rule",
    ),
    Checkpoint(
        "cp_d_gate", collect_gate, judge_gate,
        prediction=Prediction("checkpoint_d3", accept=["b"], points=0.5, hint="a, b, c or d"),
        description="the gate promotes only candidates that do not regress; the registry shows the worse one refused",
    ),
    Checkpoint(
        "cp_d_rollback", collect_rollback, judge_rollback,
        prediction=Prediction("checkpoint_d4", accept=["b"], points=0.5, hint="a, b or c"),
        description="one rollback() call and the running service answers with the previous version's exact scores",
    ),
]
