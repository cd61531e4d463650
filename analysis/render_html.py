"""The report as one self-contained HTML file (plots embedded as base64), so it can be mailed or opened
from MLflow without the folder next to it."""

from __future__ import annotations

import base64
import html
import re

from analysis.document import Report, display

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.85em}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left}th{background:#f3f3f3}
.q{font-weight:600;margin-top:1.2em}.question{font-style:italic;color:#444}.basis{color:#555}
.note{border-left:4px solid #d9a300;background:#fff8e1;padding:.4em .8em;margin:.6em 0}img{max-width:100%}
code{background:#f4f4f4;padding:0 3px}.csv{color:#777;font-size:.8em}"""


def inline_html(text: str) -> str:
    """The Markdown this report writes (`code`, **bold**, *italic*) as HTML; code is left verbatim."""
    parts = []
    for i, part in enumerate(str(text).split("`")):
        if i % 2:  # inside backticks (a formula may hold * and **)
            parts.append(f"<code>{html.escape(part)}</code>")
            continue
        part = html.escape(part)
        part = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", part)
        part = re.sub(r"(?<![\w*])\*([^*]+)\*(?![\w*])", r"<i>\1</i>", part)
        parts.append(part)
    return "".join(parts).replace("\n", "<br>\n")


def render_html(report: Report) -> str:
    """Every section in order, as the Markdown twin has them, with the images inlined."""
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(report.title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(report.title)}</h1>",
    ]
    for number, section in enumerate(report.sections, 1):
        parts.append(f"<h2>{number}. {html.escape(section.title)}</h2>")
        parts.append(f"<p class='question'>{inline_html(section.question)}</p>")
        if section.basis:
            parts.append(f"<p class='basis'>Basis: {inline_html(section.basis)}</p>")
        for block in section.blocks:
            if block.kind == "text":
                parts.append(f"<p>{inline_html(block.text)}</p>")
            elif block.kind == "note":
                parts.append(f"<div class='note'>Note: {inline_html(block.text)}</div>")
            elif block.kind == "table":
                shown = display(block.frame)
                parts.append(f"<p class='q'>{inline_html(block.question)}</p><table><tr>")
                parts.append("".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns) + "</tr>")
                for _, row in shown.iterrows():
                    parts.append("<tr>" + "".join(f"<td>{inline_html(v)}</td>" for v in row) + "</tr>")
                parts.append(f"</table><p class='csv'>table as CSV: {html.escape(block.csv)}</p>")
            elif block.kind == "image":
                data = base64.b64encode(block.path.read_bytes()).decode("ascii")
                parts.append(
                    f"<p class='q'>{inline_html(block.question)}</p>"
                    f"<img alt='{html.escape(block.question)}' src='data:image/png;base64,{data}'>"
                )
    parts.append("</body></html>")
    return "\n".join(parts)
