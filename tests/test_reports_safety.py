"""The grader's reports are safe to open: a feedback page or the class summary holds nothing
a browser would run, whatever the submission wrote, and CSV cells are never formulas."""

from __future__ import annotations

import base64
import csv
import io
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from autograde.assignment import CellSpec, NotebookSpec
from autograde.feedback import MAX_PAGE_BYTES, write_feedback
from autograde.safe_output import csv_cell, plain_student_text, quote_student_text
from autograde.summary import render
from autograde.worker import CheckpointResult, NotebookResult

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32).decode()
EVIL_SVG = ('<svg xmlns="http://www.w3.org/2000/svg" onload="alert(\'svg\')"><script>alert("svg2")</script>'
            '<circle r="4"/></svg>')
XSS_HTML = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">click</a>',
    '<a href="  JaVaScRiPt:alert(1)">spaced</a>',
    '<a href="vbscript:msgbox(1)">vb</a>',
    '<a href="data:text/html,&lt;script&gt;alert(1)&lt;/script&gt;">data</a>',
    '<iframe src="https://example.invalid/"></iframe>',
    '<object data="x.swf"></object><embed src="x.swf">',
    '<form action="https://example.invalid/"><input name="q"><button>go</button></form>',
    '<meta http-equiv="refresh" content="0;url=https://example.invalid/">',
    '<base href="https://example.invalid/">',
    '<link rel="stylesheet" href="https://example.invalid/x.css">',
    EVIL_SVG,
    '<div style="position:fixed;top:0;left:0">Score: 100 / 100</div>',
    '<body onload="alert(1)"><p onmouseover="alert(1)">hover</p></body>',
    "</div></div></main><script>alert('breakout')</script>",
]
XSS_MARKDOWN = "# My answer\n\n" + "\n\n".join(XSS_HTML) + "\n\n[md link](javascript:alert(2))\n\n![img](javascript:alert(3))"


class _Page(HTMLParser):
    """Every tag and attribute of a page, for asserting what a browser would execute."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.in_body = False
        self.body_styles = 0

    def handle_starttag(self, tag, attrs):
        self.in_body = self.in_body or tag == "body"
        self.body_styles += self.in_body and tag == "style"
        self.tags.append((tag, {k.lower(): (v or "") for k, v in attrs}))

    handle_startendtag = handle_starttag


EXECUTABLE_TAGS = {"script", "iframe", "frame", "frameset", "object", "embed", "form", "base", "link", "applet",
                   "svg", "math", "style"}


def assert_inert(page: str, *, style_attributes: bool = False) -> _Page:
    """No tag, attribute or URL a browser would run or fetch; the page's own CSS in <head> only."""
    parser = _Page()
    parser.feed(page)
    assert parser.body_styles == 0
    for tag, attrs in parser.tags:
        if tag == "style":
            continue  # checked above: only the template's, in <head>
        assert tag not in EXECUTABLE_TAGS, (tag, attrs)
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name, value)
            # no student CSS either (an overlay could fake a score); the summary's own bars use some
            assert name != "style" or style_attributes, (tag, name, value)
            squashed = "".join(value.split()).lower()
            assert not squashed.startswith(("javascript:", "vbscript:", "data:text")), (tag, name, value)
            if name in ("src", "href", "action", "formaction", "background", "poster"):
                assert squashed.startswith(("data:image/", "#", "http:", "https:", "mailto:")), (tag, name, value)
        if tag == "meta":
            assert attrs.get("http-equiv", "content-security-policy").lower() == "content-security-policy", attrs
    policies = [a["content"] for t, a in parser.tags if t == "meta" and a.get("http-equiv", "").lower()
                == "content-security-policy"]
    assert len(policies) == 1, policies
    assert "default-src 'none'" in policies[0] and "script-src" not in policies[0]
    head_tags = {"html", "head", "meta", "title", "style"}
    first_content = next((i for i, (t, _) in enumerate(parser.tags) if t not in head_tags), len(parser.tags))
    csp_at = next(i for i, (t, a) in enumerate(parser.tags) if t == "meta" and "http-equiv" in a)
    assert csp_at < first_content  # the policy comes before anything it must govern
    return parser


