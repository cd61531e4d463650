"""The report as data: sections of blocks (text, notes, tables, images) written to one folder. The
renderers (``analysis.render_markdown``, ``analysis.render_html``) turn the same blocks into each
format, so the Markdown and the HTML cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

P_COLUMNS = {"p", "p_value", "p_holm", "Holm p", "bootstrap p", "boot_p"}


@dataclass
class Block:
    """One piece of a section: a paragraph, a note, a table (with the question it answers and its CSV
    file) or an image (with its question)."""

    kind: str  # text | table | image | note
    text: str = ""
    frame: pd.DataFrame | None = None
    path: Path | None = None
    question: str = ""
    csv: str = ""


@dataclass
class Section:
    """A numbered part of the report: the question it answers, what it is based on (``basis``: the
    confirmation runs, or the search's trials for an exploratory section), its blocks, and whether it
    could be computed (so the CLI can tell a complete report from a partial one)."""

    title: str
    question: str
    basis: str = ""
    blocks: list[Block] = field(default_factory=list)
    status: str = "ok"  # ok | not applicable | partial (some of it failed) | failed

    def text(self, text: str) -> None:
        """A paragraph of findings (Markdown: `code`, **bold**, *italic*)."""
        self.blocks.append(Block("text", text=text))

    def note(self, text: str) -> None:
        """A caveat set apart from the findings (what was left out, and why), so it is not missed."""
        self.blocks.append(Block("note", text=text))

    def skip(self, why: str) -> None:
        """The section does not apply to these trials; ``why`` says so in words."""
        self.status = "not applicable"
        self.note(why)


@dataclass
class Report:
    """The report being written: its sections, every file written to ``folder`` (all of them are
    logged to MLflow), and the problems caused by the user's input (the CLI's exit status 1)."""

    folder: Path
    title: str
    sections: list[Section] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    markdown_path: Path | None = None
    html_path: Path | None = None
    logged_to: list[str] = field(default_factory=list)

    def section(self, title: str, question: str, basis: str = "") -> Section:
        """A new section at the end; its number is its position."""
        section = Section(title, question, basis)
        self.sections.append(section)
        return section

    def table(self, section: Section, frame: pd.DataFrame, name: str, question: str,
              shown: pd.DataFrame | None = None) -> None:
        """The whole ``frame`` as ``<name>.csv``; ``shown`` (default the frame) in the document."""
        path = self.csv(frame, name)
        section.blocks.append(Block("table", frame=shown if shown is not None else frame, question=question,
                                    csv=path.name))

    def csv(self, frame: pd.DataFrame, name: str) -> Path:
        """A table written as CSV only (not shown in the document)."""
        path = self.folder / f"{name}.csv"
        frame.to_csv(path, index=False)
        self.files.append(path)
        return path

    def image(self, section: Section, path: Path, question: str) -> None:
        """A plot already saved as ``path``, shown in ``section`` under the question it answers."""
        self.files.append(path)
        section.blocks.append(Block("image", path=path, question=question))


class UserInputError(Exception):
    """A section could not be computed because of what the user asked for (bad formula, unknown
    comparison level): shown in the section and returned as a problem (exit status 1)."""


def display(frame: pd.DataFrame) -> pd.DataFrame:
    """Cells as text: p-values to 3 significant digits, other numbers to 4, missing as –."""
    out = pd.DataFrame(index=frame.index)
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_bool_dtype(values):
            out[column] = values.map({True: "yes", False: "no"})
        elif pd.api.types.is_integer_dtype(values):
            out[column] = values.astype(str)
        elif pd.api.types.is_float_dtype(values):
            fmt = "{:.3g}" if column in P_COLUMNS else "{:.4g}"
            out[column] = values.map(lambda v, f=fmt: "–" if pd.isna(v) else f.format(v))
            if column in P_COLUMNS:  # a p-value below double precision underflows to 0
                out.loc[values == 0, column] = "<1e-300"
        else:
            out[column] = values.map(lambda v: "–" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    return out
