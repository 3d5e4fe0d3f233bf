"""Per-student feedback HTML: the executed notebook, with a summary on top and every test
cell showing pass/fail and its student-facing message, never the hidden test source or a
traceback from inside it.

The page is opened by the instructor, so everything the submission wrote in it is made inert:
outputs are kept only in safe forms (text, images, HTML run through the nh3 sanitiser, SVG
shown as an image), the rendered body is sanitised again as a whole (no scripts, event
handlers, script URLs, frames, forms, embedded objects, styles), and the page carries a
Content-Security-Policy that forbids scripts and every network request. nbconvert's own
scripts (MathJax, require.js) are left out: formulas show as their TeX source. The page is
bounded: outputs beyond the budget are replaced by a note."""

from __future__ import annotations

import base64
import functools
import html
import re
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import nbformat
import nh3
from nbconvert import HTMLExporter
from nbconvert.exporters.templateexporter import TemplateExporter
from nbconvert.filters.highlight import Highlight2HTML
from nbconvert.filters.widgetsdatatypefilter import WidgetsDataTypeFilter

from autograde.safe_output import plain_student_text

if TYPE_CHECKING:
    from autograde.assignment import NotebookSpec
    from autograde.worker import NotebookResult

CONTENT_SECURITY_POLICY = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src data:; "
                           "base-uri 'none'; form-action 'none'")
MAX_PAGE_BYTES = 8 * 1000 * 1000  # one feedback page
MAX_OUTPUT_CHARS = 1 * 1000 * 1000  # one output, as stored in the notebook
MAX_SOURCE_CHARS = 200 * 1000  # one cell's source
PAGE_OVERHEAD_CHARS = 600 * 1000  # the template's CSS and markup, kept out of the output budget

# Output types shown; everything else (application/javascript, widgets, PDF, ...) is replaced by a note.
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
TEXT_TYPES = ("text/plain", "text/html", "text/markdown", "text/latex")
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]*")
_DATA_IMAGE = re.compile(r"data:image/(?:png|jpeg|gif|webp|svg\+xml);base64,[A-Za-z0-9+/=\s]*", re.IGNORECASE)

_ALLOWED_TAGS = (set(nh3.ALLOWED_TAGS) | {"main", "section", "figure", "figcaption", "details", "summary"}) - {
    "area", "map"}
_ALLOWED_ATTRIBUTES = {
    "*": {"class", "id", "title", "lang", "dir", "tabindex", "align"},
    "a": {"href", "name"},
    "img": {"src", "alt", "width", "height"},
    "td": {"colspan", "rowspan"}, "th": {"colspan", "rowspan", "scope"},
    "ol": {"start", "type"}, "li": {"value"},
}
_URL_ATTRIBUTES = {"href", "src", "cite", "action", "formaction", "poster", "background", "longdesc", "usemap"}


def _attribute_filter(tag: str, attribute: str, value: str) -> str | None:
    """Images only from data: URIs of image types; links only to http(s), mailto or the page."""
    if attribute not in _URL_ATTRIBUTES:
        return value
    url = value.strip()
    if tag == "img" and attribute == "src":
        return url if _DATA_IMAGE.fullmatch(url) else None
    if attribute == "href" and (url.startswith("#") or re.match(r"(?i)(https?|mailto):", url)):
        return url
    return None


def sanitize_html(fragment: str) -> str:
    """Markup with nothing executable left: no scripts, styles, event handlers, script or
    data URLs (except data: images), frames, objects, forms, meta or base tags."""
    return nh3.clean(
        fragment,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        generic_attribute_prefixes={"data-"},
        url_schemes={"http", "https", "mailto", "data"},
        attribute_filter=_attribute_filter,
        strip_comments=True,
        link_rel="noopener noreferrer nofollow",
    )


class _FeedbackExporter(HTMLExporter):
    """nbconvert's HTML exporter minus its closing BeautifulSoup pass, which parsed and
    re-serialised the whole page (about half of a page's rendering) only to add image alt
    texts and tabindex attributes; ``render_page`` adds both to the sanitised body."""

    def from_notebook_node(self, nb, resources=None, **kw):
        language = nb.metadata.get("language_info", {})
        lexer = language.get("pygments_lexer", language.get("name"))
        self.register_filter("highlight_code", Highlight2HTML(pygments_lexer=lexer, parent=self))
        resources = self._init_resources(resources)
        self.register_filter("filter_data_type", WidgetsDataTypeFilter(
            notebook_metadata=self._nb_metadata, parent=self, resources=resources))
        return TemplateExporter.from_notebook_node(self, nb, resources, **kw)


