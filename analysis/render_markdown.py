"""The report as Markdown (images linked by file name): readable in a terminal, a diff or MLflow's
artifact viewer, where the HTML is not."""

from __future__ import annotations

from analysis.document import Report, display


def render_markdown(report: Report) -> str:
    """Every section in order: its number and title, its question, its basis, then its blocks."""
    lines = [f"# {report.title}", ""]
    for number, section in enumerate(report.sections, 1):
        lines += [f"## {number}. {section.title}", "", f"*{section.question}*", ""]
        if section.basis:
            lines += [f"Basis: {section.basis}", ""]
        for block in section.blocks:
            if block.kind == "text":
                lines += [block.text, ""]
            elif block.kind == "note":
                lines += [f"> Note: {block.text}", ""]
            elif block.kind == "table":
                shown = display(block.frame)
                lines += [f"**{block.question}**", ""]
                lines += [shown.to_markdown(index=False, disable_numparse=True) if len(shown) else "(no rows)", ""]
                lines += [f"(table as CSV: `{block.csv}`)", ""]
            elif block.kind == "image":
                lines += [f"**{block.question}**", "", f"![{block.question}]({block.path.name})", ""]
    return "\n".join(lines)
