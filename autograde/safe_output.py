"""Student data in the grader's own reports: CSV cells that a spreadsheet will not run as
formulas, and quoted text that a browser will not run as markup.

Anything a submission controls (its folder name, its outputs, the message of a failing check,
flags parsed from the kernel) goes through here before it lands in grades.csv, checkpoints.csv,
summary.html or a feedback page."""

from __future__ import annotations

import html
import re
import unicodedata

# OWASP "CSV injection": a cell starting with one of these may be run as a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
# Bidirectional overrides and isolates reorder what the reader sees ("Trojan Source").
_BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")


def csv_cell(value: object) -> str:
    """``value`` as a CSV cell that Excel, LibreOffice and Google Sheets show as text: a
    string starting with ``= + - @``, a tab or a carriage return gets a leading single quote,
    unless it is a plain number ("-1.5" stays a number)."""
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_PREFIXES) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def plain_student_text(text: object, limit: int = 240) -> str:
    """Student text for one line of a report: control and bidi characters removed, runs of
    whitespace (newlines included) made one space, at most ``limit`` characters."""
    text = "" if text is None else str(text)
    text = text[: 8 * limit + 64]  # enough to fill ``limit`` after whitespace is collapsed, mostly
    text = "".join(
        " " if ch.isspace() else ch
        for ch in text
        if ch.isspace() or (ch not in _BIDI_CONTROLS and unicodedata.category(ch) not in ("Cc", "Cs"))
    )
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


def quote_student_text(text: object, limit: int = 240) -> str:
    """``plain_student_text``, then HTML-escaped (quotes included): safe between tags and
    inside a quoted attribute. The limit counts characters before escaping."""
    return html.escape(plain_student_text(text, limit), quote=True)
