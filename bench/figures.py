"""The lesson figures each notebook leaves in its namespace, as expressions evaluated by a
final cell appended to the freshly executed notebook (see ``script.figures_cell_source``).

``REQUIRED_NAMES`` lists the notebook variables the expressions read; tests check that each
notebook still assigns them, so a rename in a notebook breaks a test, not the benchmark.
"""

from __future__ import annotations

FIGURES: dict[str, dict[str, str]] = {
    # A: per-request load vs load-once, and how the penalty grows with the artifact's size.
    "colab_a_fastapi": {
        "per_request_median_ms": "float(slow_median)",
        "load_once_median_ms": "float(fast_median)",
        "per_request_vs_load_once": "float(slow_median / fast_median)",
        "size_sweep": "[{'hidden_layers': r['hidden layers'], 'artifact_mib': float(r['artifact MiB']), "
                      "'per_request_median_ms': float(r['wrong-way median ms']), "
                      "'vs_load_once': float(r['x load-once median'])} for r in size_rows]",
    },
    # B: K-Means fits and rerun time of the scripted session, uncached vs cached.
    "colab_b_streamlit": {
        "reruns": "int(len(slow_run))",
        "fits_slow": "int(slow_run['fits'].sum())",
        "fits_cached": "int(fast_run['fits'].sum())",
        "loads_slow": "int(slow_run['loads'].sum())",
        "loads_cached": "int(fast_run['loads'].sum())",
        "rerun_median_ms_slow": "float(slow_run['ms'].median())",
        "rerun_median_ms_cached": "float(fast_run['ms'].median())",
        "rerun_ratio": "float(slow_run['ms'].median() / fast_run['ms'].median())",
        "session_s_slow": "float(slow_run['ms'].sum() / 1000)",
        "session_s_cached": "float(fast_run['ms'].sum() / 1000)",
    },
    # C: prompt tokens with every chunk vs the top 3, and how much of the prompt is relevant.
    "colab_c_rag": {
        "n_chunks": "int(len(chunks))",
        "context_limit": "int(context_limit)",
        "prompt_tokens_all_chunks": "float(_bench_stat.median(wrong_tokens))",
        "prompt_tokens_top3": "float(_bench_stat.median(fixed_tokens))",
        "token_ratio": "float(_bench_stat.median(wrong_tokens) / _bench_stat.median(fixed_tokens))",
        "relevant_fraction_all_chunks": "sum(c['topic'] == 'revenue' for c in chunks) / len(chunks)",
        "relevant_fraction_top3": "sum(c['topic'] == 'revenue' "
                                  "for c in top_k_chunks(revenue_question, chunks, chunk_embeddings, k=3)) / 3",
        "relevant_fraction_top10": "sum(c['topic'] == 'revenue' "
                                   "for c in top_k_chunks(revenue_question, chunks, chunk_embeddings, k=10)) / 10",
        "generator": "'extractive fallback' if generator is None "
                     "else f\"{generator.kind}: {generator.name.rstrip('/').rsplit('/', 1)[-1]}\"",
    },
    # D: the launch report's promise vs what happened, the campaign's drift, rebuild vs rollback.
    "colab_d_mlops": {
        "holdout_accuracy": "float(holdout_metrics['accuracy'])",
        "realised_accuracy_after_rule_change": "float(realised_accuracy)",
        "default_rate_observed_vs_promised": "float(observed_default_rate / promised_default_rate)",
        "psi_debt_ratio_campaign": "float(psi_by_window['weeks 12-13 (campaign)']['debt_ratio'])",
        "rebuild_vs_rollback": "float(rebuild_and_restart_ms / rollback_ms)",
    },
}

REQUIRED_NAMES: dict[str, list[str]] = {
    "colab_a_fastapi": ["slow_median", "fast_median", "size_rows"],
    "colab_b_streamlit": ["slow_run", "fast_run"],
    "colab_c_rag": ["chunks", "context_limit", "wrong_tokens", "fixed_tokens", "top_k_chunks",
                    "revenue_question", "chunk_embeddings", "generator"],
    # D: holdout vs realised, the campaign's PSI, rebuild vs rollback.
    "colab_d_mlops": ["holdout_metrics", "realised_accuracy", "promised_default_rate", "observed_default_rate",
                      "psi_by_window", "rebuild_and_restart_ms", "rollback_ms"],
}


def expressions_for(name: str) -> dict[str, str]:
    return FIGURES.get(name, {})


def numeric(value) -> float | None:
    """A figure as a number, or None when it is missing or recorded an error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)

# The tiny stand-in notebook of `--quick` (bench/mini.py).
FIGURES["bench_mini"] = {
    "n_fits": "int(n_fits)",
    "refit_vs_reuse": "float(slow_ms / max(fast_ms, 1e-6))",
}
REQUIRED_NAMES["bench_mini"] = ["n_fits", "slow_ms", "fast_ms"]
