"""RESULTS/summary.html: the class at a glance for the instructor: score distribution per
notebook, pass rate per checkpoint with its most common failures and how many predictions
were right, time per notebook and per student, statuses and flags; RESULTS/analytics.csv
holds the same numbers. One self-contained page, no scripts:
everything a submission controls (folder name, message, flags) is escaped and length-capped,
and a Content-Security-Policy forbids scripts and network requests should anything slip."""

from __future__ import annotations

import csv
import re
from collections import Counter, defaultdict
from pathlib import Path

from autograde.safe_output import csv_cell, quote_student_text
from autograde.worker import NotebookResult

CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
MAX_FLAGS_SHOWN = 12

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #1f2328; max-width: 70rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; }
th, td { padding: .3rem .7rem; border-bottom: 1px solid #d0d7de; text-align: left; vertical-align: middle; }
th { background: #f6f8fa; }
.bar { display: inline-block; height: .9rem; background: #2da44e; vertical-align: middle; }
.bar.fail { background: #cf222e; }
.hist { display: flex; align-items: flex-end; gap: 3px; height: 90px; margin: .5rem 0 .2rem; }
.hist div { background: #0969da; width: 26px; position: relative; }
.hist span { position: absolute; top: -1.1rem; width: 100%; text-align: center; font-size: .75rem; }
.axis { display: flex; gap: 3px; font-size: .75rem; color: #57606a; }
.axis div { width: 26px; text-align: center; }
.status-graded { color: #1a7f37; } .status-missing { color: #57606a; }
.status-unreadable, .status-crashed { color: #cf222e; } .status-timeout { color: #9a6700; }
.flag { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 3px; padding: 0 .3rem; font-size: .8rem; }
"""


def _histogram(scores: list[float], max_score: float) -> str:
    buckets = Counter(round(s) for s in scores)
    top = max(buckets.values(), default=1)
    points = range(0, int(round(max_score)) + 1)
    bars = "".join(
        f'<div style="height:{max(2, 80 * buckets.get(p, 0) / top):.0f}px"><span>{buckets.get(p, 0) or ""}</span></div>'
        for p in points
    )
    axis = "".join(f"<div>{p}</div>" for p in points)
    return f'<div class="hist">{bars}</div><div class="axis">{axis}</div>'


def render(results: list[NotebookResult]) -> str:
    by_notebook: dict[str, list[NotebookResult]] = defaultdict(list)
    for r in results:
        by_notebook[r.notebook].append(r)
    students = sorted({r.student for r in results})
    parts = [f"<!doctype html><meta charset='utf-8'>"
             f"<meta http-equiv='Content-Security-Policy' content=\"{CONTENT_SECURITY_POLICY}\">"
             f"<meta name='referrer' content='no-referrer'><title>Grading summary</title><style>{STYLE}</style>",
             "<h1>Grading summary</h1>",
             f"<p>{len(students)} student(s), {len(results)} notebook submission(s). "
             + ", ".join(f"{n} {quote_student_text(s, 40)}" for s, n in sorted(Counter(r.status for r in results).items()))
             + "</p>"]
    for notebook, rows in sorted(by_notebook.items()):
        handed_in = [r for r in rows if r.status != "missing"]
        max_score = rows[0].max_score
        parts.append(f"<h2>{quote_student_text(notebook, 120)}</h2>")
        parts.append(f"<p>Score distribution of the {len(handed_in)} handed-in notebook(s) (out of {max_score:g}):</p>")
        parts.append(_histogram([r.score for r in handed_in], max_score))
        durations = sorted(r.duration_s for r in handed_in if r.duration_s)
        if durations:
            parts.append(f"<p>Time per notebook: median {durations[len(durations) // 2]:.0f} s, "
                         f"longest {durations[-1]:.0f} s.</p>")
        parts.append("<table><tr><th>checkpoint</th><th>points</th><th>code passed</th><th></th>"
                     "<th>predictions right</th><th>most common failures</th></tr>")
        for stats in checkpoint_stats(handed_in):
            share = stats["pass_rate"] or 0.0
            failures = "<br>".join(f"{n}× {quote_student_text(m, 140)}" for m, n in stats["failures"])
            predictions = (f"{stats['predictions_right']} / {stats['handed_in']}" if stats["prediction_max"] else "–")
            parts.append(
                f"<tr><td><code>{quote_student_text(stats['checkpoint'], 80)}</code></td><td>{stats['points']:g}</td>"
                f"<td>{stats['passed']} / {stats['handed_in']}</td>"
                f"<td><span class='bar' style='width:{160 * share:.0f}px'></span>"
                f"<span class='bar fail' style='width:{160 * (1 - share) if stats['handed_in'] else 0:.0f}px'>"
                f"</span></td><td>{predictions}</td><td>{failures}</td></tr>"
            )
        parts.append("</table>")
    parts.append("<h2>Students</h2><table><tr><th>student</th><th>notebook</th><th>score</th><th>status</th>"
                 "<th>time</th><th>flags</th><th>message</th></tr>")
    for r in sorted(results, key=lambda r: (r.student, r.notebook)):
        flags = " ".join(f"<span class='flag'>{quote_student_text(f, 80)}</span>" for f in r.flags[:MAX_FLAGS_SHOWN])
        if len(r.flags) > MAX_FLAGS_SHOWN:
            flags += f" (+{len(r.flags) - MAX_FLAGS_SHOWN} more)"
        status = quote_student_text(r.status, 20)
        parts.append(
            f"<tr><td>{quote_student_text(r.student, 80)}</td><td>{quote_student_text(r.notebook, 80)}</td>"
            f"<td>{r.score:g} / {r.max_score:g}</td><td class='status-{_css_name(r.status)}'>{status}</td>"
            f"<td>{r.duration_s:.0f} s</td><td>{flags}</td><td>{quote_student_text(r.message, 160)}</td></tr>"
        )
    parts.append("</table>")
    return "\n".join(parts)


def checkpoint_stats(handed_in: list[NotebookResult], top: int = 3) -> list[dict]:
    """Per checkpoint of one notebook: how many students' code passed (the prediction apart),
    how many predictions were right, and the most common failure messages (the judge's words,
    so they group well)."""
    order = list(dict.fromkeys(c.grade_id for r in handed_in for c in r.checkpoints))
    stats = []
    for grade_id in order:
        outcomes = [c for r in handed_in for c in r.checkpoints if c.grade_id == grade_id]
        worked = [_code_passed(c) for c in outcomes]
        failures = Counter(_first_clause(c.message) for c, ok in zip(outcomes, worked) if not ok and c.message)
        stats.append({
            "checkpoint": grade_id,
            "points": outcomes[0].max_score if outcomes else 0.0,
            "handed_in": len(outcomes),
            "passed": sum(worked),
            "pass_rate": round(sum(worked) / len(outcomes), 3) if outcomes else None,
            "prediction_max": outcomes[0].prediction_max if outcomes else 0.0,
            "predictions_right": sum(c.prediction_score >= c.prediction_max > 0 for c in outcomes),
            "failures": failures.most_common(top),
        })
    return stats


def _code_passed(checkpoint) -> bool:
    """The student's code did what the checkpoint asks (its prediction is counted apart)."""
    if checkpoint.behaviour_max:
        return checkpoint.behaviour_score >= checkpoint.behaviour_max
    return checkpoint.passed


def _first_clause(message: str) -> str:
    """A failure message without its prediction part, so behaviour failures group together."""
    return message.split("; prediction:")[0].strip() or message.strip()


def write_analytics(out: Path, results: list[NotebookResult]) -> Path:
    """RESULTS/analytics.csv, the summary's numbers for the instructor's own analysis: one
    row per checkpoint (kind=checkpoint) and one per handed-in notebook (kind=submission)."""
    columns = ["kind", "notebook", "checkpoint", "student", "points", "handed_in", "passed", "pass_rate",
               "predictions_right", "top_failure", "top_failure_count", "score", "max_score", "status",
               "duration_s", "execution_s"]
    by_notebook: dict[str, list[NotebookResult]] = defaultdict(list)
    for r in results:
        if r.status != "missing":
            by_notebook[r.notebook].append(r)
    target = Path(out) / "analytics.csv"
    with open(target, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        for notebook, rows in sorted(by_notebook.items()):
            for stats in checkpoint_stats(rows, top=1):
                message, count = stats["failures"][0] if stats["failures"] else ("", 0)
                writer.writerow({"kind": "checkpoint", "notebook": notebook, "checkpoint": stats["checkpoint"],
                                 "points": f"{stats['points']:g}", "handed_in": stats["handed_in"],
                                 "passed": stats["passed"], "pass_rate": stats["pass_rate"],
                                 "predictions_right": stats["predictions_right"],
                                 "top_failure": csv_cell(message), "top_failure_count": count})
            for r in sorted(rows, key=lambda r: r.student):
                writer.writerow({"kind": "submission", "notebook": notebook, "student": csv_cell(r.student),
                                 "score": f"{r.score:g}", "max_score": f"{r.max_score:g}", "status": r.status,
                                 "duration_s": round(r.duration_s, 2), "execution_s": round(r.execution_s, 2)})
    return target


def _css_name(text: str) -> str:
    return re.sub(r"[^a-z0-9-]", "", str(text).lower())[:20]


def write_summary(out: Path, results: list[NotebookResult]) -> Path:
    target = Path(out) / "summary.html"
    target.write_text(render(results), encoding="utf-8")
    write_analytics(out, results)
    return target
