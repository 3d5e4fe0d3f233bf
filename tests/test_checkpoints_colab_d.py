"""Tests of the Colab D checkpoint declarations (checkpoints/colab_d.py).

Every judge is tested on good and bad evidence (wrong values, wrong types, missing keys, forged
shapes); every collect runs with ``FakeSession`` over a namespace built from the notebook's OWN
code: all its code cells (solutions included, hidden markers are comments) are executed once
per module in a fresh run folder, with a tiny stand-in for the one IPython magic it uses
(``%%writefile``). Wrong variants are written here as small functions. The module runs the
notebook's six months of traffic once (a few seconds).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shlex
from pathlib import Path

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager

from autograde.collect import judge_checkpoint
from checkpoints import colab_d
from checkpoints.colab_d import (
    CHECKPOINTS,
    collect_drift,
    collect_gate,
    collect_psi,
    collect_rollback,
    judge_drift,
    judge_gate,
    judge_psi,
    judge_rollback,
    reference_drift,
    reference_gate,
    reference_psi,
)
from checkpoints.interface import Verdict
from checkpoints.testing import FakeSession

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO_ROOT / "notebooks" / "colab_d_mlops.ipynb"
DECLARED = {checkpoint.id: checkpoint for checkpoint in CHECKPOINTS}


class _Shell:
    """What ``get_ipython()`` must do for this notebook's cells: %%writefile."""

    def run_cell_magic(self, magic, line, cell):
        assert magic == "writefile", magic
        path = [a for a in shlex.split(line) if not a.startswith("-")][0]
        Path(path).write_text(cell, encoding="utf-8")


