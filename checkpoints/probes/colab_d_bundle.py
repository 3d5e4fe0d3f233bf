"""Grader probe for Colab D: one registry bundle's own probabilities for given applicants.

Run as ``python -I colab_d_bundle.py`` in a fresh sandbox over (a copy of) the run folder:
one JSON object on stdin, one JSON object as the last stdout line. It only observes, it
never judges (``checkpoints.colab_d`` does). It checks that the artifact's sha256 is the one
the grader read from the registry, unpickles the bundle (here, never in the grader) and
answers its ``version``, ``feature_names`` and ``predict_proba(rows)[:, 1]``, or ``error``.

Payload: ``{"artifact": "registry/credit_model_v1_2025Q4.joblib", "sha256": "...",
"rows": [{feature: number}]}``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import warnings


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def observe(payload: dict) -> dict:
    artifact = str(payload["artifact"])
    if os.path.isabs(artifact) or ".." in artifact.split("/") or not os.path.isfile(artifact):
        return {"error": f"{artifact} was not found in the registry folder"}
    if sha256_of(artifact) != payload["sha256"]:
        return {"error": f"the sha256 of {artifact} does not match the registry's"}

    import joblib
    import numpy as np
    import pandas as pd

    bundle = joblib.load(artifact)
    if not isinstance(bundle, dict) or "pipeline" not in bundle or "feature_names" not in bundle:
        return {"error": "the bundle is not a dict with `pipeline` and `feature_names`"}
    names = [str(name) for name in bundle["feature_names"]]
    rows = payload["rows"]
    if any(name not in row for name in names for row in rows):
        return {"error": "the bundle's feature_names are not the five applicant fields", "feature_names": names}
    values = np.array([[float(row[name]) for name in names] for row in rows], dtype=float)
    pipeline = bundle["pipeline"]
    features = pd.DataFrame(values, columns=names) if hasattr(pipeline, "feature_names_in_") else values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probabilities = pipeline.predict_proba(features)[:, 1]
    return {
        "version": str(bundle.get("version")),
        "feature_names": names,
        "probabilities": [float(p) if math.isfinite(float(p)) else None for p in probabilities],
    }


def main() -> None:
    try:
        answer = observe(json.loads(sys.stdin.read()))
    except Exception as exc:  # an unloadable bundle is an observation, not a crash
        answer = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    print(json.dumps(answer))


if __name__ == "__main__":
    main()