_IMG_WITHOUT_ALT = re.compile(r"<img(?![^>]*\balt=)")
_DIV = re.compile(r"<div\b[^>]*>")
_FOCUSABLE_CLASS = re.compile(r'\bclass="[^"]*(?<![\w-])(?:jp-Cell-inputWrapper|jp-OutputArea-output)(?![\w-])')
NO_ALT_TEXT = "No description has been provided for this image"


def _accessible(body: str) -> str:
    """What nbconvert's own pass adds: alt text on images, keyboard focus on inputs and outputs."""
    body = _IMG_WITHOUT_ALT.sub(f'<img alt="{NO_ALT_TEXT}"', body)
    def focusable(tag: re.Match) -> str:
        text = tag.group(0)
        return '<div tabindex="0"' + text[4:] if _FOCUSABLE_CLASS.search(text) and "tabindex=" not in text else text

    return _DIV.sub(focusable, body)


@functools.lru_cache(maxsize=1)
def _exporter() -> HTMLExporter:
    exporter = _FeedbackExporter(template_name="lab")
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    # The template cleans each cell's HTML with bleach, which took about 40% of a page's
    # rendering; the same nh3 rules as the final pass over the whole body do it far faster.
    exporter.register_filter("clean_html", sanitize_html)
    return exporter


def feedback_notebook(executed: nbformat.NotebookNode, spec: NotebookSpec, result: NotebookResult):
    nb = nbformat.from_dict(executed)
    by_id = {c.grade_id: c for c in result.checkpoints}
    for cell in nb.cells:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        cell_spec = spec.cells.get(grade_id) if grade_id else None
        if cell_spec is None or not cell_spec.graded or cell_spec.solution or cell.cell_type != "code":
            continue
        checkpoint = by_id.get(grade_id)
        # What the student was given, not what the grader ran.
        cell.source = cell_spec.released_source
        verdict = "passed" if checkpoint and checkpoint.passed else "failed"
        if checkpoint and checkpoint.needs_manual_grade:
            verdict = "awaiting a person's grade"
        score = f"{checkpoint.score:g}/{checkpoint.max_score:g}" if checkpoint else "0"
        text = f"checkpoint {grade_id} {verdict.upper()} ({score})"
        if checkpoint and checkpoint.judged == "outside":
            text += f"\n{_split(checkpoint)}"
        if checkpoint and checkpoint.message:
            text += f"\n{checkpoint.message}"
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text + "\n")]
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(_summary_markdown(result)))
    return nb


def _md_text(text: object, limit: int = 240) -> str:
    """Student text for the summary markdown: escaped for HTML and stripped of markdown's
    link and emphasis syntax, so it stays plain text."""
    quoted = html.escape(plain_student_text(text, limit), quote=False)  # & < > only: no "&#" entities
    return re.sub(r"([\\`*_\[\]()|!#~{}+-])", r"\\\1", quoted)


def _summary_markdown(result: NotebookResult) -> str:
    lines = [
        f"# Feedback: {_md_text(result.notebook, 120)} ({_md_text(result.student, 120)})",
        "",
        f"**Score: {result.score:g} / {result.max_score:g}** &nbsp; status: `{plain_student_text(result.status, 20)}`",
    ]
    if result.message:
        lines += ["", f"> {_md_text(result.message, 600)}"]
    lines += ["", "| checkpoint | points | your code | your prediction | outcome |", "| --- | --- | --- | --- | --- |"]
    for cp in result.checkpoints:
        if cp.needs_manual_grade:
            outcome = "awaiting a person's grade"
        else:
            outcome = "passed" if cp.passed else _md_text(cp.message or "failed", 400)
        code = f"{cp.behaviour_score:g} / {cp.behaviour_max:g}"
        prediction = f"{cp.prediction_score:g} / {cp.prediction_max:g}" if cp.prediction_max else "–"
        lines.append(f"| {_md_text(cp.grade_id, 80)} | {cp.score:g} / {cp.max_score:g} | {code} | {prediction} "
                     f"| {outcome} |")
    return "\n".join(lines)


