"""Checkpoints of the judged toy assignment (tests/toy_judged.py): declared with the one
checkpoint interface, judged outside the student's kernel."""

from __future__ import annotations

import json
import math

from checkpoints.interface import Checkpoint, Prediction, Unavailable, Verdict, quote


def collect_add(session) -> dict:
    # Held-out inputs, drawn now and different on every run.
    cases = [[session.rng.randint(-1000, 1000), round(session.rng.uniform(-50, 50), 3)] for _ in range(5)]
    results = []
    for a, b in cases:
        try:
            results.append(session.call("add", a, b))
        except Unavailable as exc:
            return {"cases": cases, "error": str(exc)}
    return {"cases": cases, "results": results}


def judge_add(evidence: dict) -> Verdict:
    if "error" in evidence:
        return Verdict.fail(f"add could not be called: {evidence['error']}")
    for (a, b), got in zip(evidence["cases"], evidence["results"], strict=True):
        if type(got) not in (int, float) or not math.isfinite(got) or abs(got - (a + b)) > 1e-9:
            return Verdict.fail(f"add({a}, {b}) returned {quote(got)}")
    return Verdict.ok(f"add is right on {len(evidence['cases'])} inputs it had not seen")


def collect_api(session) -> dict:
    a, b = session.rng.randint(1, 99), session.rng.randint(1, 99)
    with session.serve("app") as server:
        (answer,) = session.http(server, [{"method": "GET", "path": f"/add?a={a}&b={b}", "body": None}])
    return {"a": a, "b": b, "answer": answer}


def judge_api(evidence: dict) -> Verdict:
    answer = evidence["answer"]
    if answer.get("status") != 200:
        return Verdict.fail(f"GET /add answered {answer.get('status')}, expected 200")
    try:
        body = json.loads(answer.get("body") or "")
    except ValueError:
        return Verdict.fail("GET /add did not answer JSON")
    if not isinstance(body, dict) or body.get("sum") != evidence["a"] + evidence["b"]:
        return Verdict.fail(f"GET /add?a={evidence['a']}&b={evidence['b']} answered {quote(body)}")
    return Verdict.ok("the API adds")


CHECKPOINTS = [
    Checkpoint("cp_add", collect_add, judge_add,
               prediction=Prediction("prediction_sum", accept=[5], points=0.5, hint="what is 2 + 3?")),
    Checkpoint("cp_api", collect_api, judge_api),
]
