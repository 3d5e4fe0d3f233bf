"""Fresh-process probe for the Colab A verifiers (run as ``python -m checkpoints.colab_a_probe``).

It reads one JSON object on stdin and prints one JSON object as its last stdout line. It only
observes: it is the HTTP client of a server the verifier started, and it can load the model
bundle from disk by itself. It never judges; ``checkpoints.colab_a`` does.

Payload keys (all optional):
- ``base_url`` and ``requests``: a list of ``{"method", "path", "body", "content_type"}``;
  ``body`` is sent as raw text, so JSON literals such as ``NaN`` or ``1e309`` reach the
  server unchanged. Answer: ``responses``, a list of ``{"status", "body"}`` (``status`` is
  ``null`` and ``error`` is set when the request itself failed).
- ``bundle_path``, ``manifest_path`` and ``rows``: verify the bundle's sha256 against the
  manifest, load it, and answer ``bundle`` with ``version``, ``feature_names`` and
  ``probabilities`` (``predict_proba(rows)[:, 1]``), or ``bundle_error``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import sys
import urllib.parse
import warnings

MAX_BODY_CHARS = 4000


def _send(base_url: str, spec: dict, timeout: float) -> dict:
    parts = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        body = spec.get("body")
        headers = {}
        if body is not None:
            headers["Content-Type"] = spec.get("content_type", "application/json")
        conn.request(
            spec.get("method", "POST"),
            spec.get("path", "/predict"),
            body=None if body is None else body.encode("utf-8"),
            headers=headers,
        )
        response = conn.getresponse()
        text = response.read().decode("utf-8", errors="replace")
        return {"status": response.status, "body": text[:MAX_BODY_CHARS]}
    except Exception as exc:  # a refused connection, a timeout, a reset: report, don't crash
        return {"status": None, "body": "", "error": f"{type(exc).__name__}: {exc}"}
    finally:
        conn.close()


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _bundle_report(payload: dict) -> dict:
    try:
        with open(payload["manifest_path"], encoding="utf-8") as handle:
            manifest = json.load(handle)
        actual = _sha256(payload["bundle_path"])
        if actual != manifest.get("sha256"):
            return {"bundle_error": "the sha256 of credit_model.joblib does not match credit_model.json"}
        import joblib
        import pandas as pd

        bundle = joblib.load(payload["bundle_path"])
        names = list(bundle["feature_names"])
        frame = pd.DataFrame([[row[name] for name in names] for row in payload["rows"]], columns=names)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probabilities = bundle["pipeline"].predict_proba(frame)[:, 1]
        return {
            "bundle": {
                "version": str(bundle.get("version")),
                "feature_names": names,
                "probabilities": [float(p) for p in probabilities],
            }
        }
    except Exception as exc:
        return {"bundle_error": f"{type(exc).__name__}: {exc}"}


def main() -> None:
    payload = json.loads(sys.stdin.read())
    answer: dict = {}
    if payload.get("requests"):
        timeout = float(payload.get("timeout", 10.0))
        answer["responses"] = [_send(payload["base_url"], spec, timeout) for spec in payload["requests"]]
    if payload.get("bundle_path"):
        answer.update(_bundle_report(payload))
    print(json.dumps(answer))


if __name__ == "__main__":
    main()