def _split(checkpoint) -> str:
    """Behaviour and prediction, scored apart: a wrong prediction never costs the code's points."""
    text = f"your code: {checkpoint.behaviour_score:g}/{checkpoint.behaviour_max:g}"
    if checkpoint.prediction_max:
        text += f", your prediction: {checkpoint.prediction_score:g}/{checkpoint.prediction_max:g}"
    return text


def _note(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_output("stream", name="stdout", text=f"[feedback: {text}]\n")


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _capped(text: str, limit: int = MAX_OUTPUT_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n[feedback: {len(text) - limit} more characters not shown]\n"


def _inert_output(output: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """One output in a form that cannot run anything in the browser."""
    kind = output.get("output_type")
    if kind == "stream":
        return nbformat.v4.new_output("stream", name=output.get("name") if output.get("name") in ("stdout", "stderr")
                                      else "stdout", text=_capped(_text(output.get("text", ""))))
    if kind == "error":
        traceback = [_capped(_text(line), 20_000) for line in list(output.get("traceback", []))[:200]]
        return nbformat.v4.new_output("error", ename=_capped(_text(output.get("ename", "")), 500),
                                      evalue=_capped(_text(output.get("evalue", "")), 20_000), traceback=traceback)
    if kind not in ("display_data", "execute_result"):
        return _note(f"an output of kind {plain_student_text(kind, 40)!r} is not shown")
    data = output.get("data", {}) or {}
    safe: dict[str, str] = {}
    for mime in IMAGE_TYPES:
        value = _text(data.get(mime, ""))
        if value and len(value) <= MAX_OUTPUT_CHARS and _BASE64.fullmatch(value):
            safe[mime] = value
            break
    svg = _text(data.get("image/svg+xml", ""))
    if svg and not safe and len(svg) <= MAX_OUTPUT_CHARS:
        # An SVG shown through <img> runs no script and loads nothing: keep the picture.
        encoded = base64.b64encode(svg.encode("utf-8")).decode("ascii")
        safe["text/html"] = f'<img alt="SVG output" src="data:image/svg+xml;base64,{encoded}">'
    if "text/html" in data and "text/html" not in safe:
        safe["text/html"] = sanitize_html(_capped(_text(data["text/html"])))
    if "text/markdown" in data:
        safe["text/markdown"] = _capped(_text(data["text/markdown"]))
    for mime in ("text/plain", "text/latex"):
        if mime in data:
            safe[mime] = _capped(_text(data[mime]))
    dropped = sorted(m for m in data if m not in safe and m != "image/svg+xml" and m not in IMAGE_TYPES)
    if not safe:
        return _note("output of type " + ", ".join(plain_student_text(m, 60) for m in dropped[:5]) + " not shown")
    if kind == "execute_result":
        count = output.get("execution_count")
        return nbformat.v4.new_output("execute_result", data=safe,
                                      execution_count=count if isinstance(count, int) else None)
    return nbformat.v4.new_output("display_data", data=safe)


def _output_size(output: nbformat.NotebookNode) -> int:
    if output.get("output_type") == "stream":
        return len(output.get("text", ""))
    if output.get("output_type") == "error":
        return len(output.get("evalue", "")) + sum(len(line) for line in output.get("traceback", []))
    return max((len(v) for v in output.get("data", {}).values()), default=0)


_ATTACHMENT_REF = re.compile(r"attachment:([^\s)\"'>]+)")


def _inert_markdown(cell: nbformat.NotebookNode, source: str, plain: bool) -> nbformat.NotebookNode:
    """A markdown cell with only image attachments kept; a reference to any other (or a
    missing) attachment, which would stop nbconvert, points nowhere instead. ``plain``: the
    source shown as text, not rendered."""
    if plain:
        return nbformat.v4.new_markdown_cell(textwrap.indent(source, "    ") or "    ")
    kept = {}
    for name, bundle in (cell.get("attachments") or {}).items():
        for mime in IMAGE_TYPES:
            value = _text((bundle or {}).get(mime, "")) if isinstance(bundle, dict) else ""
            if value and len(value) <= MAX_OUTPUT_CHARS and _BASE64.fullmatch(value):
                kept[str(name)] = {mime: value}
                break
    source = _ATTACHMENT_REF.sub(lambda m: m.group(0) if m.group(1) in kept else "#attachment-not-shown", source)
    clean = nbformat.v4.new_markdown_cell(source)
    if kept:
        clean["attachments"] = kept
    return clean


def inert_notebook(nb: nbformat.NotebookNode, budget: int = MAX_PAGE_BYTES - PAGE_OVERHEAD_CHARS,
                   keep_outputs: bool = True, plain_markdown: bool = False) -> nbformat.NotebookNode:
    """A copy of ``nb`` that renders to an inert page of bounded size: known-safe metadata,
    capped sources, safe outputs only, and outputs beyond ``budget`` replaced by a note."""
    clean = nbformat.v4.new_notebook()
    clean.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                      "language_info": {"name": "python"}}
    used = 0
    for cell in nb.cells:
        source = _capped(_text(cell.get("source", "")), MAX_SOURCE_CHARS)
        used += len(source)
        if cell.get("cell_type") == "markdown":
            clean.cells.append(_inert_markdown(cell, source, plain_markdown))
            continue
        if cell.get("cell_type") != "code":
            clean.cells.append(nbformat.v4.new_code_cell(source))  # raw cells shown as text
            continue
        outputs = []
        for output in cell.get("outputs", []):
            if not keep_outputs:
                outputs = [_note("outputs are not shown: the page would be too large")]
                break
            safe = _inert_output(output)
            size = _output_size(safe)
            if used + size > budget:
                outputs.append(_note("this output is not shown: the feedback page is limited to "
                                     f"{MAX_PAGE_BYTES / 1e6:g} MB"))
                continue
            used += size
            outputs.append(safe)
        count = cell.get("execution_count")
        clean.cells.append(nbformat.v4.new_code_cell(source, outputs=outputs,
                                                     execution_count=count if isinstance(count, int) else None))
    return clean


_BODY = re.compile(r"<body([^>]*)>(.*)</body>", re.DOTALL | re.IGNORECASE)
_STYLE = re.compile(r"<style[^>]*>.*?</style>", re.DOTALL | re.IGNORECASE)
_BODY_ATTRIBUTES = re.compile(r'\s+(class|data-jp-[a-z-]+)="([^"<>]*)"')


def render_page(nb: nbformat.NotebookNode, title: str) -> str:
    """The notebook as one self-contained HTML page: nbconvert's lab layout and CSS, the
    body sanitised as a whole, no script at all, and a Content-Security-Policy."""
    exporter_output, _ = _exporter().from_notebook_node(nb)
    head, _, _ = exporter_output.partition("<body")
    styles = "\n".join(_STYLE.findall(head))  # the template's own CSS; nothing of the student's is in <head>
    match = _BODY.search(exporter_output)
    body_attributes = "".join(f' {k}="{html.escape(v)}"' for k, v in _BODY_ATTRIBUTES.findall(match.group(1))) \
        if match else ""
    body = _accessible(sanitize_html(match.group(2) if match else ""))
    return (
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1.0">\n'
        f"<title>{html.escape(title)}</title>\n{styles}\n</head>\n<body{body_attributes}>\n{body}\n</body>\n</html>\n"
    )


def _minimal_page(text: str, title: str) -> str:
    """The last resort: the summary as escaped text, no nbconvert involved."""
    return (f'<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">\n'
            f"<title>{html.escape(title)}</title>\n</head>\n<body>\n<pre>{html.escape(text[:MAX_PAGE_BYTES // 8])}</pre>\n"
            "</body>\n</html>\n")


def write_feedback(executed, spec: NotebookSpec, result: NotebookResult, feedback_dir: Path) -> Path:
    target = Path(feedback_dir) / _safe(result.student) / f"{spec.name}.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    full = feedback_notebook(executed, spec, result)
    title = f"Feedback: {plain_student_text(spec.name, 80)} ({plain_student_text(result.student, 80)})"
    attempts = (
        lambda: inert_notebook(full),
        # Too large (many small outputs), or nbconvert choked on the student's markdown:
        lambda: inert_notebook(full, keep_outputs=False, plain_markdown=True),
        lambda: inert_notebook(nbformat.v4.new_notebook(cells=full.cells[:1])),  # the summary only
    )
    page = None
    for attempt in attempts:
        try:
            candidate = render_page(attempt(), title)
        except Exception:  # a page we cannot render must not cost the student their row
            continue
        if len(candidate.encode("utf-8")) <= MAX_PAGE_BYTES:
            page = candidate
            break
    if page is None:
        page = _minimal_page(full.cells[0].source, title)
    target.write_text(page, encoding="utf-8")
    return target


def _safe(name: str) -> str:
    """A file name for the student's folder: no separators, never '.', '..' or hidden."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:120] or "_"
    return "_" + safe if safe.startswith(".") else safe
