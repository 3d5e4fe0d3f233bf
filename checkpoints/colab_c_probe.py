"""Fresh-process probe for Colab C: the true cosine scores under the notebook's embedder.

Run as ``python -m checkpoints.colab_c_probe`` (through ``checkpoints.common.run_probe``) with
a JSON payload on stdin::

    {"model": "<path or hub name>", "texts": ["chunk text", ...], "questions": ["...", ...]}

It loads the sentence-transformers model from scratch, embeds every text and question,
normalises the vectors, and prints one JSON object as its last stdout line::

    {"dim": 384, "embeddings": [[...], ...], "scores": [[cosine of question q to text i, ...], ...]}

Nothing the notebook kernel rebinds or patches can change what this process computes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import warnings

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # a few dozen sentences: one thread is enough, and fair to the kernel
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")


def true_scores(model: str, texts: list[str], questions: list[str]) -> dict:
    import numpy as np
    from sentence_transformers import SentenceTransformer

    with contextlib.redirect_stderr(io.StringIO()):
        embedder = SentenceTransformer(model, device="cpu")
        text_vectors = embedder.encode(list(texts), convert_to_numpy=True, show_progress_bar=False)
        question_vectors = embedder.encode(list(questions), convert_to_numpy=True,
                                           show_progress_bar=False)
    text_vectors = np.asarray(text_vectors, dtype=np.float64)
    question_vectors = np.asarray(question_vectors, dtype=np.float64).reshape(len(questions), -1)
    text_units = text_vectors / np.maximum(np.linalg.norm(text_vectors, axis=1, keepdims=True), 1e-12)
    question_units = question_vectors / np.maximum(
        np.linalg.norm(question_vectors, axis=1, keepdims=True), 1e-12)
    return {
        "dim": int(text_units.shape[1]),
        "embeddings": np.round(text_units, 7).tolist(),
        "scores": (question_units @ text_units.T).tolist(),
    }


def main() -> None:
    payload = json.loads(sys.stdin.read())
    result = true_scores(payload["model"], payload["texts"], payload["questions"])
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