# --------------------------------------------------------------------------- feedback pages

def _spec() -> NotebookSpec:
    test = CellSpec(grade_id="test_x", cell_type="code", source="assert secret()", released_source="# hidden",
                    locked=True, graded=True, solution=False, points=1.0)
    return NotebookSpec(name="toy", source_path=Path("toy.ipynb"), release_path=Path("toy.ipynb"),
                        cells={"test_x": test})


def _result(student: str = "alice", message: str = "") -> NotebookResult:
    return NotebookResult(student=student, notebook="toy", status="graded", score=0.0, max_score=1.0,
                          message=message,
                          checkpoints=[CheckpointResult("test_x", 0.0, 1.0, "<script>alert('cp')</script>"
                                                        "](javascript:alert(1)) <img src=x onerror=alert(1)>")])


def _hostile_notebook() -> nbformat.NotebookNode:
    outputs = [new_output("display_data", data={"text/html": fragment, "text/plain": "x"}) for fragment in XSS_HTML]
    outputs += [
        new_output("display_data", data={"image/svg+xml": EVIL_SVG, "text/plain": "svg"}),
        new_output("display_data", data={"application/javascript": "alert('js')", "text/plain": "js"}),
        new_output("display_data", data={"application/javascript": "alert('js only')"}),
        new_output("display_data", data={"text/markdown": XSS_MARKDOWN}),
        new_output("display_data", data={"image/png": PNG, "text/plain": "figure"},
                   metadata={"image/png": {"width": "1 onerror=alert(1)", "height": "1\" onload=\"alert(1)"}}),
        new_output("execute_result", data={"text/html": "<script>alert('result')</script>"}, execution_count=1),
        new_output("stream", name="stdout", text="<script>alert('stream')</script>\n"),
        new_output("error", ename="<script>", evalue="<img src=x onerror=alert(1)>",
                   traceback=["\x1b[31m<script>alert('tb')</script>\x1b[0m"]),
        new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "x"}}),
    ]
    code = new_code_cell("print('hi')", outputs=outputs, execution_count=1)
    code.metadata["tags"] = ['x" onmouseover="alert(1)']
    graded = new_code_cell("# hidden", outputs=[], execution_count=2)
    graded.metadata["nbgrader"] = {"grade_id": "test_x", "grade": True, "locked": True, "solution": False,
                                   "points": 1, "schema_version": 3}
    markdown = new_markdown_cell(XSS_MARKDOWN + "\n\n![att](attachment:evil.svg)")
    markdown["attachments"] = {"evil.svg": {"image/svg+xml": base64.b64encode(EVIL_SVG.encode()).decode()}}
    nb = new_notebook(cells=[markdown, code, graded])
    nb.metadata["title"] = "</title><script>alert('title')</script>"
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {
        "state": {}, "version_major": 2, "version_minor": 0, "x": "</script><script>alert('widget')</script>"}}
    return nb


def test_feedback_page_renders_hostile_outputs_and_markdown_inert(tmp_path):
    student = "<img src=x onerror=alert('name')>"
    path = write_feedback(_hostile_notebook(), _spec(), _result(student, "<script>alert('msg')</script>"), tmp_path)
    assert path.parent.parent == tmp_path  # the student's name cannot move the page elsewhere
    page = path.read_text(encoding="utf-8")
    parser = assert_inert(page)
    # what is safe is still shown: text, the summary, the picture, the SVG as an image
    assert "My answer" in page and "hover" in page and "checkpoint test_x FAILED (0/1)" in page
    assert "Score: 0 / 1" in page
    images = [a.get("src", "") for t, a in parser.tags if t == "img"]
    assert any(src.startswith("data:image/png;base64,") for src in images)
    assert any(src.startswith("data:image/svg+xml;base64,") for src in images)
    assert "not shown" in page  # the JavaScript-only and widget outputs are replaced by a note
    assert "&lt;script&gt;alert(&#x27;stream&#x27;)" in page or "&lt;script&gt;alert('stream')" in page
    assert "secret()" not in page  # the hidden test source stays hidden


