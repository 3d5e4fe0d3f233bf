"""Grader probe for Colab A: the bundle's own probabilities for given applicants.

Run as ``python -I colab_a_bundle.py`` in a fresh sandbox over (a copy of) the run folder:
one JSON object on stdin, one JSON object as the last stdout line. It only observes, it
never judges (``checkpoints.colab_a`` does). It checks that the bundle's sha256 matches
the manifest, unpickles the bundle (here, never in the grader) and answers the bundle's
``version``, ``feature_names`` and ``predict_proba(rows)[:, 1]``, or ``error``.

Payload: ``{"bundle": "credit_model.joblib", "manifest": "credit_model.json", "rows": [{feature: number}]}``.
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
    bundle_path, manifest_path = payload["bundle"], payload["manifest"]
    for path in (bundle_path, manifest_path):
        if not os.path.isfile(path):
            return {"error": f"{path} was not found in the working directory"}
    try:
        with open(manifest_path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except ValueError:
        return {"error": f"{manifest_path} is not valid JSON"}
    if not isinstance(manifest, dict) or manifest.get("sha256") != sha256_of(bundle_path):
        return {"error": f"the sha256 of {bundle_path} does not match the one in {manifest_path}"}

    import joblib
    import pandas as pd

    bundle = joblib.load(bundle_path)
    if not isinstance(bundle, dict) or "pipeline" not in bundle or "feature_names" not in bundle:
        return {"error": "the bundle is not a dict with `pipeline` and `feature_names`"}
    names = [str(name) for name in bundle["feature_names"]]
    rows = payload["rows"]
    missing = sorted({name for name in names for row in rows if name not in row})
    if missing:
        return {"error": f"the bundle's feature_names include {missing}, which the applicants do not have",
                "feature_names": names}
    frame = pd.DataFrame([[row[name] for name in names] for row in rows], columns=names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probabilities = bundle["pipeline"].predict_proba(frame)[:, 1]
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
