"""Feedback pages are rendered without nbconvert's BeautifulSoup pass (autograde/feedback.py):
the sanitised body must be the same page nbconvert's stock exporter gives, alt texts and
keyboard focus included, for markdown, code, text, HTML and image outputs."""

from __future__ import annotations

import base64
from html.parser import HTMLParser

from nbconvert import HTMLExporter
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from autograde import feedback

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32).decode()


class _Elements(HTMLParser):
    """Start tags with their attributes as sets, and the text: serialisation details aside."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.items: list = []

    def handle_starttag(self, tag, attrs):
        # BeautifulSoup re-joins class lists (a trailing space goes): compare them as sets
        attrs = [(k, " ".join(sorted((v or "").split())) if k == "class" else v) for k, v in attrs]
        self.items.append((tag, frozenset(attrs)))

    def handle_endtag(self, tag):
        self.items.append(("/" + tag,))

    def handle_data(self, data):
        if data.strip():
            self.items.append(data.strip())


def _elements(html: str) -> list:
    parser = _Elements()
    parser.feed(html)
    return parser.items


def _notebook():
    return new_notebook(cells=[
        new_markdown_cell("# Title\nSome *markdown* with `code` and a [link](https://example.org)."),
        new_code_cell("import numpy as np\nprint('hi')", outputs=[
            new_output("stream", name="stdout", text="hi\n"),
            new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"}),
            new_output("execute_result", data={"text/html": "<table><tr><td>1</td></tr></table>",
                                               "text/plain": "table"}, execution_count=1),
        ]),
    ], metadata={"language_info": {"name": "python", "pygments_lexer": "ipython3"}})


def test_the_page_body_is_the_stock_exporters_sanitised_body():
    nb = _notebook()
    stock, _ = HTMLExporter(template_name="lab", exclude_input_prompt=True,
                            exclude_output_prompt=True).from_notebook_node(nb)
    stock_body = feedback.sanitize_html(feedback._BODY.search(stock).group(2))
    ours = feedback.render_page(nb, "t")
    ours_body = feedback._BODY.search(ours).group(2)
    assert _elements(ours_body) == _elements(stock_body)
    assert f'alt="{feedback.NO_ALT_TEXT}"' in ours_body
    assert ours_body.count('tabindex="0"') == stock_body.count('tabindex="0"') >= 3