@contextlib.contextmanager
def inside(folder: Path):
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(namespace, run folder) of the whole notebook executed once, its servers stopped at the end."""
    folder = tmp_path_factory.mktemp("colab_d_run")
    saved_env = {k: os.environ.get(k) for k in ("MODEL_POINTER", "PREDICTION_LOG", "MPLBACKEND")}
    os.environ["MPLBACKEND"] = "Agg"
    namespace = {"get_ipython": lambda: _Shell(), "__name__": "__main__"}
    transformer = TransformerManager()
    cells = [c for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code"]
    with inside(folder):
        for cell in cells[:-1]:  # everything but the shutdown cell
            exec(compile(transformer.transform_cell(cell.source), "<cell>", "exec"), namespace)  # noqa: S102
    try:
        yield namespace, folder
    finally:
        with inside(folder):
            exec(compile(cells[-1].source, "<cell>", "exec"), namespace)  # noqa: S102 - the shutdown cell
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def collected(collect, namespace, folder, seed=1, **overrides):
    session = FakeSession({**namespace, **overrides}, folder, seed=seed)
    with inside(folder):
        return collect(session)


def not_implemented(*args, **kwargs):
    raise NotImplementedError()


# --------------------------------------------------------------------------- cp_d_psi


def equal_width_psi(expected, actual, bins=10):
    import numpy as np

    edges = np.linspace(min(expected), max(expected), bins + 1)
    edges[0], edges[-1] = -np.inf, np.inf
    e = np.clip(np.histogram(expected, edges)[0] / len(expected), 1e-4, None)
    a = np.clip(np.histogram(actual, edges)[0] / len(actual), 1e-4, None)
    return float(np.sum((a - e) * np.log(a / e)))


def kl_only(expected, actual, bins=10):
    import numpy as np

    edges = np.quantile(expected, np.linspace(0, 1, bins + 1))
    edges[0], edges[-1] = -np.inf, np.inf
    e = np.clip(np.histogram(expected, edges)[0] / len(expected), 1e-4, None)
    a = np.clip(np.histogram(actual, edges)[0] / len(actual), 1e-4, None)
    return float(np.sum(a * np.log(a / e)))


def test_reference_psi_is_zero_for_identical_samples_and_grows_with_a_shift():
    sample = [float(i % 97) + i / 1000 for i in range(1000)]
    assert reference_psi(sample, sample) == pytest.approx(0.0, abs=1e-12)
    assert reference_psi(sample, [v + 30 for v in sample]) > reference_psi(sample, [v + 5 for v in sample]) > 0.05


def test_psi_collect_and_judge_pass_on_the_notebooks_psi(run):
    namespace, folder = run
    evidence = collected(collect_psi, namespace, folder)
    assert len(evidence["cases"]) == colab_d.PSI_CASES
    assert judge_psi(evidence).passed, judge_psi(evidence).message


@pytest.mark.parametrize("wrong", [equal_width_psi, kl_only, lambda e, a, bins=10: 0.0,
                                   lambda e, a, bins=10: "0.1", not_implemented])
def test_psi_judge_refuses_a_wrong_psi(run, wrong):
    namespace, folder = run
    verdict = judge_psi(collected(collect_psi, namespace, folder, seed=3, psi=wrong))
    assert not verdict.passed


def test_psi_inputs_are_held_out_and_differ_per_run(run):
    namespace, folder = run
    first, second = (collected(collect_psi, namespace, folder, seed=s) for s in (1, 2))
    assert first["cases"] != second["cases"]


@pytest.mark.parametrize("evidence", [None, [], {}, {"cases": {}, "outcomes": []}, {"cases": [], "outcomes": []},
                                      {"cases": [{"expected": [1.0], "actual": [1.0]}], "outcomes": {}},
                                      {"cases": [{"expected": "x", "actual": [1.0]}], "outcomes": [{"value": 0.0}]}])
def test_psi_judge_fails_on_malformed_evidence(evidence):
    assert judge_psi(evidence).score == 0.0


# --------------------------------------------------------------------------- cp_d_drift


def approval_based(summary):
    return "concept" if summary["approval_rate"] > summary["baseline_approval_rate"] + 0.1 else "none"


def ignores_matured_count(summary):
    if summary["observed_default_rate"] >= 1.5 * summary["predicted_default_rate"]:
        return "concept"
    return "data" if summary["max_psi"] >= 0.25 else "none"


def psi_first(summary):
    if summary["max_psi"] >= 0.25:
        return "data"
    if summary["matured_loans"] >= 100 and summary["observed_default_rate"] >= 1.5 * summary["predicted_default_rate"]:
        return "concept"
    return "none"


def test_the_notebooks_stories_are_one_of_each_kind(run):
    namespace, _ = run
    labels = {name.split()[0]: reference_drift(summary) for name, summary in namespace["story_summaries"].items()}
    assert labels == {"campaign": "data", "rate": "concept"}


def test_drift_collect_and_judge_pass_on_the_notebooks_classifier(run):
    namespace, folder = run
    evidence = collected(collect_drift, namespace, folder)
    assert len(evidence["scenarios"]) == colab_d.DRIFT_SCENARIOS
    assert {reference_drift(s) for s in evidence["scenarios"]} == {"concept", "data", "none"}
    verdict = judge_drift(evidence)
    assert verdict.passed, verdict.message


@pytest.mark.parametrize("wrong", [approval_based, ignores_matured_count, psi_first,
                                   lambda summary: "Data drift", not_implemented])
def test_drift_judge_refuses_a_wrong_classifier(run, wrong):
    namespace, folder = run
    verdict = judge_drift(collected(collect_drift, namespace, folder, seed=5, classify_drift=wrong))
    assert not verdict.passed


def test_drift_judge_counts_missing_stories_as_wrong(run):
    namespace, folder = run
    evidence = collected(collect_drift, {k: v for k, v in namespace.items() if k != "story_summaries"}, folder)
    verdict = judge_drift(evidence)
    assert 0 < verdict.score < 1 and "story_summaries" in verdict.message


@pytest.mark.parametrize("mutate", [
    lambda e: e.pop("scenarios"),
    lambda e: e.update(outcomes={}),
    lambda e: e.update(outcomes=e["outcomes"][:-1]),
    lambda e: e["scenarios"][0].update(max_psi="high"),
    lambda e: e.update(story_outcomes=[]),
])
def test_drift_judge_fails_on_malformed_evidence(run, mutate):
    namespace, folder = run
    evidence = copy.deepcopy(collected(collect_drift, namespace, folder))
    mutate(evidence)
    assert judge_drift(evidence).score == 0.0


# --------------------------------------------------------------------------- cp_d_gate


def no_tolerance(candidate, live, tolerance=0.005):
    return all(candidate[m] >= live[m] for m in ("roc_auc", "accuracy"))


def accuracy_only(candidate, live, tolerance=0.005):
    return candidate["accuracy"] >= live["accuracy"] - tolerance


def sum_of_metrics(candidate, live, tolerance=0.005):
    return candidate["roc_auc"] + candidate["accuracy"] >= live["roc_auc"] + live["accuracy"] - tolerance


def test_reference_gate():
    live = {"roc_auc": 0.8, "accuracy": 0.7}
    assert reference_gate({"roc_auc": 0.797, "accuracy": 0.75}, live)
    assert not reference_gate({"roc_auc": 0.79, "accuracy": 0.9}, live)


def test_gate_collect_and_judge_pass_on_the_notebooks_gate_and_registry(run):
    namespace, folder = run
    evidence = collected(collect_gate, namespace, folder)
    assert {reference_gate(c["candidate"], c["live"]) for c in evidence["cases"]} == {True, False}
    verdict = judge_gate(evidence)
    assert verdict.passed, verdict.message


@pytest.mark.parametrize("wrong", [no_tolerance, accuracy_only, sum_of_metrics, lambda candidate, live, tolerance=0: 1,
                                   not_implemented])
def test_gate_judge_refuses_a_wrong_gate(run, wrong):
    namespace, folder = run
    verdict = judge_gate(collected(collect_gate, namespace, folder, seed=7, gate_decision=wrong))
    assert not verdict.passed


def _registry_variant(evidence, change):
    registry = json.loads(evidence["registry"])
    change(registry)
    return {**evidence, "registry": json.dumps(registry)}


def _gated(registry, decision):
    return next(e for e in registry["versions"] if (e.get("gate") or {}).get("decision") == decision)


@pytest.mark.parametrize("change", [
    lambda r: _gated(r, "refused")["gate"].update(decision="promoted"),  # disagrees with its own metrics
    lambda r: [e.update(gate=None) for e in r["versions"]],             # the gate never ran
    lambda r: r.update(versions="v1"),
])
def test_gate_judge_reads_the_registry(run, change):
    namespace, folder = run
    evidence = _registry_variant(collected(collect_gate, namespace, folder), change)
    verdict = judge_gate(evidence)
    assert verdict.score == pytest.approx(0.75)


def test_gate_judge_refuses_a_refused_version_that_went_live(run):
    namespace, folder = run
    evidence = collected(collect_gate, namespace, folder)
    refused = _gated(json.loads(evidence["registry"]), "refused")["version"]
    pointer = json.loads(evidence["pointer"])
    pointer["history"].append({"version": refused, "reason": "pushed by hand"})
    verdict = judge_gate({**evidence, "pointer": json.dumps(pointer)})
    assert not verdict.passed and "refused candidate was made live" in verdict.message


@pytest.mark.parametrize("evidence", [None, {"cases": [], "outcomes": []}, {"cases": {}, "outcomes": []},
                                      {"cases": [{"candidate": {}, "live": {}}], "outcomes": [{"value": True}]}])
def test_gate_judge_fails_on_malformed_evidence(evidence):
    assert judge_gate(evidence).score == 0.0


# --------------------------------------------------------------------------- cp_d_rollback


def test_rollback_collect_and_judge_pass_on_the_notebooks_service(run):
    namespace, folder = run
    evidence = collected(collect_rollback, namespace, folder)
    assert "offline" in evidence and "error" not in evidence["offline"], evidence.get("offline")
    verdict = judge_rollback(evidence)
    assert verdict.passed, verdict.message
    log = (folder / "predictions.jsonl").read_text().splitlines()
    switches = [json.loads(line) for line in log if '"model_switch"' in line]
    assert switches[-1]["to"] == evidence["earlier"] and switches[-1]["from"] == evidence["later"]


def test_rollback_order_is_drawn_per_run(run):
    namespace, folder = run
    orders = {tuple(collected(collect_rollback, namespace, folder, seed=s)[k] for k in ("earlier", "later"))
              for s in range(6)}
    assert len(orders) == 2


def test_rollback_judge_refuses_a_rollback_that_does_nothing(run):
    namespace, folder = run
    verdict = judge_rollback(collected(collect_rollback, namespace, folder, seed=2, rollback=lambda *a, **k: "v1"))
    assert not verdict.passed


def test_rollback_judge_refuses_a_stub(run):
    namespace, folder = run
    verdict = judge_rollback(collected(collect_rollback, namespace, folder, rollback=not_implemented))
    assert verdict.score == 0.0 and "not implemented" in verdict.message


def test_rollback_judge_refuses_a_rollback_to_the_wrong_version(run):
    namespace, folder = run
    point_live_to = namespace["point_live_to"]

    def first_version_ever(registry=namespace["REGISTRY"], reason="rollback"):
        history = json.loads((Path(registry) / "LIVE.json").read_text())["history"]
        return point_live_to(history[0]["version"] if history[-2]["version"] == "v2" else "v2", reason, registry)

    verdict = judge_rollback(collected(collect_rollback, namespace, folder, seed=4, rollback=first_version_ever))
    assert not verdict.passed


def test_rollback_judge_gives_partial_credit_when_only_the_return_value_is_wrong(run):
    namespace, folder = run
    real = namespace["rollback"]
    verdict = judge_rollback(collected(collect_rollback, namespace, folder,
                                       rollback=lambda *a, **k: real(*a, **k) and None))
    assert verdict.score == pytest.approx(0.75)


@pytest.mark.parametrize("mutate", [
    lambda e: e["after"][0].update(body=json.dumps({"approved": True, "probability": 0.5, "model_version": "v9"})),
    lambda e: e["after"][0].update(status=500),
    lambda e: e["offline"].update(probabilities=[0.123] * len(e["rows"])),
    lambda e: e["offline"].update(version="v9"),
    lambda e: e.update(offline={"error": "sha256 mismatch"}),
    lambda e: e["before"][0].update(body=json.dumps({"approved": True, "probability": 0.5, "model_version": "v9"})),
    lambda e: e.update(after={}),
    lambda e: e.pop("rows"),
])
def test_rollback_judge_fails_on_wrong_or_malformed_evidence(run, mutate):
    namespace, folder = run
    evidence = copy.deepcopy(collected(collect_rollback, namespace, folder, seed=8))
    assert judge_rollback(copy.deepcopy(evidence)).passed
    mutate(evidence)
    assert judge_rollback(evidence).score == 0.0


def test_rollback_judge_fails_without_two_servable_versions():
    assert judge_rollback({"setup_error": "registry/registry.json does not list two versions"}).score == 0.0
    assert colab_d.servable_versions('{"versions": [{"version": "v1", "artifact": "a", "sha256": "b"}]}') == {
        "v1": {"artifact": "a", "sha256": "b"}}
    assert colab_d.servable_versions("not json") == {}


# --------------------------------------------------------------------------- predictions and wiring


@pytest.mark.parametrize("checkpoint_id", sorted(DECLARED))
def test_each_prediction_accepts_the_notebooks_answer_and_refuses_another(run, checkpoint_id):
    namespace, _ = run
    prediction = DECLARED[checkpoint_id].prediction
    answer = namespace[prediction.variable]
    assert prediction.judge(answer).passed
    assert prediction.judge(answer.upper() + " ").passed  # normalised
    wrong = next(letter for letter in "abcd" if letter != answer)
    assert not prediction.judge(wrong).passed
    assert not prediction.judge(None).passed


@pytest.mark.parametrize("checkpoint_id", sorted(DECLARED))
def test_a_stubbed_exercise_earns_nothing(run, checkpoint_id):
    namespace, folder = run
    stubs = {"psi": not_implemented, "classify_drift": not_implemented, "gate_decision": not_implemented,
             "rollback": not_implemented}
    blank = {**namespace, **stubs}
    for variable in (c.prediction.variable for c in CHECKPOINTS):
        blank[variable] = None
    session = FakeSession(blank, folder, seed=11)
    with inside(folder):
        outcome = judge_checkpoint(DECLARED[checkpoint_id], 2, session)
    assert outcome.score == 0.0, outcome.message


def test_the_notebook_marks_each_hidden_cell_and_nothing_else():
    cells = nbformat.read(NOTEBOOK, as_version=4).cells
    hidden = {c.metadata["nbgrader"]["grade_id"]: c for c in cells if c.metadata.get("nbgrader", {}).get("grade")}
    assert set(hidden) == set(DECLARED)
    for cell in hidden.values():
        assert "# autograde-checkpoint: checkpoints.colab_d" in cell.source
        assert cell.metadata["nbgrader"]["locked"] and not cell.metadata["nbgrader"]["solution"]
    answers = [c.metadata["nbgrader"]["grade_id"] for c in cells
               if c.metadata.get("nbgrader", {}).get("grade_id", "").startswith(("answer_d", "selfcheck_d"))]
    assert sorted(answers) == sorted([f"answer_d{n}" for n in range(1, 5)] + [f"selfcheck_d{n}" for n in range(1, 5)])


def test_verdicts_are_verdicts():
    assert isinstance(judge_psi({}), Verdict)