def test_feedback_page_is_bounded(tmp_path):
    flood = "".join(f"line {i} " + "x" * 90 + "\n" for i in range(10_000))  # about 1 MB per output
    cells = [new_code_cell(f"print({i})", execution_count=i + 1,
                           outputs=[new_output("stream", name="stdout", text=flood)]) for i in range(12)]
    path = write_feedback(new_notebook(cells=cells), _spec(), _result(), tmp_path)
    page = path.read_text(encoding="utf-8")
    assert len(page.encode("utf-8")) <= MAX_PAGE_BYTES
    assert "feedback page is limited to" in page
    assert_inert(page)


# --------------------------------------------------------------------------- summary page

def test_summary_page_escapes_hostile_names_messages_and_flags():
    hostile = NotebookResult(
        student="<script>alert('name')</script>", notebook="toy", status="unreadable", score=0, max_score=1,
        flags=["fake-module:<img src=x onerror=alert(1)>", "x' onmouseover='alert(1)"] + [f"f{i}" for i in range(40)],
        message="<a href='javascript:alert(1)'>click</a>" + "y" * 10_000,
        checkpoints=[CheckpointResult("test_x", 0, 1, "<script>")])
    honest = NotebookResult(student="bob", notebook="toy", status="graded", score=1, max_score=1,
                            checkpoints=[CheckpointResult("test_x", 1, 1, "")])
    page = render([hostile, honest])
    assert_inert(page, style_attributes=True)
    assert "&lt;script&gt;" in page and len(page) < 20_000  # shown as text, and capped


# --------------------------------------------------------------------------- CSV and text helpers

@pytest.mark.parametrize("value, expected", [
    ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
    ("+1+1", "'+1+1"),
    ("-2+3", "'-2+3"),
    ("@SUM(1)", "'@SUM(1)"),
    ("\t=1", "'\t=1"),
    ("\r=1", "'\r=1"),
    ("-1.5", "-1.5"),
    ("+3", "+3"),
    ("-2e3", "-2e3"),
    ("3", "3"),
    ("plain text", "plain text"),
    ("", ""),
    (None, ""),
    (-1.5, "-1.5"),
])
def test_csv_cell_neutralises_formulas_but_keeps_numbers(value, expected):
    assert csv_cell(value) == expected


def test_csv_cells_read_back_as_text():
    buffer = io.StringIO()
    csv.writer(buffer).writerow([csv_cell(v) for v in ("=HYPERLINK(\"http://x\")", "-1.5", "a,b\n=c")])
    row = next(csv.reader(io.StringIO(buffer.getvalue())))
    assert row == ["'=HYPERLINK(\"http://x\")", "-1.5", "a,b\n=c"]


def test_student_text_helpers():
    assert quote_student_text("<b>hi</b>\n\n there", 100) == "&lt;b&gt;hi&lt;/b&gt; there"
    assert plain_student_text("evil\u202egnp.exe") == "evilgnp.exe"  # no bidi reordering
    assert plain_student_text("a\x00b\x1b[31mc") == "ab[31mc"
    assert len(plain_student_text("x" * 1000, 50)) == 50
    assert quote_student_text("\"'", 10) == "&quot;&#x27;"


def test_a_real_browser_runs_nothing_and_fetches_nothing(tmp_path):
    """Belt and braces over the parser checks: Chromium opens the hostile page, hovers over it,
    and no dialog opens, no request leaves the page. Skipped without a browser (see
    test_browser.py for the setup)."""
    chromium = Path("/usr/bin/chromium")
    playwright = pytest.importorskip("playwright.sync_api")
    if not chromium.exists():
        pytest.skip("no /usr/bin/chromium")
    path = write_feedback(_hostile_notebook(), _spec(), _result("mallory", "<script>alert('msg')</script>"), tmp_path)
    dialogs, requests = [], []
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.on("request", lambda request: requests.append(request.url))
            page.goto(path.as_uri())
            for y in range(0, 2000, 100):
                page.mouse.move(200, y)
            page.wait_for_timeout(300)
            assert page.locator("text=checkpoint test_x FAILED").count() >= 1
        finally:
            browser.close()
    assert dialogs == []
    assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
