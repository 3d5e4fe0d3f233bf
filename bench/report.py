"""Medians, the one results table, and the JSON file."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.figures import numeric

GOALS = {
    "ratio": 1.3,  # headless / bare, each notebook
    "headless_s": {"colab_a_fastapi": 20.0, "colab_b_streamlit": 20.0, "colab_c_rag": 60.0},
    "vs_nbgrader_parallel": 1.8,  # submissions/minute, autograde with all workers / nbgrader
    "overhead_s": 1.0,  # per submission, beyond execution
}


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}x" if value < 3 else f"{value:.1f}x"


def fmt_s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s" if value >= 10 else f"{value:.2f} s"


def median_or_none(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def median_figures(runs: list[dict]) -> dict:
    """Per key, the median over repeats of a number; lists of dicts are combined element by
    element; anything else (a label, an error) is taken from the first run that has it."""
    runs = [r for r in runs if r]
    if not runs:
        return {}
    merged = {}
    for key in dict.fromkeys(k for r in runs for k in r):
        values = [r[key] for r in runs if key in r]
        numbers = [numeric(v) for v in values]
        if all(n is not None for n in numbers):
            merged[key] = statistics.median(numbers)
        elif all(isinstance(v, list) and v and all(isinstance(x, dict) for x in v) for v in values) \
                and len({len(v) for v in values}) == 1:
            merged[key] = [median_figures([v[i] for v in values]) for i in range(len(values[0]))]
        else:
            good = [v for v in values if not (isinstance(v, dict) and "error" in v)]
            merged[key] = good[0] if good else values[0]
    return merged


def _goal_cell(ok: bool | None, text: str) -> str:
    if ok is None:
        return text
    return f"[green]{text} ✓[/green]" if ok else f"[red]{text} ✗[/red]"


def build_table(results: dict) -> Table:
    table = Table(title=f"Benchmarks {results['date']}{' (quick)' if results['quick'] else ''}: "
                        f"{results['machine']['cpus']} cores, load {results['machine']['load_at_start']}",
                  show_lines=False)
    for column in ("section", "measure", "value", "goal"):
        table.add_column(column, overflow="fold")
    named = set()

    def add_row(section: str, *cells: str) -> None:
        # Name each section once: rows that leave it blank belong to the section above.
        shown = section if section and section not in named else ""
        named.add(section)
        table.add_row(shown, *cells)

    for name, nb in (results.get("notebooks") or {}).items():
        goal_s = GOALS["headless_s"].get(name)
        headless = nb["headless_s"]
        add_row("1 notebooks", f"{name}: headless (runner)", fmt_s(headless),
                      _goal_cell(None if goal_s is None or headless is None else headless < goal_s,
                                 f"< {goal_s:.0f} s") if goal_s else "")
        add_row("", f"{name}: bare script", fmt_s(nb["bare_s"]), "")
        runs = len(nb.get("runs", []))
        add_row("", f"{name}: headless / bare (median of {runs} run{'s' if runs != 1 else ''})", fmt_ratio(nb["ratio"]),
                      _goal_cell(None if nb["ratio"] is None else nb["ratio"] <= GOALS["ratio"],
                                 f"<= {GOALS['ratio']}x"))
        if nb.get("problems"):
            add_row("", f"{name}: problems", "[red]" + "; ".join(nb["problems"])[:200] + "[/red]", "")

    grading = results.get("grading")
    if grading:
        n, workers = grading["n"], grading["workers"]
        for key, label in (("autograde_w1", "autograde grade, 1 worker"),
                           (f"autograde_w{workers}", f"autograde grade, {workers} workers"),
                           ("nbgrader", "nbgrader autograde (CLI)")):
            batch = grading.get(key)
            if batch:
                marks = f", {batch['full_marks']}/{n} full marks"
                add_row("2 grading", f"{label}: {n} × {grading['notebook']}",
                              f"{batch['per_minute']:.1f} /min ({batch['wall_s']:.0f} s{marks})", "")
        add_row("", "1 worker vs nbgrader", fmt_ratio(grading.get("ratio_w1_vs_nbgrader")), "")
        ratio = grading.get("ratio_parallel_vs_nbgrader")
        add_row("", f"{workers} workers vs nbgrader", fmt_ratio(ratio),
                      _goal_cell(None if ratio is None else ratio >= GOALS["vs_nbgrader_parallel"],
                                 f">= {GOALS['vs_nbgrader_parallel']}x"))
        over = grading.get("overhead_in_worker_s")
        add_row("", "overhead / submission beyond execution (in worker, median)", fmt_s(over),
                      _goal_cell(None if over is None else over < GOALS["overhead_s"], f"< {GOALS['overhead_s']:.0f} s"))
        add_row("", "overhead / submission, all in (1 worker: wall - Σ execution)",
                      fmt_s(grading.get("overhead_batch_s")), "")

    scaling = results.get("scaling")
    if scaling:
        for point in scaling["points"]:
            add_row("3 scaling", f"{point['n']} submissions, {scaling['workers']} workers",
                          f"{point['wall_s']:.1f} s = {point['s_per_submission']:.2f} s/submission", "")
        fit = scaling.get("fit")
        if fit:
            add_row("", "linear fit: wall = a + b·n",
                          f"a = {fit['intercept_s']:.1f} s, b = {fit['slope_s_per_submission']:.2f} s, "
                          f"R² = {fit['r2']:.3f}", "linear")

    classscale = results.get("classscale")
    if classscale:
        from bench.classscale import table_rows

        for measure, value, goal in table_rows(classscale):
            add_row("3b class scale", measure, value, goal)

    for name, figures in (results.get("figures") or {}).items():
        for key, text in _figure_rows(name, figures):
            add_row("4 lesson", f"{name}: {key}", text, "")
    return table


def _figure_rows(name: str, f: dict) -> list[tuple[str, str]]:
    def num(key, fmt="{:.1f}"):
        value = numeric(f.get(key))
        return "n/a" if value is None else fmt.format(value)

    rows = []
    if name == "colab_a_fastapi":
        rows.append(("per-request load vs load once (median latency)",
                     f"{num('per_request_median_ms', '{:.2f}')} ms vs {num('load_once_median_ms', '{:.2f}')} ms = "
                     f"{fmt_ratio(numeric(f.get('per_request_vs_load_once')))}"))
        sweep = f.get("size_sweep") if isinstance(f.get("size_sweep"), list) else []
        if sweep:
            rows.append(("penalty vs artifact size", ", ".join(
                f"{numeric(p.get('artifact_mib')) or 0:.2f} MiB {fmt_ratio(numeric(p.get('vs_load_once')))}"
                for p in sweep)))
    elif name == "colab_b_streamlit":
        rows.append(("K-Means fits per session, slow vs cached",
                     f"{num('fits_slow', '{:.0f}')} vs {num('fits_cached', '{:.0f}')} ({num('reruns', '{:.0f}')} reruns)"))
        rows.append(("median rerun, slow vs cached",
                     f"{num('rerun_median_ms_slow', '{:.0f}')} ms vs {num('rerun_median_ms_cached', '{:.0f}')} ms = "
                     f"{fmt_ratio(numeric(f.get('rerun_ratio')))}"))
    elif name == "colab_c_rag":
        rows.append(("prompt tokens, all chunks vs top-3 (median of questions)",
                     f"{num('prompt_tokens_all_chunks', '{:.0f}')} vs {num('prompt_tokens_top3', '{:.0f}')} = "
                     f"{fmt_ratio(numeric(f.get('token_ratio')))} (window {num('context_limit', '{:.0f}')})"))
        rows.append(("relevant fraction: all chunks / top-10 / top-3",
                     f"{num('relevant_fraction_all_chunks', '{:.0%}')} / {num('relevant_fraction_top10', '{:.0%}')} / "
                     f"{num('relevant_fraction_top3', '{:.0%}')}"))
        rows.append(("generator", str(f.get("generator"))))
    elif name == "colab_d_mlops":
        rows.append(("accuracy: holdout promise vs realised after the rule change",
                     f"{num('holdout_accuracy', '{:.3f}')} vs {num('realised_accuracy_after_rule_change', '{:.3f}')}"))
        rows.append(("defaults among approved, observed / promised",
                     fmt_ratio(numeric(f.get('default_rate_observed_vs_promised')))))
        rows.append(("PSI of debt_ratio in the campaign weeks", num("psi_debt_ratio_campaign", "{:.2f}")))
        rows.append(("rebuild + restart vs one-call rollback", fmt_ratio(numeric(f.get("rebuild_vs_rollback")))))
    else:
        for key, value in f.items():
            number = numeric(value)
            rows.append((key, f"{number:.3g}" if number is not None else str(value)))
    errors = [k for k, v in f.items() if isinstance(v, dict) and "error" in v]
    if errors:
        rows.append(("figures not found", ", ".join(f"{k} ({f[k]['error'][:60]})" for k in errors)))
    return rows


def print_table(results: dict, console: Console | None = None) -> None:
    console = console or Console()
    if not console.is_terminal:  # a log file or a pipe: wide enough for one line per row
        console = Console(file=console.file, width=130)
    console.print(build_table(results))


def write_json(results: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
