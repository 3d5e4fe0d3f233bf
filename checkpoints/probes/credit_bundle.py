"""Grader probe for the credit notebooks (A and D): a bundle's own probabilities for given
applicants.

Run as ``python -I credit_bundle.py`` in a fresh sandbox over (a copy of) the run folder; it
answers the grader's requests as ``probe_protocol`` says, one payload each. It only observes, it never
judges (``checkpoints.colab_a`` / ``colab_d`` do). It checks the bundle's sha256, unpickles
the bundle (here, never in the grader) and answers its ``version``, ``feature_names`` and
``predict_proba(rows)[:, 1]``, or ``error``.

Payload: ``{"bundle": path, "manifest": path, "rows": [...]}`` (the sha256 is read from the
manifest, Colab A) or ``{"artifact": path, "sha256": hex, "rows": [...]}`` (the sha256 the
grader read from the registry, Colab D); paths are relative to the run folder.
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


def _inside(path: str) -> bool:
    return not os.path.isabs(path) and ".." not in path.replace("\\", "/").split("/")


def _expected_sha(payload: dict) -> tuple[str | None, str | None, str]:
    """(path of the bundle, the sha256 it must have, or an error)."""
    if "artifact" in payload:
        artifact = str(payload["artifact"])
        if not _inside(artifact) or not os.path.isfile(artifact):
            return None, None, f"{artifact} was not found in the registry folder"
        return artifact, str(payload["sha256"]), ""
    bundle_path, manifest_path = str(payload["bundle"]), str(payload["manifest"])
    for path in (bundle_path, manifest_path):
        if not _inside(path) or not os.path.isfile(path):
            return None, None, f"{path} was not found in the working directory"
    try:
        with open(manifest_path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except ValueError:
        return None, None, f"{manifest_path} is not valid JSON"
    if not isinstance(manifest, dict):
        return None, None, f"{manifest_path} is not a JSON object"
    return bundle_path, str(manifest.get("sha256")), ""


def observe(payload: dict) -> dict:
    path, expected, error = _expected_sha(payload)
    if error:
        return {"error": error}
    if sha256_of(path) != expected:
        return {"error": f"the sha256 of {path} does not match the one it was published with"}

    import joblib
    import numpy as np
    import pandas as pd

    bundle = joblib.load(path)
    if not isinstance(bundle, dict) or "pipeline" not in bundle or "feature_names" not in bundle:
        return {"error": "the bundle is not a dict with `pipeline` and `feature_names`"}
    names = [str(name) for name in bundle["feature_names"]]
    rows = payload["rows"]
    missing = sorted({name for name in names for row in rows if name not in row})
    if missing:
        return {"error": f"the bundle's feature_names include {missing}, which the applicants do not have",
                "feature_names": names}
    values = np.array([[float(row[name]) for name in names] for row in rows], dtype=float)
    pipeline = bundle["pipeline"]
    # A pipeline fitted on a DataFrame wants one back; one fitted on an array, an array.
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
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from probe_protocol import private_channels, serve

    serve(observe, *private_channels())  # an unloadable bundle is answered as {"error": ...}, not a crash


if __name__ == "__main__":
    main()
